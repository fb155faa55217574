//! FreeBSD and NetBSD rc.d scripts (rc.subr). Neither init restarts a service, and
//! FreeBSD's daemon(8) `-r` restarts after every exit alike, so both scripts run the
//! agent under the same small sh loop: restart after a failure, `delay_s` apart,
//! never after exit 0 (the agent was stopped) or the revoked status. On FreeBSD
//! daemon(8) runs that loop (detach, pid file, syslog, SIGTERM forwarded, user).

use std::path::Path;

use super::{Init, RestartPolicy, ServiceError, ServiceSpec, io, sh_quote};

/// rc.subr names become shell variables (`muster_agent_enable`): no `-`.
pub const NAME: &str = "muster_agent";
pub const FREEBSD_PATH: &str = "usr/local/etc/rc.d/muster_agent";
pub const NETBSD_PATH: &str = "etc/rc.d/muster_agent";
/// Both systems' rc.subr read `/etc/rc.conf.d/NAME` in `load_rc_config`: enabling
/// there needs neither sysrc nor an edit of rc.conf.
pub const RC_CONF_D: &str = "etc/rc.conf.d/muster_agent";

/// The supervising loop for `/bin/sh -c`: `$0` is the binary, `$@` its arguments.
/// A TERM (rc.subr's stop) is passed on to the agent, which is then waited for.
/// Like systemd's start limit, it gives up after `burst` failures within
/// `window_s` seconds, exiting with the last status.
pub fn supervisor(policy: &RestartPolicy) -> String {
    let RestartPolicy {
        delay_s,
        never_on,
        burst,
        window_s,
    } = policy;
    format!(
        "child=\n\
         failures=0\n\
         since=0\n\
         trap \"kill -TERM \\$child 2>/dev/null; wait \\$child; exit 0\" TERM INT HUP\n\
         while :; do\n\
         \t\"$0\" \"$@\" &\n\
         \tchild=$!\n\
         \twait $child\n\
         \tstatus=$?\n\
         \tcase $status in 0|{never_on}) exit $status ;; esac\n\
         \tnow=$(date +%s)\n\
         \tif [ $((now - since)) -ge {window_s} ]; then since=$now; failures=0; fi\n\
         \tfailures=$((failures + 1))\n\
         \tif [ $failures -ge {burst} ]; then exit $status; fi\n\
         \tsleep {delay_s} &\n\
         \tchild=$!\n\
         \twait $child\n\
         done"
    )
}

fn header(spec: &ServiceSpec, require: &str, enable: &str) -> String {
    format!(
        "#!/bin/sh\n\
         #\n\
         # PROVIDE: {NAME}\n\
         # REQUIRE: {require}\n\
         # KEYWORD: shutdown\n\
         #\n\
         # {description},\n\
         # written by `muster agent install-service`; see {docs}.\n\
         # Enabled by {enable} in /{RC_CONF_D}.\n\
         #\n\
         # The agent restarts {delay} s after a failure, but not after exit 0 (it was\n\
         # stopped) or {never} (the hub revoked it: restarting cannot help and must not\n\
         # hammer the hub), and not after {burst} failures in {window} s (a local fault);\n\
         # rc.subr has no such policy, so a small loop supervises it.\n",
        description = spec.description,
        docs = spec.docs_url,
        delay = spec.restart.delay_s,
        never = spec.restart.never_on,
        burst = spec.restart.burst,
        window = spec.restart.window_s,
    )
}

/// The command line that runs the loop, as sh words.
pub(crate) fn loop_command(spec: &ServiceSpec) -> String {
    let mut words = vec![
        "/bin/sh".to_owned(),
        "-c".to_owned(),
        format!("\"${NAME}_loop\""),
        sh_quote(&spec.binary.display().to_string()),
    ];
    words.extend(spec.args().iter().map(|a| sh_quote(a)));
    words.join(" ")
}

pub fn render_freebsd(spec: &ServiceSpec, user: Option<&str>) -> String {
    let user = match user {
        Some(name) => format!("-u {} ", sh_quote(name)),
        None => String::new(),
    };
    format!(
        "{header}\n\
         . /etc/rc.subr\n\
         \n\
         name={NAME}\n\
         rcvar={NAME}_enable\n\
         desc={desc}\n\
         \n\
         load_rc_config $name\n\
         : \"${{{NAME}_enable:=NO}}\"\n\
         \n\
         # daemon(8) detaches, keeps the pid file, logs to syslog and passes SIGTERM on;\n\
         # rc.subr finds it by the pid file and its name.\n\
         pidfile=\"/var/run/${{name}}.pid\"\n\
         command=/usr/sbin/daemon\n\
         start_cmd={NAME}_start\n\
         \n\
         {NAME}_loop={script}\n\
         \n\
         {NAME}_start()\n\
         {{\n\
         \techo \"Starting ${{name}}.\"\n\
         \t/usr/sbin/daemon -f -P \"$pidfile\" -S -T \"$name\" {user}\\\n\
         \t\t{command}\n\
         }}\n\
         \n\
         run_rc_command \"$1\"\n",
        header = header(spec, "LOGIN NETWORKING", &format!("{NAME}_enable=\"YES\"")),
        desc = sh_quote(spec.description),
        script = sh_quote(&supervisor(&spec.restart)),
        command = loop_command(spec),
    )
}

/// NetBSD's rc.subr applies `${name}_user` only to its own start; this script
/// starts the loop itself, so it runs the agent as root and refuses other owners.
pub fn render_netbsd(spec: &ServiceSpec) -> Result<String, ServiceError> {
    if let Some(user) = &spec.user {
        return Err(ServiceError::User(format!(
            "the NetBSD script runs the agent as root, and {} belongs to uid {}: use a config dir owned by root",
            spec.config_dir.display(),
            user.uid
        )));
    }
    Ok(format!(
        "{header}\n\
         $_rc_subr_loaded . /etc/rc.subr\n\
         \n\
         name={NAME}\n\
         rcvar=$name\n\
         # rc.subr finds the supervising shell by its pid file and its name.\n\
         pidfile=\"/var/run/${{name}}.pid\"\n\
         procname=/bin/sh\n\
         start_cmd={NAME}_start\n\
         \n\
         {NAME}_loop={script}\n\
         \n\
         {NAME}_start()\n\
         {{\n\
         \techo \"Starting ${{name}}.\"\n\
         \t{command} \\\n\
         \t\t</dev/null >>/var/log/{NAME}.log 2>&1 &\n\
         \techo $! >\"$pidfile\"\n\
         }}\n\
         \n\
         load_rc_config $name\n\
         run_rc_command \"$1\"\n",
        header = header(spec, "NETWORKING DAEMON", &format!("{NAME}=YES")),
        script = sh_quote(&supervisor(&spec.restart)),
        command = loop_command(spec),
    ))
}

/// Enable the script where rc.subr looks first, replacing any earlier choice.
pub fn enable_offline(init: Init, root: &Path) -> Result<(), ServiceError> {
    let line = match init {
        Init::NetBsd => format!("{NAME}=YES\n"),
        _ => format!("{NAME}_enable=\"YES\"\n"),
    };
    let path = root.join(RC_CONF_D);
    let dir = path.parent().unwrap_or(root);
    std::fs::create_dir_all(dir).map_err(|e| io("create", dir, e))?;
    muster_files::write_atomic_path(&path, line.as_bytes(), muster_files::PUBLIC)
        .map_err(|e| io("write", &path, e))
}
