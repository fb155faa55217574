//! `muster`: the hub, the agent and the admin CLI in one binary. Thin: each command
//! (one module each under `commands/`) parses its flags, calls a library, prints.
//! Errors are rendered here, once, as one line on stderr with a non-zero exit.

mod commands;
mod connection;
mod duration;
mod escape;
mod failure;
mod output;
mod signal;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::commands::{
    agent, agents, approvals, audit, bench, enroll, hub, hubs, install, integrations, keys, login,
    probe, release, sso, status, tokens, trust, unenroll, update, users,
};
use crate::commands::{completions, man};
use crate::connection::{ConnectionArgs, LeadingConnection};

#[derive(Parser)]
#[command(
    name = "muster",
    version,
    about = "Fleet enrollment and identity: hub, agent and admin CLI in one binary"
)]
struct Cli {
    /// An admin command's connection flags, when written before its name.
    #[command(flatten)]
    leading: LeadingConnection,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the hub (default: SQLite under ./muster-data, HTTPS on 0.0.0.0:8443).
    Hub(Box<hub::HubArgs>),
    /// Manage enrollment tokens.
    Tokens(tokens::TokensArgs),
    /// Inspect and manage enrolled agents.
    Agents(agents::AgentsArgs),
    /// The hubs sharing one database, with their leases.
    Hubs(hubs::HubsArgs),
    /// Enroll this machine with a hub.
    Enroll(enroll::EnrollArgs),
    /// Guided install of this machine's agent: hub, token, name, packs, service.
    Install(install::InstallArgs),
    /// Revoke this machine's credentials at the hub and delete its config dir.
    Unenroll(unenroll::UnenrollArgs),
    /// Show this machine's identity and the hub's view of it.
    Status(status::StatusArgs),
    /// Run the agent: keep the live session with the hub (the service entry point).
    Agent(agent::AgentArgs),
    /// Update this agent to the signed release its hub offers (`--check`: only compare).
    Update(update::UpdateArgs),
    /// Trust rules: hostname globs and source networks that may enroll without a credential.
    Trust(trust::TrustArgs),
    /// Dashboard users (admin or member), by password or single sign-on.
    Users(users::UsersArgs),
    /// Single sign-on (OpenID Connect, Microsoft Entra) and the groups it admits.
    Sso(sso::SsoArgs),
    /// Ask agents a read-only question (a probe) over their live sessions.
    Probe(probe::ProbeArgs),
    /// Integrations: external HTTPS APIs the hub probes, with encrypted credentials.
    Integrations(integrations::IntegrationsArgs),
    /// API keys for people and tools (admin or member).
    Keys(keys::KeysArgs),
    /// The tamper-evident audit log.
    Audit(audit::AuditArgs),
    /// The approval queue: enrollments without a credential, renewals past the grace.
    Approvals(approvals::ApprovalsArgs),
    /// Save a hub URL, API key and CA hash for later admin commands.
    Login(login::LoginArgs),
    /// Benchmarks against a running hub.
    Bench(bench::BenchArgs),
    /// Signed agent releases: keygen, sign, verify, publish, list.
    Release(release::ReleaseArgs),
    /// Print a shell completion script (bash, zsh or fish).
    Completions(completions::CompletionsArgs),
    /// Print the manual page, or write one per command with --out-dir.
    Man(man::ManArgs),
}

impl Command {
    /// The hub connection of a command that talks to the hub as an admin.
    fn connection_mut(&mut self) -> Option<&mut ConnectionArgs> {
        match self {
            Command::Tokens(a) => Some(&mut a.conn),
            Command::Agents(a) => Some(&mut a.conn),
            Command::Hubs(a) => Some(&mut a.conn),
            Command::Trust(a) => Some(&mut a.conn),
            Command::Users(a) => Some(&mut a.conn),
            Command::Sso(a) => Some(&mut a.conn),
            Command::Probe(a) => Some(&mut a.conn),
            Command::Integrations(a) => Some(&mut a.conn),
            Command::Keys(a) => Some(&mut a.conn),
            Command::Audit(a) => Some(&mut a.conn),
            Command::Approvals(a) => Some(&mut a.conn),
            Command::Login(a) => Some(&mut a.conn),
            Command::Bench(a) => a.connection_mut(),
            Command::Release(a) => a.connection_mut(),
            Command::Hub(_)
            | Command::Enroll(_)
            | Command::Install(_)
            | Command::Unenroll(_)
            | Command::Status(_)
            | Command::Agent(_)
            | Command::Update(_) => None,
            Command::Completions(_) | Command::Man(_) => None,
        }
    }
}

