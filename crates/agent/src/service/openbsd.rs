//! The OpenBSD rc.d script, for rcctl(8). OpenBSD's rc.subr does not supervise:
//! the agent is started in the background (`rc_bg`), its output goes to syslog
//! (`daemon_logger`), and it is not restarted after any exit — which also keeps a
//! revoked agent stopped. `rcctl set muster_agent flags …` still works.

use std::path::Path;

use super::{ServiceError, ServiceSpec, io, sh_quote};

pub const NAME: &str = "muster_agent";
pub const PATH: &str = "etc/rc.d/muster_agent";
const RC_CONF_LOCAL: &str = "etc/rc.conf.local";

/// rc.subr pastes `daemon` and `daemon_flags` into a command line that sh parses
/// again, so each value holds sh words, itself quoted for the assignment.
pub fn render(spec: &ServiceSpec, user: Option<&str>) -> String {
    let binary = spec.binary.display().to_string();
    let flags: Vec<String> = spec.args().iter().map(|a| sh_quote(a)).collect();
    // rcctl finds the process with `pgrep -xf`: the arguments as they are, unquoted,
    // as an extended regular expression.
    let mut pexp = vec![regex_escape(&binary)];
    pexp.extend(spec.args().iter().map(|a| regex_escape(a)));
    let user = match user {
        Some(name) => format!(
            "# The owner of the config dir; the agent needs no more than its files.\n\
             daemon_user={}\n",
            sh_quote(name)
        ),
        None => String::new(),
    };
    format!(
        "#!/bin/ksh\n\
         #\n\
         # {description},\n\
         # written by `muster agent install-service`; see {docs}.\n\
         # Enable and start with:\n\
         #     rcctl enable {NAME} && rcctl start {NAME}\n\
         \n\
         daemon={daemon}\n\
         daemon_flags={flags}\n\
         daemon_logger=daemon.info\n\
         {user}\
         \n\
         . /etc/rc.d/rc.subr\n\
         \n\
         pexp={pexp}\n\
         rc_bg=YES\n\
         rc_reload=NO\n\
         \n\
         rc_cmd \"$1\"\n",
        description = spec.description,
        docs = spec.docs_url,
        daemon = sh_quote(&sh_quote(&binary)),
        flags = sh_quote(&flags.join(" ")),
        pexp = sh_quote(&pexp.join(" ")),
    )
}

fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.^$|?*+()[]{}".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// What `rcctl enable` writes: the script in `pkg_scripts` of rc.conf.local.
pub fn enable_offline(root: &Path) -> Result<(), ServiceError> {
    let path = root.join(RC_CONF_LOCAL);
    let text = read_or_empty(&path)?;
    let line = format!("pkg_scripts=\"${{pkg_scripts}} {NAME}\"");
    if text.lines().any(|l| l == line) {
        return Ok(());
    }
    let dir = path.parent().unwrap_or(root);
    std::fs::create_dir_all(dir).map_err(|e| io("create", dir, e))?;
    let text = format!("{text}{line}\n");
    muster_files::write_atomic_path(&path, text.as_bytes(), muster_files::PUBLIC)
        .map_err(|e| io("write", &path, e))
}

pub fn disable_offline(root: &Path) -> Result<(), ServiceError> {
    let path = root.join(RC_CONF_LOCAL);
    let text = read_or_empty(&path)?;
    let line = format!("pkg_scripts=\"${{pkg_scripts}} {NAME}\"");
    if !text.lines().any(|l| l == line) {
        return Ok(());
    }
    let kept: String = text
        .lines()
        .filter(|l| *l != line)
        .map(|l| format!("{l}\n"))
        .collect();
    muster_files::write_atomic_path(&path, kept.as_bytes(), muster_files::PUBLIC)
        .map_err(|e| io("write", &path, e))
}

fn read_or_empty(path: &Path) -> Result<String, ServiceError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(io("read", path, e)),
    }
}
