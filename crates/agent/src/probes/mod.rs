//! Probes and packs on the agent (SPEC §15): what this agent offers ([`catalog`]),
//! and running one probe the hub asked for ([`run`]).
//!
//! Invariants: a probe only reads (files under [`ProbeSources`], or a read-only
//! command such as `systemctl show`), never changes the machine. Every parameter is
//! validated against the probe's declaration before the probe starts; every run has
//! a timeout; every answer fits in [`muster_proto::PROBE_OUTPUT_MAX`] bytes of JSON,
//! cut and marked `truncated` otherwise.

mod cap;
mod inflight;
mod params;
mod sources;
mod system;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use muster_proto::{PackHealth, PackInfo, ProbeInfo, ProbeOutcome};

pub use inflight::{InFlight, MAX_IN_FLIGHT, MAX_TIMEOUT};
pub use params::{ParamKind, ParamSpec, Params};
pub use sources::ProbeSources;

/// What a probe's body yields: its result as JSON, or a one-line reason.
pub type ProbeResult = Result<serde_json::Value, String>;

/// A running probe body.
pub type ProbeFuture = Pin<Box<dyn Future<Output = ProbeResult> + Send>>;

/// Starts a probe with validated parameters; owned inputs so it can outlive the caller.
type Runner = Arc<dyn Fn(ProbeSources, Params) -> ProbeFuture + Send + Sync>;

/// Which end of a list survives when a result is cut at the output cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// The first entries (lists ordered by importance: top processes, mounts).
    Head,
    /// The last entries (a log tail: the newest lines matter most).
    Tail,
}

/// One probe of a pack: its public description and its body.
#[derive(Clone)]
pub struct Probe {
    /// `<pack>.<probe>`.
    pub name: &'static str,
    pub description: &'static str,
    pub params: &'static [ParamSpec],
    pub keep: Keep,
    runner: Runner,
}

impl Probe {
    /// A probe whose body reads files or sleeps: it runs on a blocking thread.
    pub fn blocking<T, F>(
        name: &'static str,
        description: &'static str,
        params: &'static [ParamSpec],
        body: F,
    ) -> Probe
    where
        T: serde::Serialize + Send + 'static,
        F: Fn(&ProbeSources, &Params) -> Result<T, String> + Copy + Send + Sync + 'static,
    {
        let runner: Runner = Arc::new(move |sources, params| {
            Box::pin(async move {
                match tokio::task::spawn_blocking(move || body(&sources, &params)).await {
                    Ok(out) => out.and_then(to_json),
                    Err(e) => Err(format!("the probe stopped unexpectedly: {e}")),
                }
            })
        });
        Probe {
            name,
            description,
            params,
            keep: Keep::Head,
            runner,
        }
    }

    /// A probe whose body is async (it waits on a child process).
    pub fn asynchronous<T, F, Fut>(
        name: &'static str,
        description: &'static str,
        params: &'static [ParamSpec],
        body: F,
    ) -> Probe
    where
        T: serde::Serialize + Send + 'static,
        Fut: Future<Output = Result<T, String>> + Send + 'static,
        F: Fn(ProbeSources, Params) -> Fut + Send + Sync + 'static,
    {
        let runner: Runner = Arc::new(move |sources, params| {
            let fut = body(sources, params);
            Box::pin(async move { fut.await.and_then(to_json) })
        });
        Probe {
            name,
            description,
            params,
            keep: Keep::Head,
            runner,
        }
    }

    /// Keep this end of its lists when the result is cut.
    pub fn keeping(mut self, keep: Keep) -> Probe {
        self.keep = keep;
        self
    }

    /// How the probe shows in the catalog.
    pub fn info(&self) -> ProbeInfo {
        ProbeInfo {
            name: self.name.to_owned(),
            description: self.description.to_owned(),
            params: self.params.iter().map(ParamSpec::info).collect(),
        }
    }
}

fn to_json<T: serde::Serialize>(value: T) -> ProbeResult {
    serde_json::to_value(value).map_err(|e| format!("cannot encode the result: {e}"))
}

/// A group of probes with its own version, privileges and self-check. Adding a
/// pack is one implementation of this trait and one line in [`packs`].
pub trait Pack: Send + Sync {
    fn name(&self) -> &'static str;
    fn version(&self) -> String;
    /// Privileges beyond the baseline (e.g. `journal`): the hub holds the pack
    /// pending until an admin grants them.
    fn needs(&self) -> &'static [&'static str];
    /// Whether the pack can work on this machine; `Err` carries the reason.
    fn self_check(&self, sources: &ProbeSources) -> Result<(), String>;
    fn probes(&self) -> Vec<Probe>;
}