/// Logs go to stderr, filtered by `MUSTER_LOG` (else `default`), in colour only
/// for a person at a terminal.
fn init_logging(default: &str) {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_env("MUSTER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let ansi = colour(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .try_init();
}

/// Colour only on a terminal, and never when `NO_COLOR` is set to anything but
/// the empty string (no-color.org): journald, files and pipes get plain text.
fn colour(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

fn main() -> ExitCode {
    use clap::error::ErrorKind;
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) =>
        {
            e.exit()
        }
        Err(e) => {
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr(), "{}", usage_error_line(&e));
            return ExitCode::from(2);
        }
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    // The two long-running services log their progress; one-shot commands only
    // what went wrong.
    init_logging(
        if matches!(cli.command, Command::Hub(_) | Command::Agent(_)) {
            "info"
        } else {
            "warn"
        },
    );
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let e = anyhow::Error::new(e).context("cannot start the async runtime");
            return failure::report(&e);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => failure::report(&e),
    }
}

/// A command-line mistake as one line: clap's error, the values it would take or
/// its tip, and the help command for the (sub)command being parsed, as it can be
/// typed.
fn usage_error_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let mut line = lines
        .next()
        .unwrap_or("error: invalid command line")
        .to_owned();
    for l in lines {
        if let Some(tip) = l.strip_prefix("tip: ") {
            line = format!("{line}; {tip}");
        } else if l.starts_with("[possible values:") {
            line = format!("{line} {l}");
        }
    }
    format!("{line} (see `{} --help`)", command_path().join(" "))
}

/// `muster` and the subcommand names given on the command line, as far as they
/// name real subcommands.
fn command_path() -> Vec<String> {
    use clap::CommandFactory as _;
    let mut cmd = Cli::command();
    let mut path = vec!["muster".to_owned()];
    // A word after a flag may be that flag's value (`--hub URL tokens list`).
    let mut after_flag = false;
    for word in std::env::args().skip(1) {
        let Some(sub) = cmd.find_subcommand(&word).cloned() else {
            if word.starts_with('-') {
                after_flag = !word.contains('=');
                continue;
            }
            if std::mem::take(&mut after_flag) {
                continue;
            }
            break;
        };
        after_flag = false;
        path.push(word);
        cmd = sub;
    }
    path
}

/// Every command, dispatched once.
async fn run(cli: Cli) -> anyhow::Result<()> {
    let Cli {
        leading,
        mut command,
    } = cli;
    match command.connection_mut() {
        Some(conn) => leading.apply(conn),
        None if leading.is_given() => anyhow::bail!(
            "--hub, --api-key, --ca-hash and --ca-file before the command name are for admin \
             commands; write this command's own flags after its name (see its --help)"
        ),
        None => {}
    }
    match command {
        Command::Hub(args) => hub::exec(*args).await,
        Command::Tokens(args) => tokens::exec(args).await,
        Command::Agents(args) => agents::exec(args).await,
        Command::Enroll(args) => enroll::exec(args).await,
        Command::Install(args) => install::exec(args).await,
        Command::Unenroll(args) => unenroll::exec(args).await,
        Command::Status(args) => status::exec(args).await,
        Command::Agent(args) => agent::exec(args).await,
        Command::Update(args) => update::exec(args).await,
        Command::Trust(args) => trust::exec(args).await,
        Command::Users(args) => users::exec(args).await,
        Command::Sso(args) => sso::exec(args).await,
        Command::Probe(args) => probe::exec(args).await,
        Command::Integrations(args) => integrations::exec(args).await,
        Command::Hubs(args) => hubs::exec(args).await,
        Command::Keys(args) => keys::exec(args).await,
        Command::Audit(args) => audit::exec(args).await,
        Command::Approvals(args) => approvals::exec(args).await,
        Command::Login(args) => login::exec(args).await,
        Command::Bench(args) => bench::exec(args).await,
        Command::Completions(args) => completions::exec(args),
        Command::Man(args) => man::exec(args),
        Command::Release(args) => release::exec(args).await,
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::{Cli, colour};

    #[test]
    fn logs_are_coloured_only_on_a_terminal_without_no_color() {
        use std::ffi::OsStr;
        assert!(colour(true, None));
        assert!(colour(true, Some(OsStr::new(""))));
        assert!(!colour(true, Some(OsStr::new("1"))));
        assert!(!colour(false, None));
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    /// Every command and every flag says what it is for in `--help`.
    #[test]
    fn every_command_and_flag_has_a_help_line() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let builtin = ["help", "version"].contains(&arg.get_id().as_str());
                if !builtin && !arg.is_hide_set() && arg.get_help().is_none() {
                    missing.push(format!("{path} {}", arg.get_id()));
                }
            }
            for sub in cmd.get_subcommands() {
                let sub_path = format!("{path} {}", sub.get_name());
                if sub.get_name() != "help" && sub.get_about().is_none() {
                    missing.push(sub_path.clone());
                }
                walk(sub, &sub_path, missing);
            }
        }
        let mut missing = Vec::new();
        let mut cmd = Cli::command();
        cmd.build();
        walk(&cmd, "muster", &mut missing);
        assert!(missing.is_empty(), "no help line: {missing:#?}");
    }
}
