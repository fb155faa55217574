//! `muster completions bash|zsh|fish`: shell completion scripts generated from the
//! command definitions themselves, so they cannot drift from the flags. The
//! Debian package installs all three at build time (scripts/package).

use anyhow::Result;
use clap::{Args, CommandFactory as _, ValueEnum};

#[derive(Args)]
pub struct CompletionsArgs {
    /// The shell to write the completion script for.
    shell: Shell,
}

#[derive(Clone, Copy, ValueEnum)]
enum Shell {
    Bash,
    Zsh,
    Fish,
}

pub fn exec(args: CompletionsArgs) -> Result<()> {
    let shell = match args.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut crate::Cli::command(), "muster", &mut script);
    write_stdout(&script)
}

/// Generated text as it is: `out!` escapes control characters for terminals,
/// and these bytes are for a shell or `man`, not for a person reading agent data.
pub fn write_stdout(bytes: &[u8]) -> Result<()> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            Err(crate::failure::Stop::ClosedOutput.into())
        }
        Err(e) => Err(anyhow::Error::new(e).context("cannot write to stdout")),
    }
}
