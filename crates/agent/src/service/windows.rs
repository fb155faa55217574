//! The Windows service, rendered as the PowerShell that creates it: `New-Service`
//! with the command line quoted the way Windows splits it, and `sc.exe failure`
//! for the restart policy. The service manager cannot spare one exit status, so a
//! revoked agent is restarted at most three times (then left stopped) within the
//! reset period.

use super::ServiceSpec;

pub const NAME: &str = "muster-agent";
pub const PATH: &str = "ProgramData/Muster/install-service.ps1";
/// Failures are forgotten after a day of running.
const RESET_S: u32 = 86_400;

pub fn render(spec: &ServiceSpec, start: bool) -> String {
    let mut line = program(&spec.binary.display().to_string());
    for arg in spec.args() {
        line.push(' ');
        line.push_str(&argument(&arg));
    }
    let delay_ms = spec.restart.delay_s * 1000;
    let start = if start {
        format!("Start-Service -Name '{NAME}'\n")
    } else {
        String::new()
    };
    format!(
        "# {description},\n\
         # written by `muster agent install-service`; see {docs}.\n\
         # Runs as LocalSystem. Restarts {delay} s after a failure, three times at most\n\
         # until it has run for a day; exit {never} (the hub revoked this agent) counts as\n\
         # a failure here, as Windows cannot tell exit statuses apart.\n\
         $ErrorActionPreference = 'Stop'\n\
         New-Service -Name '{NAME}' -DisplayName 'Muster agent' `\n    \
         -Description {description_ps} `\n    \
         -StartupType Automatic `\n    \
         -BinaryPathName {line}\n\
         & sc.exe failure '{NAME}' reset= {RESET_S} actions= restart/{delay_ms}/restart/{delay_ms}/restart/{delay_ms}\n\
         if ($LASTEXITCODE -ne 0) {{ throw \"sc.exe failure exited $LASTEXITCODE\" }}\n\
         # A non-zero exit counts as a failure, not only a crash.\n\
         & sc.exe failureflag '{NAME}' 1\n\
         if ($LASTEXITCODE -ne 0) {{ throw \"sc.exe failureflag exited $LASTEXITCODE\" }}\n\
         {start}",
        description = spec.description,
        docs = spec.docs_url,
        description_ps = ps_quote(spec.description),
        delay = spec.restart.delay_s,
        never = spec.restart.never_on,
        line = ps_quote(&line),
    )
}

/// The program in a Windows command line: quoted, since `Program Files` has a
/// space and an unquoted path with one is a known privilege escalation (Windows
/// would try `C:\Program.exe` first). A `"` cannot occur in a Windows path.
fn program(path: &str) -> String {
    format!("\"{}\"", path.replace('"', ""))
}

/// One argument as CommandLineToArgvW splits it: in quotes when it has space, tab
/// or `"`; backslashes are literal unless they precede a `"`, so those (and the
/// trailing ones, which precede the closing quote) are doubled.
pub(crate) fn argument(arg: &str) -> String {
    if !arg.is_empty() && !arg.contains([' ', '\t', '"']) {
        return arg.to_owned();
    }
    let mut out = String::from("\"");
    let mut backslashes = 0;
    for c in arg.chars() {
        match c {
            '\\' => backslashes += 1,
            '"' => {
                out.push_str(&"\\".repeat(backslashes * 2 + 1));
                out.push('"');
                backslashes = 0;
            }
            c => {
                out.push_str(&"\\".repeat(backslashes));
                out.push(c);
                backslashes = 0;
            }
        }
    }
    out.push_str(&"\\".repeat(backslashes * 2));
    out.push('"');
    out
}

/// A PowerShell single-quoted string: nothing inside is expanded; a quote is
/// doubled, and PowerShell counts the typographic single quotes as quotes too.
pub(crate) fn ps_quote(s: &str) -> String {
    let mut out = String::from("'");
    for c in s.chars() {
        if matches!(c, '\'' | '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}') {
            out.push(c);
        }
        out.push(c);
    }
    out.push('\'');
    out
}
