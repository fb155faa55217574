//! `muster completions` and `muster man`, as the Debian package generates them:
//! the bash script parses, the others name the commands, and the man pages have
//! the sections `man` shows and one page per subcommand.

use crate::binary::{muster, ok};

#[test]
fn completion_scripts_parse_and_know_the_commands() {
    let tmp = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let script = ok(muster(tmp.path())
            .args(["completions", shell])
            .output()
            .unwrap());
        for word in ["install-service", "enroll", "--config-dir"] {
            assert!(script.contains(word), "{shell}: no {word}");
        }
        if shell == "bash" {
            let file = tmp.path().join("muster.bash");
            std::fs::write(&file, &script).unwrap();
            let out = std::process::Command::new("bash")
                .arg("-n")
                .arg(&file)
                .output()
                .unwrap();
            assert!(out.status.success(), "bash -n: {out:?}");
        }
    }
    let out = muster(tmp.path())
        .args(["completions", "powershell"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn man_pages_have_name_synopsis_and_the_subcommands() {
    let tmp = tempfile::tempdir().unwrap();
    let page = ok(muster(tmp.path()).arg("man").output().unwrap());
    for section in [".SH NAME", ".SH SYNOPSIS", ".SH SUBCOMMANDS"] {
        assert!(page.contains(section), "no {section} in\n{page}");
    }
    for sub in ["hub", "enroll", "agent", "completions"] {
        assert!(page.contains(&format!("muster\\-{sub}(1)")), "no {sub}");
    }
    let dir = tmp.path().join("man1");
    let said = ok(muster(tmp.path())
        .args(["man", "--out-dir"])
        .arg(&dir)
        .output()
        .unwrap());
    assert!(said.contains("manual pages in"), "{said}");
    for file in ["muster.1", "muster-hub.1", "muster-agent-install-service.1"] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        assert!(
            text.contains(".SH NAME") && text.contains(".SH SYNOPSIS"),
            "{file}"
        );
    }
    let text = std::fs::read_to_string(dir.join("muster-agent-install-service.1")).unwrap();
    assert!(text.contains("\\-\\-root"), "{text}");
}
