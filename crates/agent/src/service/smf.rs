//! The illumos SMF manifest. The child model (`startd/duration=child`): svc.startd
//! keeps the agent as the start method's child and restarts the service when it
//! exits. SMF cannot spare one exit status, so the start method is a small sh
//! wrapper: after a failure it waits `delay_s` before exiting (SMF then restarts
//! it), and after the revoked status it disables the service instead. Stopping
//! kills the contract (`:kill`, SIGTERM).

use super::{ServiceSpec, sh_quote, xml_escape};

pub const FMRI: &str = "svc:/site/muster-agent:default";
pub const PATH: &str = "var/svc/manifest/site/muster-agent.xml";

/// The start method's script for `/bin/sh -c`: `$0` is the binary, `$@` its
/// arguments; `SMF_FMRI` is set by svc.startd.
pub fn wrapper(delay_s: u32, never_on: i32) -> String {
    format!(
        "\"$0\" \"$@\"; s=$?; \
         if [ $s -eq {never_on} ]; then /usr/sbin/svcadm disable -t \"$SMF_FMRI\"; exit 0; fi; \
         sleep {delay_s}; exit $s"
    )
}

pub fn render(spec: &ServiceSpec, user: Option<&str>) -> String {
    // svc.startd hands `exec` to sh after expanding `%` tokens.
    let mut words = vec![
        "/bin/sh".to_owned(),
        "-c".to_owned(),
        sh_quote(&wrapper(spec.restart.delay_s, spec.restart.never_on)),
        sh_quote(&spec.binary.display().to_string()),
    ];
    words.extend(spec.args().iter().map(|a| sh_quote(a)));
    let exec = words.join(" ").replace('%', "%%");
    let credential = match user {
        Some(name) => format!(
            "      <!-- The owner of the config dir; the agent needs no more than its files. -->\n      \
             <method_credential user=\"{}\" group=\":default\"/>\n",
            xml_escape(name)
        ),
        None => String::new(),
    };
    format!(
        "<?xml version=\"1.0\"?>\n\
         <!DOCTYPE service_bundle SYSTEM \"/usr/share/lib/xml/dtd/service_bundle.dtd.1\">\n\
         <!-- {description},\n     \
         written by `muster agent install-service`; see {docs}.\n     \
         Import with svccfg import, then svcadm enable {FMRI}. -->\n\
         <service_bundle type=\"manifest\" name=\"muster-agent\">\n  \
         <service name=\"site/muster-agent\" type=\"service\" version=\"1\">\n    \
         <create_default_instance enabled=\"false\"/>\n    \
         <single_instance/>\n    \
         <dependency name=\"network\" grouping=\"require_all\" restart_on=\"error\" type=\"service\">\n      \
         <service_fmri value=\"svc:/milestone/network:default\"/>\n    \
         </dependency>\n    \
         <dependency name=\"filesystem\" grouping=\"require_all\" restart_on=\"error\" type=\"service\">\n      \
         <service_fmri value=\"svc:/system/filesystem/local\"/>\n    \
         </dependency>\n    \
         <method_context>\n\
         {credential}      \
         <method_environment>\n        \
         <envvar name=\"MUSTER_LOG\" value=\"info\"/>\n      \
         </method_environment>\n    \
         </method_context>\n    \
         <!-- Restarts {delay} s after a failure; exit {never} (the hub revoked this agent)\n         \
         disables the service instead: restarting cannot help. -->\n    \
         <exec_method type=\"method\" name=\"start\" exec=\"{exec}\" timeout_seconds=\"60\"/>\n    \
         <exec_method type=\"method\" name=\"stop\" exec=\":kill\" timeout_seconds=\"60\"/>\n    \
         <property_group name=\"startd\" type=\"framework\">\n      \
         <propval name=\"duration\" type=\"astring\" value=\"child\"/>\n    \
         </property_group>\n    \
         <stability value=\"Unstable\"/>\n    \
         <template>\n      \
         <common_name>\n        \
         <loctext xml:lang=\"C\">{description}</loctext>\n      \
         </common_name>\n      \
         <documentation>\n        \
         <doc_link name=\"muster\" uri=\"{docs}\"/>\n      \
         </documentation>\n    \
         </template>\n  \
         </service>\n\
         </service_bundle>\n",
        description = xml_escape(spec.description),
        docs = xml_escape(spec.docs_url),
        delay = spec.restart.delay_s,
        never = spec.restart.never_on,
        exec = xml_escape(&exec),
    )
}
