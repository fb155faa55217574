//! The launchd daemon (macOS): a plist in /Library/LaunchDaemons that launchd
//! loads at boot. launchd restarts a job that exits non-zero (`KeepAlive` with
//! `SuccessfulExit` false), at most once per `ThrottleInterval`; it cannot be told
//! to spare one exit status, so a two-line sh wrapper turns the revoked status into
//! 0, which launchd leaves stopped.

use super::{ServiceSpec, xml_text};

pub const LABEL: &str = "dev.muster.agent";
pub const PATH: &str = "Library/LaunchDaemons/dev.muster.agent.plist";
/// launchd has no journal: the agent's log lines (stderr) go here.
const LOG: &str = "/var/log/muster-agent.log";

/// The wrapper's script for `/bin/sh -c`; `$0` is the binary, `$@` its arguments.
pub fn wrapper(never_on: i32) -> String {
    format!("\"$0\" \"$@\"; s=$?; if [ $s -eq {never_on} ]; then exit 0; fi; exit $s")
}

pub fn render(spec: &ServiceSpec, user: Option<&str>) -> String {
    let mut args = vec![
        "/bin/sh".to_owned(),
        "-c".to_owned(),
        wrapper(spec.restart.never_on),
        spec.binary.display().to_string(),
    ];
    args.extend(spec.args());
    let args: String = args
        .iter()
        .map(|a| format!("\t\t<string>{}</string>\n", xml_text(a)))
        .collect();
    let user = match user {
        Some(name) => format!(
            "\t<!-- The owner of the config dir; the agent needs no more than its files. -->\n\
             \t<key>UserName</key>\n\t<string>{}</string>\n",
            xml_text(name)
        ),
        None => String::new(),
    };
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n\
         <!-- {description},\n     \
         written by `muster agent install-service`; see {docs}.\n     \
         launchd restarts it after a non-zero exit, at most every {delay} s. The sh wrapper\n     \
         turns exit {never} (the hub revoked this agent) into 0, which launchd leaves\n     \
         stopped: restarting cannot help and must not hammer the hub. -->\n\
         <plist version=\"1.0\">\n\
         <dict>\n\
         \t<key>Label</key>\n\
         \t<string>{LABEL}</string>\n\
         \t<key>ProgramArguments</key>\n\
         \t<array>\n\
         {args}\
         \t</array>\n\
         \t<key>RunAtLoad</key>\n\
         \t<true/>\n\
         \t<key>KeepAlive</key>\n\
         \t<dict>\n\
         \t\t<key>SuccessfulExit</key>\n\
         \t\t<false/>\n\
         \t</dict>\n\
         \t<key>ThrottleInterval</key>\n\
         \t<integer>{delay}</integer>\n\
         {user}\
         \t<!-- 0077: the agent's files are its own. -->\n\
         \t<key>Umask</key>\n\
         \t<integer>63</integer>\n\
         \t<key>EnvironmentVariables</key>\n\
         \t<dict>\n\
         \t\t<key>MUSTER_LOG</key>\n\
         \t\t<string>info</string>\n\
         \t</dict>\n\
         \t<key>StandardOutPath</key>\n\
         \t<string>{LOG}</string>\n\
         \t<key>StandardErrorPath</key>\n\
         \t<string>{LOG}</string>\n\
         </dict>\n\
         </plist>\n",
        description = xml_text(spec.description),
        docs = xml_text(spec.docs_url),
        delay = spec.restart.delay_s,
        never = spec.restart.never_on,
    )
}
