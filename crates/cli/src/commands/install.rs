//! `muster install`: the guided installer of an agent (hub and token, name, what
//! this machine runs and which packs watch it, enrollment, the service), asked line
//! by line at a terminal, or taken from flags alone with `--yes` or without one.
//!
//! Invariant: nothing changes before the confirmation. Every question comes first;
//! Ctrl-C or the end of input while asking ends with "nothing was changed". Then the
//! enrollment runs through the same code as `muster enroll` (the token's CA pin is
//! checked before the token leaves) and writes the chosen packs with the identity in
//! one atomic step; the service comes last, as `muster agent install-service` does it.

mod detect;

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::PathBuf;

use anyhow::{Context as _, Result, anyhow, bail};
use clap::Args;
use muster_agent::configdir::ConfigDir;

use crate::output::parse_label;

#[derive(Args)]
pub struct InstallArgs {
    /// Hub URL, e.g. https://hub.example:8443 (asked, with this as the default, at a
    /// terminal).
    #[arg(long = "hub", value_name = "URL")]
    hub: Option<String>,
    /// Enrollment token (met_…); it carries the hub's CA pin. Asked without echo at
    /// a terminal when not given.
    #[arg(long, env = "MUSTER_ENROLL_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Agent name (default: the hostname).
    #[arg(long)]
    name: Option<String>,
    /// Label for this agent, k=v; repeatable.
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// Packs the agent offers, comma-separated (default: every built-in pack).
    #[arg(long, value_delimiter = ',', value_name = "PACK,…")]
    packs: Option<Vec<String>>,
    /// Where to write this machine's identity (default: ~/.muster).
    #[arg(long, env = "MUSTER_CONFIG_DIR")]
    config_dir: Option<PathBuf>,
    /// Install and start the agent as a service of this OS (the default; asked at a
    /// terminal when neither --service nor --no-service is given).
    #[arg(long, conflicts_with = "no_service")]
    service: bool,
    /// Only enroll: run `muster agent` under your own supervisor.
    #[arg(long)]
    no_service: bool,
    /// Ask nothing: take every value from the flags (as without a terminal).
    #[arg(long, short = 'y')]
    yes: bool,
}

/// Everything decided before anything changes.
struct Plan {
    hub: String,
    token: String,
    name: String,
    labels: Vec<(String, String)>,
    packs: Vec<String>,
    dir: ConfigDir,
    service: bool,
}

pub async fn exec(args: InstallArgs) -> Result<()> {
    let terminal = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let screen = Screen {
        colour: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
    };
    let dir = ConfigDir::resolve(args.config_dir.as_deref())?;
    let found = detect::detect(
        std::path::Path::new("/"),
        std::env::var_os("PATH").as_deref(),
    );
    let plan = if terminal && !args.yes {
        // Asked on a blocking thread, so Ctrl-C can end the questions at any point
        // (the hidden prompt restores the terminal before it passes Ctrl-C on).
        let shown = found.clone();
        let ask = tokio::task::spawn_blocking(move || ask(args, dir, &shown, screen));
        tokio::select! {
            asked = ask => asked.context("the questions stopped unexpectedly")??,
            _ = tokio::signal::ctrl_c() => {
                let _ = writeln!(std::io::stdout(), "\nInterrupted: nothing was changed.");
                std::process::exit(130);
            }
        }
    } else {
        let plan = unattended(args, dir)?;
        show_found(&screen, &found)?;
        Some(plan)
    };
    let Some(plan) = plan else {
        return screen.line("Nothing was changed.");
    };
    // Ctrl-C is caught from here on too (the handler stays once installed): the
    // enrollment writes its identity in one atomic step, so either the old content
    // or the new identity is there, and `muster status` says which.
    tokio::select! {
        done = carry_out(&plan, &screen) => done,
        _ = tokio::signal::ctrl_c() => {
            let _ = writeln!(
                std::io::stdout(),
                "\nInterrupted: {} holds its previous content or the whole new identity; `muster status --config-dir {0}` says which.",
                plan.dir.path().display()
            );
            std::process::exit(130);
        }
    }
}

/// The plan from flags alone: a missing required value is an error with a hint.
fn unattended(args: InstallArgs, dir: ConfigDir) -> Result<Plan> {
    let hub = args.hub.ok_or_else(|| {
        anyhow!("--hub URL is required when nothing can be asked (no terminal, or --yes): e.g. --hub https://hub.example:8443")
    })?;
    let token = args.token.ok_or_else(|| {
        anyhow!("--token is required when nothing can be asked (no terminal, or --yes): make one with `muster tokens create` on the admin's machine; nothing was changed")
    })?;
    let packs = match args.packs {
        Some(p) => check_packs(p)?,
        None => builtin_packs(),
    };
    Ok(Plan {
        hub,
        token,
        name: args.name.unwrap_or_else(hostname),
        labels: args.labels,
        packs,
        dir,
        service: !args.no_service,
    })
}

