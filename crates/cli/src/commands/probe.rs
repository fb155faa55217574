//! `muster probe`: ask agents a read-only question over their live sessions
//! (SPEC §15) and print the answers.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::Args;
use muster_proto::{AgentPacks, ProbeOutcome, ProbeRun, RunProbeRequest};

use crate::connection::{ConnectionArgs, client};
use crate::duration::parse_duration;
use crate::output::{Format, emit, out, parse_label, table};

#[derive(Args)]
pub struct ProbeArgs {
    #[command(flatten)]
    pub conn: ConnectionArgs,
    /// AGENT PROBE (an agent by name or id), or PROBE alone with --agents/--label,
    /// or AGENT alone with --list. Probes: system.info, system.disks, … (--list).
    #[arg(num_args = 1..=2, value_name = "AGENT|PROBE")]
    words: Vec<String>,
    /// Run on every agent whose name matches this glob, e.g. 'web-*'.
    #[arg(long)]
    agents: Option<String>,
    /// Run on every agent with this label (k=v).
    #[arg(long, value_parser = parse_label)]
    label: Option<(String, String)>,
    /// A probe parameter, k=v; repeatable (see --list for each probe's).
    #[arg(long = "param", value_parser = parse_label)]
    params: Vec<(String, String)>,
    /// How long to wait for each agent (at most 120s).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
    /// List what AGENT offers: packs, their state, probes and parameters.
    #[arg(long)]
    list: bool,
    #[command(flatten)]
    format: Format,
}

pub async fn exec(args: ProbeArgs) -> Result<()> {
    let client = client(&args.conn)?;
    let fan_out = args.agents.is_some() || args.label.is_some();
    if args.list {
        let [agent] = args.words.as_slice() else {
            bail!("--list takes one agent: muster probe AGENT --list");
        };
        let packs = client.agent_probes(agent).await?;
        return emit(args.format, &packs, catalog_table);
    }
    let req = RunProbeRequest {
        params: args.params.into_iter().collect::<BTreeMap<_, _>>(),
        timeout_s: Some(args.timeout.as_secs().max(1)),
        agents: args.agents.clone(),
        label: args.label.map(|(k, v)| format!("{k}={v}")),
    };
    let runs = match (fan_out, args.words.as_slice()) {
        (true, [probe]) => client.run_probes(probe, &req).await?,
        (false, [agent, probe]) => vec![client.run_probe(agent, probe, &req).await?],
        (true, _) => bail!(
            "with --agents or --label give the probe alone: muster probe --agents 'web-*' system.disks"
        ),
        (false, _) => bail!(
            "give the agent and the probe: muster probe web-01 system.disks (or --agents GLOB PROBE)"
        ),
    };
    let failed = runs
        .iter()
        .filter(|r| r.outcome != ProbeOutcome::Ok)
        .count();
    if fan_out {
        emit(args.format, &runs, |r| runs_table(r))?;
        if runs.is_empty() {
            bail!("no agent matched (or this key may not run that probe on any)");
        }
    } else if let Some(run) = runs.first() {
        if args.format.json {
            emit(args.format, run, |_| String::new())?;
        } else if run.outcome == ProbeOutcome::Ok {
            let body = serde_json::to_string_pretty(&run.result).unwrap_or_default();
            out!("{body}")?;
            if run.truncated {
                crate::output::warn("the result was cut at the agent's output cap");
            }
        }
        if run.outcome != ProbeOutcome::Ok {
            bail!(
                "{} on {}: {} ({})",
                run.probe,
                run.agent,
                outcome_word(run.outcome),
                run.error.as_deref().unwrap_or("no reason given")
            );
        }
    }
    if failed > 0 {
        bail!("{failed} of {} agents did not answer ok", runs.len());
    }
    Ok(())
}

fn outcome_word(o: ProbeOutcome) -> &'static str {
    match o {
        ProbeOutcome::Ok => "ok",
        ProbeOutcome::Error => "error",
        ProbeOutcome::Timeout => "timeout",
        ProbeOutcome::Offline => "offline",
        ProbeOutcome::Pending => "pending",
    }
}

fn runs_table(runs: &[ProbeRun]) -> String {
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            let said = match (&r.result, &r.error) {
                (Some(v), _) => v.to_string(),
                (None, Some(e)) => e.clone(),
                (None, None) => String::new(),
            };
            let said: String = said.chars().take(100).collect();
            vec![
                r.agent.clone(),
                outcome_word(r.outcome).to_owned(),
                format!("{} ms", r.duration_ms),
                said,
            ]
        })
        .collect();
    table(&["AGENT", "OUTCOME", "TOOK", "RESULT"], &rows)
}

fn catalog_table(p: &AgentPacks) -> String {
    let mut rows = Vec::new();
    for pack in &p.packs {
        for probe in &pack.pack.probes {
            let params: Vec<String> = probe
                .params
                .iter()
                .map(|a| {
                    let mut s = a.name.clone();
                    if a.required {
                        s.push('*');
                    }
                    if let Some(d) = &a.default {
                        s.push_str(&format!("={d}"));
                    }
                    s
                })
                .collect();
            rows.push(vec![
                probe.name.clone(),
                pack.state.clone(),
                params.join(" "),
                probe.description.clone(),
            ]);
        }
        if pack.pack.probes.is_empty() {
            rows.push(vec![
                format!("{} (pack)", pack.pack.name),
                pack.state.clone(),
                String::new(),
                pack.pack.reason.clone().unwrap_or_default(),
            ]);
        }
    }
    let mut text = table(
        &["PROBE", "PACK STATE", "PARAMS (* required)", "WHAT"],
        &rows,
    );
    for pack in p.packs.iter().filter(|x| x.state != "ready") {
        text.push_str(&format!(
            "\npack {}: {}{}",
            pack.pack.name,
            pack.state,
            match (pack.state.as_str(), &pack.pack.reason) {
                ("failed", Some(r)) => format!(" ({r})"),
                ("pending", _) => format!(
                    " (needs {}: muster agents packs {} approve {})",
                    pack.pack.needs.join(", "),
                    p.agent,
                    pack.pack.name
                ),
                _ => String::new(),
            }
        ));
    }
    text
}
