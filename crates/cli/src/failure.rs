//! How a command ends when it does not simply succeed. Commands return
//! `anyhow::Error`; `main` renders it here, once, as one line. The few endings that
//! need their own exit status travel as a typed [`Stop`] inside that error.

use std::fmt;
use std::process::ExitCode;

/// Exit status of `muster enroll` when the request waits for approval.
const EXIT_PENDING: u8 = 4;
/// Exit status of `muster update --check` when a newer release is available.
const EXIT_UPDATE_AVAILABLE: u8 = 10;

/// An ending with its own exit status, found by `main` with `downcast_ref`.
#[derive(Debug)]
pub enum Stop {
    /// The hub revoked or refused this agent for good: service managers must not
    /// restart it, so the exit status is the agent's "revoked" one.
    Revoked(String),
    /// The enrollment request waits for an admin: not an error, not done either.
    Pending(String),
    /// `muster update --check` found a newer release (already printed).
    UpdateAvailable,
    /// Whoever read stdout closed it (`muster agents list | head -1`): nothing is
    /// left to say, so the command ends quietly and successfully.
    ClosedOutput,
}

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stop::Revoked(m) | Stop::Pending(m) => f.write_str(m),
            Stop::ClosedOutput => f.write_str("stdout was closed"),
            Stop::UpdateAvailable => f.write_str("a newer release is available"),
        }
    }
}

impl std::error::Error for Stop {}

/// Prints `err` (one line on stderr, unless stdout was merely closed) and picks the
/// exit status.
pub fn report(err: &anyhow::Error) -> ExitCode {
    let (prefix, code) = match err.downcast_ref::<Stop>() {
        Some(Stop::ClosedOutput) => return ExitCode::SUCCESS,
        Some(Stop::UpdateAvailable) => return ExitCode::from(EXIT_UPDATE_AVAILABLE),
        Some(Stop::Pending(_)) => ("", ExitCode::from(EXIT_PENDING)),
        Some(Stop::Revoked(_)) => (
            "error: ",
            ExitCode::from(muster_agent::service::EXIT_REVOKED as u8),
        ),
        None => ("error: ", ExitCode::FAILURE),
    };
    use std::io::Write as _;
    // Nothing better to do when stderr is gone too.
    let line = render(err);
    let _ = writeln!(
        std::io::stderr(),
        "{prefix}{}",
        crate::escape::escape(&line, true)
    );
    code
}

/// The error and its causes on one line. A cause is left out when the text before
/// it already says it: our libraries' errors often embed their source in their own
/// message, and printing both would say everything twice.
pub fn render(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        let text = text.trim();
        if text.is_empty() || line.contains(text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(text);
    }
    line.lines().map(str::trim).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Embeds(std::io::Error);
    impl fmt::Display for Embeds {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "cannot read x: {}", self.0)
        }
    }
    impl std::error::Error for Embeds {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_source_already_in_the_message_is_not_repeated() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let err = anyhow::Error::new(Embeds(io)).context("loading the profile");
        assert_eq!(
            render(&err),
            "loading the profile: cannot read x: no such file"
        );
    }

    #[test]
    fn context_and_cause_are_joined_once() {
        let err = anyhow::anyhow!("expected 64 hex digits").context("--ca-hash");
        assert_eq!(render(&err), "--ca-hash: expected 64 hex digits");
    }

    #[test]
    fn multi_line_messages_become_one_line() {
        let err = anyhow::anyhow!("first\n  second");
        assert_eq!(render(&err), "first second");
    }
}