/// The questions, in order; `None` when the user declined at the confirmation.
/// The end of input at any question is an error saying nothing was changed.
fn ask(
    args: InstallArgs,
    dir: ConfigDir,
    found: &[detect::Found],
    s: Screen,
) -> Result<Option<Plan>> {
    s.heading("Muster agent install")?;
    s.line(&format!("Config dir: {}", dir.path().display()))?;
    s.line("")?;
    s.heading("1. The hub")?;
    let hub = loop {
        let answer = s.prompt("Hub URL", args.hub.as_deref())?;
        if !answer.is_empty() {
            break answer;
        }
        s.line("  A hub URL is needed, e.g. https://hub.example:8443")?;
    };
    let token = match args.token {
        Some(t) => t,
        None => {
            loop {
                let t = s.hidden("Enrollment token (met_…, not shown)")?;
                if !t.trim().is_empty() {
                    break t.trim().to_owned();
                }
                s.line("  A token is needed: `muster tokens create` on the admin's machine prints one.")?;
            }
        }
    };
    let default_name = args.name.clone().unwrap_or_else(hostname);
    let name = s.prompt("Agent name", Some(&default_name))?;
    s.line("")?;
    s.heading("2. What runs here")?;
    show_found(&s, found)?;
    s.line("")?;
    s.heading("3. Packs")?;
    let all = muster_agent::probes::packs();
    for (i, pack) in all.iter().enumerate() {
        let prefix = format!("{}.", pack.name());
        let probes: Vec<_> = pack
            .probes()
            .iter()
            .map(|p| p.name.strip_prefix(&prefix).unwrap_or(p.name))
            .collect();
        s.line(&format!(
            "  {}) {}: {}",
            i + 1,
            pack.name(),
            probes.join(" ")
        ))?;
    }
    let default_packs = match args.packs.clone() {
        Some(given) => check_packs(given)?,
        None => builtin_packs(),
    };
    let packs = loop {
        let answer = s.prompt(
            "Packs to enable (numbers or names, comma-separated)",
            Some(&default_packs.join(",")),
        )?;
        match parse_choice(&answer) {
            Ok(p) => break p,
            Err(e) => s.line(&format!("  {e}"))?,
        }
    };
    let service = if args.no_service {
        false
    } else if args.service {
        true
    } else {
        s.yes_no("Install and start the agent as a service?", true)?
    };
    s.line("")?;
    s.heading("4. Confirm")?;
    s.line(&format!("  enroll   {name} with {hub}"))?;
    s.line(&format!("  packs    {}", packs.join(", ")))?;
    s.line(&format!("  identity {}", dir.path().display()))?;
    s.line(&format!(
        "  service  {}",
        if service { "install and start" } else { "no" }
    ))?;
    if !s.yes_no("Go ahead?", true)? {
        return Ok(None);
    }
    Ok(Some(Plan {
        hub,
        token,
        name,
        labels: args.labels,
        packs,
        dir,
        service,
    }))
}

/// Enroll, install the service, and print the summary with the next commands.
async fn carry_out(plan: &Plan, s: &Screen) -> Result<()> {
    let opts = muster_agent::EnrollOptions {
        hub_urls: muster_agent::hubs::parse_list(std::slice::from_ref(&plan.hub), "--hub")?,
        token: Some(plan.token.clone()),
        name: Some(plan.name.clone()),
        labels: plan.labels.iter().cloned().collect(),
        packs: Some(plan.packs.clone()),
        ..Default::default()
    };
    let report = muster_agent::enroll(&opts, &plan.dir).await?;
    let dir = plan.dir.path().display().to_string();
    let service = if plan.service {
        let binary = std::env::current_exe().context("cannot find this binary")?;
        let installed = muster_agent::service::install(&muster_agent::service::InstallOptions {
            init: None,
            binary,
            config_dir: plan.dir.path().to_path_buf(),
            root: None,
            no_start: false,
        })
        .map_err(|e| {
            anyhow!(
                "{} is enrolled, but the service was not installed: {e}; once fixed, run `muster agent install-service --config-dir {dir}`",
                report.name
            )
        })?;
        format!(
            "{} service running: {}",
            installed.init.name(),
            installed.path.display()
        )
    } else {
        format!("not installed: run `muster agent --config-dir {dir}` under your supervisor")
    };
    s.line("")?;
    s.heading(&format!(
        "Installed: {} ({}) enrolled with {}",
        report.name, report.agent_id, report.hub_url
    ))?;
    s.line(&format!("  identity {dir}"))?;
    s.line(&format!("  packs    {}", plan.packs.join(", ")))?;
    s.line(&format!("  service  {service}"))?;
    s.line(&format!(
        "  expires  {} (renewed by the agent)",
        crate::output::time(&report.cert_expires_at)
    ))?;
    s.line("")?;
    s.heading("Next")?;
    let next = [
        (
            format!("muster status --config-dir {dir}"),
            "this machine as the hub sees it",
        ),
        (
            format!("muster agents show {}", report.name),
            "on an admin's machine",
        ),
        (
            format!("muster probe {} system.info", report.name),
            "ask it a first question",
        ),
    ];
    let width = next.iter().map(|(c, _)| c.len()).max().unwrap_or(0);
    for (command, why) in next {
        s.line(&format!("  {command:<width$}  {why}"))?;
    }
    Ok(())
}