/// The built-in packs.
pub fn packs() -> Vec<Box<dyn Pack>> {
    vec![Box::new(system::System)]
}

/// Every pack with its probes and the result of its self-check, as sent in `hello`.
pub fn catalog(sources: &ProbeSources) -> Vec<PackInfo> {
    packs()
        .iter()
        .map(|pack| pack_info(pack.as_ref(), sources))
        .collect()
}

fn pack_info(pack: &dyn Pack, sources: &ProbeSources) -> PackInfo {
    let check = pack.self_check(sources);
    PackInfo {
        name: pack.name().to_owned(),
        version: pack.version(),
        needs: pack.needs().iter().map(|n| (*n).to_owned()).collect(),
        health: if check.is_ok() {
            PackHealth::Ready
        } else {
            PackHealth::Failed
        },
        reason: check.err(),
        probes: pack.probes().iter().map(Probe::info).collect(),
    }
}

/// The heartbeat's problem lines for packs whose self-check failed.
pub fn problems(catalog: &[PackInfo]) -> Vec<String> {
    catalog
        .iter()
        .filter(|p| p.health == PackHealth::Failed)
        .map(|p| {
            let reason = p.reason.as_deref().unwrap_or("self-check failed");
            format!("pack {}: {reason}", p.name)
        })
        .collect()
}

/// The catalog, its self-checks re-run at most once per `every`: heartbeats read it
/// often, and a check reads files.
#[derive(Debug)]
pub struct SelfChecks {
    every: Duration,
    checked: Option<(Instant, Vec<PackInfo>)>,
}

impl SelfChecks {
    pub fn new(every: Duration) -> SelfChecks {
        SelfChecks {
            every,
            checked: None,
        }
    }

    /// The catalog as of the last check, checking again when it is older than `every`.
    pub fn catalog(&mut self, sources: &ProbeSources) -> &[PackInfo] {
        let stale = self
            .checked
            .as_ref()
            .is_none_or(|(at, _)| at.elapsed() >= self.every);
        if stale {
            self.checked = Some((Instant::now(), catalog(sources)));
        }
        self.checked.as_ref().map_or(&[], |(_, c)| c.as_slice())
    }
}

/// How a probe run ended, ready for a `probe_result` frame.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeAnswer {
    pub outcome: ProbeOutcome,
    pub result: Option<serde_json::Value>,
    pub error: Option<String>,
    /// The result was cut at [`muster_proto::PROBE_OUTPUT_MAX`].
    pub truncated: bool,
}

impl ProbeAnswer {
    pub fn error(reason: impl Into<String>) -> ProbeAnswer {
        ProbeAnswer {
            outcome: ProbeOutcome::Error,
            result: None,
            error: Some(reason.into()),
            truncated: false,
        }
    }

    fn timeout(timeout: Duration) -> ProbeAnswer {
        ProbeAnswer {
            outcome: ProbeOutcome::Timeout,
            result: None,
            error: Some(format!("no result within {} ms", timeout.as_millis())),
            truncated: false,
        }
    }
}

/// Run `probe` with `params`, within `timeout`. Never fails: an unknown probe, a
/// bad parameter or a failing probe is an `Error` answer with a one-line reason.
pub async fn run(
    sources: &ProbeSources,
    probe: &str,
    params: &BTreeMap<String, String>,
    timeout: Duration,
) -> ProbeAnswer {
    let Some(found) = packs()
        .iter()
        .flat_map(|pack| pack.probes())
        .find(|p| p.name == probe)
    else {
        return ProbeAnswer::error(format!("unknown probe {probe:?}"));
    };
    let params = match Params::validate(found.params, params) {
        Ok(params) => params,
        Err(reason) => return ProbeAnswer::error(reason),
    };
    let body = (found.runner)(sources.clone(), params);
    match tokio::time::timeout(timeout, body).await {
        Err(_) => ProbeAnswer::timeout(timeout),
        Ok(Err(reason)) => ProbeAnswer::error(reason),
        Ok(Ok(mut value)) => {
            let truncated = cap::fit(&mut value, muster_proto::PROBE_OUTPUT_MAX, found.keep);
            ProbeAnswer {
                outcome: ProbeOutcome::Ok,
                result: Some(value),
                error: None,
                truncated,
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests;