fn show_found(s: &Screen, found: &[detect::Found]) -> Result<()> {
    if found.is_empty() {
        return s.line("  Found nothing the packs know; the system pack still watches the host.");
    }
    for f in found {
        s.line(&format!("  {:<15}{}", f.what, f.covered_by))?;
        s.line(&format!("  {:<15}found {}", "", f.evidence))?;
    }
    if !found.iter().any(|f| f.what == "systemd") {
        s.line("  No systemd here: system.service and system.journal do not apply, so the")?;
        s.line("  system pack sees this software through its processes and listening ports.")?;
    }
    Ok(())
}

fn builtin_packs() -> Vec<String> {
    muster_agent::probes::packs()
        .iter()
        .map(|p| p.name().to_owned())
        .collect()
}

/// Pack names given on the command line, each a built-in pack.
fn check_packs(given: Vec<String>) -> Result<Vec<String>> {
    let known = builtin_packs();
    for p in &given {
        if !known.contains(p) {
            bail!("unknown pack {p:?} (built in: {})", known.join(", "));
        }
    }
    Ok(given)
}

/// An answer to the packs question: numbers from the list or names, separated by
/// commas or spaces; `none` for no pack.
fn parse_choice(answer: &str) -> Result<Vec<String>> {
    let known = builtin_packs();
    if answer.trim() == "none" {
        return Ok(Vec::new());
    }
    let mut chosen = Vec::new();
    for word in answer.split([',', ' ']).filter(|w| !w.is_empty()) {
        let name = match word.parse::<usize>() {
            Ok(n) if (1..=known.len()).contains(&n) => known[n - 1].clone(),
            Ok(n) => bail!("no pack numbered {n} (1 to {})", known.len()),
            Err(_) if known.iter().any(|k| k == word) => word.to_owned(),
            Err(_) => bail!("unknown pack {word:?} (built in: {})", known.join(", ")),
        };
        if !chosen.contains(&name) {
            chosen.push(name);
        }
    }
    Ok(chosen)
}

fn hostname() -> String {
    muster_agent::facts::collect(&muster_agent::facts::FactSources::from_env(), None).hostname
}

/// The terminal the questions are asked on: plain lines, bold headings only for a
/// person at a terminal without `NO_COLOR`.
#[derive(Clone, Copy)]
struct Screen {
    colour: bool,
}

impl Screen {
    fn line(&self, text: &str) -> Result<()> {
        writeln!(std::io::stdout(), "{text}").context("cannot write to stdout")
    }

    fn heading(&self, text: &str) -> Result<()> {
        if self.colour {
            self.line(&format!("\x1b[1m{text}\x1b[0m"))
        } else {
            self.line(text)
        }
    }

    /// One line of answer; Enter alone takes `default`.
    fn prompt(&self, question: &str, default: Option<&str>) -> Result<String> {
        let mut out = std::io::stdout();
        match default {
            Some(d) if !d.is_empty() => write!(out, "{question} [{d}]: "),
            _ => write!(out, "{question}: "),
        }
        .and_then(|()| out.flush())
        .context("cannot write to stdout")?;
        let mut answer = String::new();
        let read = std::io::stdin()
            .lock()
            .read_line(&mut answer)
            .context("cannot read the answer")?;
        if read == 0 {
            bail!("the input ended before the confirmation: nothing was changed");
        }
        let answer = answer.trim();
        Ok(if answer.is_empty() {
            default.unwrap_or_default().to_owned()
        } else {
            answer.to_owned()
        })
    }

    /// A secret, read without echo.
    fn hidden(&self, question: &str) -> Result<String> {
        match rpassword::prompt_password(format!("{question}: ")) {
            Ok(secret) => Ok(secret),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                bail!("the input ended before the confirmation: nothing was changed")
            }
            Err(e) => Err(anyhow!("cannot read the token: {e}")),
        }
    }

    fn yes_no(&self, question: &str, default: bool) -> Result<bool> {
        loop {
            let hint = if default { "Y/n" } else { "y/N" };
            let answer = self.prompt(&format!("{question} [{hint}]"), None)?;
            match answer.to_ascii_lowercase().as_str() {
                "" => return Ok(default),
                "y" | "yes" => return Ok(true),
                "n" | "no" => return Ok(false),
                _ => self.line("  Answer y or n.")?,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::parse_choice;

    #[test]
    fn packs_are_chosen_by_number_or_name() {
        assert_eq!(parse_choice("1").unwrap(), ["system"]);
        assert_eq!(parse_choice("system, 1").unwrap(), ["system"]);
        assert!(parse_choice("none").unwrap().is_empty());
        assert!(parse_choice("2").is_err());
        assert!(parse_choice("nginx").is_err());
    }
}
