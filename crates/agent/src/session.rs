//! `muster agent` (SPEC §9, §12): keep one live session with a hub, heartbeat at the
//! interval the hub sets, report problems the agent really detects, and reconnect
//! when the link drops: to the hub that worked last first, else to the others it
//! was given in turn (a short random pause between two), with exponential backoff
//! and jitter between rounds, and to another hub first after losing one.
//!
//! Invariants: a revoked or unknown agent stops at once and for good (non-zero exit,
//! no retry loop hammering the hub); credentials are re-read from the config dir
//! before every connection, so a renewal or re-enrollment is picked up.

use std::future::Future;
use std::time::{Duration, Instant};

use muster_client::{ClientIdentity, Session, SessionError, connect_session};
use muster_proto::{AgentHealth, AgentMessage, HubMessage, PROTOCOL_VERSION};

use crate::AgentError;
use crate::configdir::{ConfigDir, Credentials};
use crate::facts::{FactSources, collect};
use crate::probes::{InFlight, ProbeSources, SelfChecks};
use crate::renew::HubClock;

/// Clock difference with the hub beyond which the agent reports itself degraded.
const MAX_SKEW: Duration = Duration::from_secs(60);
/// How often a renewal waiting for approval asks again.
const PENDING_POLL: Duration = Duration::from_secs(5);
/// Wait before retrying a failed renewal.
const RENEW_RETRY: Duration = Duration::from_secs(15);
/// A session that lasted this long resets the backoff.
const STABLE_SESSION: Duration = Duration::from_secs(30);
/// How often the packs' self-checks run again (not at every heartbeat: they read files).
const SELF_CHECK_EVERY: Duration = Duration::from_secs(60);

/// Exponential backoff with full jitter between 1 s and 60 s.
#[derive(Debug, Default)]
pub struct Backoff {
    attempt: u32,
}

impl Backoff {
    /// The next delay: uniform in [1 s, min(60 s, 2^(n+1) s)], so even the first
    /// retries of a whole fleet spread over a second rather than landing together.
    pub fn next_delay(&mut self) -> Duration {
        let cap_ms = 1000u64
            .saturating_mul(1 << (self.attempt + 1).min(6))
            .min(60_000);
        self.attempt = self.attempt.saturating_add(1);
        Duration::from_millis(rand::random_range(1000..=cap_ms))
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// How a session ended.
enum Ended {
    /// Our own shutdown signal.
    Stopped,
    /// The hub revoked these credentials.
    Revoked(String),
    /// The hub refused the session for good (old protocol, cloned identity…).
    Refused(String),
    /// The hub is restarting: come back within this.
    HubShutdown(Duration),
    /// The link broke or the hub went silent.
    Lost(String),
    /// A new binary is installed: the session is closed for its trial run.
    Trial(crate::update::Trial),
}

/// What the agent carries from one session to the next.
struct Carried {
    probes: Probes,
    updates: Updates,
    /// The hub's clock as last heard: certificate expiry and renewal are judged on it.
    clock: HubClock,
}

/// Self-updates in flight, and the reports that wait for a session: kept across
/// reconnects so no step goes unreported.
struct Updates {
    tx: tokio::sync::mpsc::UnboundedSender<AgentMessage>,
    rx: tokio::sync::mpsc::UnboundedReceiver<AgentMessage>,
    /// The update being prepared (download, verify, swap), if any.
    task: Option<tokio::task::JoinHandle<Option<crate::update::Trial>>>,
}

impl Updates {
    fn new() -> Updates {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        Updates { tx, rx, task: None }
    }

    /// Start preparing `order`, unless one is already under way.
    fn start(&mut self, order: crate::update::Order, creds: &Credentials) {
        use muster_proto::UpdatePhase;
        if self.task.as_ref().is_some_and(|t| !t.is_finished()) {
            let _ = self.tx.send(crate::update::report(
                UpdatePhase::Refused,
                &order.manifest.version,
                "another update is in progress",
            ));
            return;
        }
        let exe = match crate::update::current_exe() {
            Ok(exe) => exe,
            Err(e) => {
                let _ = self.tx.send(crate::update::report(
                    UpdatePhase::Failed,
                    &order.manifest.version,
                    e,
                ));
                return;
            }
        };
        let tx = self.tx.clone();
        let creds = creds.clone();
        self.task = Some(tokio::spawn(async move {
            match crate::update::prepare(&order, &creds, &exe, &tx).await {
                Ok(trial) => Some(trial),
                Err(last) => {
                    let _ = tx.send(last);
                    None
                }
            }
        }));
    }
}

pub async fn run(
    dir: &ConfigDir,
    sources: FactSources,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    // Probes read the host the facts describe (the same hostname and os-release
    // files), through the host's /proc and /sys in a container.
    let probe_sources = ProbeSources::default().with_facts(&sources);
    run_probing(dir, sources, probe_sources, shutdown).await
}

/// [`run`] with the probes reading the host through `probe_sources`.
pub async fn run_probing(
    dir: &ConfigDir,
    sources: FactSources,
    probe_sources: ProbeSources,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    tokio::pin!(shutdown);
    let mut backoff = Backoff::default();
    // The hub the last session was lost with: tried last in the next round.
    let mut avoid: Option<String> = None;
    let mut carried = Carried {
        probes: Probes {
            sources: probe_sources,
            checks: SelfChecks::new(SELF_CHECK_EVERY),
            chosen: None,
        },
        updates: Updates::new(),
        clock: HubClock::default(),
    };
    for r in crate::update::recover(dir) {
        let _ = carried.updates.tx.send(r);
    }
    loop {
        let mut creds = dir
            .load()?
            .ok_or_else(|| AgentError::NotEnrolled(dir.path().to_path_buf()))?;
        // Finish a renewal whose answer was lost before saying hello (the hub has
        // already moved to the next generation), and renew a certificate that
        // expired while we were offline (it cannot open a session any more).
        if crate::renew::pending(dir, &creds)? || crate::renew::expired(&creds, carried.clock)? {
            match crate::renew::renew(dir, &creds, &mut carried.clock).await {
                Ok(renewed) => creds = renewed,
                Err(AgentError::Client(e))
                    if matches!(e.code(), Some(c) if c == muster_proto::codes::RENEWAL_GRACE_EXPIRED
                        || c == muster_proto::codes::AGENT_CLONED
                        || c == muster_proto::codes::AGENT_REVOKED
                        || c == muster_proto::codes::KEY_INVALID) =>
                {
                    return Err(AgentError::Refused(e.to_string()));
                }
                Err(AgentError::Pending { request_id }) => {
                    tracing::warn!(%request_id, "the certificate expired past the renewal grace; the renewal waits for an admin's approval");
                    tokio::select! {
                        _ = &mut shutdown => return Ok(()),
                        _ = tokio::time::sleep(PENDING_POLL) => continue,
                    }
                }
                Err(e) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %e, ?delay, "cannot finish the pending certificate renewal; retrying");
                    tokio::select! {
                        _ = &mut shutdown => return Ok(()),
                        _ = tokio::time::sleep(delay) => continue,
                    }
                }
            }
        }
        let identity = ClientIdentity {
            cert_pem: creds.cert_pem.clone(),
            key_pem: creds.key_pem.clone(),
        };
        let order = crate::hubs::order(
            &creds.config.hub_url,
            &creds.config.hub_urls,
            avoid.as_deref(),
        );
        let connected = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            r = connect_first(&order, &creds, &identity) => r,
        };
        let wait = match connected {
            Ok((session, url)) => {
                let started = Instant::now();
                avoid = None;
                if url != creds.config.hub_url {
                    // Tried first next time, also after a restart. A failed write
                    // changes nothing on disk (the file is replaced atomically).
                    if let Err(e) = dir.set_preferred_hub(&creds.config, &url) {
                        tracing::warn!(error = %e, hub = %url, "cannot record the hub that answered as the preferred one");
                    }
                    creds.config.hub_url = url.clone();
                }
                match drive(session, &creds, dir, &sources, &mut carried, &mut shutdown).await {
                    Ended::Stopped => return Ok(()),
                    Ended::Trial(trial) => {
                        // Returns only when the new binary failed its trial (or we
                        // are stopping): the previous binary is back either way.
                        match crate::update::run_trial(dir, &creds, trial, &mut shutdown).await {
                            crate::update::TrialEnd::RolledBack(report) => {
                                let _ = carried.updates.tx.send(*report);
                                backoff.reset();
                                continue;
                            }
                            crate::update::TrialEnd::Stopped => return Ok(()),
                        }
                    }
                    Ended::Revoked(reason) => {
                        // A re-enrollment on this machine replaced the credentials:
                        // carry on with the new ones instead of stopping.
                        if let Ok(Some(now)) = dir.load()
                            && now.config.agent_key != creds.config.agent_key
                        {
                            tracing::info!(
                                "credentials were replaced in the config dir; reconnecting with them"
                            );
                            backoff.reset();
                            continue;
                        }
                        return Err(AgentError::Revoked(reason));
                    }
                    Ended::Refused(message) => return Err(AgentError::Refused(message)),
                    Ended::HubShutdown(within) => {
                        // Its whole fleet hears this at once: come back spread over
                        // the window it asked for, to another hub first if there is one.
                        backoff.reset();
                        avoid = Some(url);
                        let delay = crate::hubs::within(within);
                        tracing::info!(
                            ?delay,
                            "hub is restarting; reconnecting after a random delay"
                        );
                        delay
                    }
                    Ended::Lost(why) => {
                        if started.elapsed() >= STABLE_SESSION {
                            backoff.reset();
                        }
                        // The next attempt goes to another hub, if there is one.
                        avoid = Some(url);
                        let delay = backoff.next_delay();
                        tracing::warn!(%why, ?delay, "session lost; reconnecting");
                        delay
                    }
                }
            }
            Err(e) if e.is_final() => return Err(AgentError::Session(e)),
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::warn!(error = %e, ?delay, "cannot reach any hub; retrying");
                delay
            }
        };
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// A session with the first of `order` that accepts one, and that hub's URL; between
/// two hubs a short random pause. A refusal of these credentials is the fleet's
/// (every hub shares the database) and ends the round at once; a hub with another
/// CA is skipped, and is final only when no hub could be reached at all.
async fn connect_first(
    order: &[String],
    creds: &Credentials,
    identity: &ClientIdentity,
) -> Result<(Session, String), SessionError> {
    let mut errors: Vec<SessionError> = Vec::new();
    for (i, url) in order.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(crate::hubs::between_hubs()).await;
        }
        match connect_session(url, &creds.ca_pem, identity, &creds.config.agent_key).await {
            Ok(session) => return Ok((session, url.clone())),
            Err(e @ SessionError::Refused { .. }) if e.is_final() => return Err(e),
            Err(e) => {
                if order.len() > 1 {
                    tracing::info!(hub = %url, error = %e, "hub not reachable; trying the next");
                }
                errors.push(e);
            }
        }
    }
    // Every hub failed: report a final error only when every one was final (with one
    // hub, exactly its error), else the last transient one, to retry after a backoff.
    let all_final = errors.iter().all(SessionError::is_final);
    let pick = if all_final {
        errors.pop()
    } else {
        errors.into_iter().rev().find(|e| !e.is_final())
    };
    Err(pick.unwrap_or_else(|| SessionError::Transport("no hub URL configured".to_owned())))
}

/// What the agent offers (SPEC §15), kept across sessions so the self-checks run at
/// most once per [`SELF_CHECK_EVERY`] however often the link drops.
struct Probes {
    sources: ProbeSources,
    checks: SelfChecks,
    /// The packs chosen in the config (`None`: all), set from the credentials of
    /// each session so a new choice is picked up at the next connection.
    chosen: Option<Vec<String>>,
}

impl Probes {
    /// The chosen packs of the catalog, as announced in `hello`.
    fn catalog(&mut self) -> Vec<muster_proto::PackInfo> {
        let chosen = self.chosen.as_deref();
        self.checks
            .catalog(&self.sources)
            .iter()
            .filter(|p| chosen.is_none_or(|c| c.contains(&p.name)))
            .cloned()
            .collect()
    }

    /// `pack <name>: <reason>` for each chosen pack whose self-check failed.
    fn problems(&mut self) -> Vec<String> {
        crate::probes::problems(&self.catalog())
    }
}

async fn drive(
    mut session: Session,
    start_creds: &Credentials,
    dir: &ConfigDir,
    sources: &FactSources,
    carried: &mut Carried,
    shutdown: &mut (impl Future<Output = ()> + Unpin),
) -> Ended {
    let Carried {
        probes,
        updates,
        clock,
    } = carried;
    let mut creds = start_creds.clone();
    let hub_addr = crate::enroll::host_port(&creds.config.hub_url);
    let src = sources.clone();
    let facts = tokio::task::spawn_blocking(move || collect(&src, hub_addr.as_deref()))
        .await
        .unwrap_or_default();
    probes.chosen = creds.config.packs.clone();
    let catalog = probes.catalog();
    let hello = AgentMessage::Hello {
        protocol_version: PROTOCOL_VERSION,
        agent_version: muster_release::running_version(),
        packs: catalog.iter().map(|p| p.name.clone()).collect(),
        facts: Some(facts),
        generation: creds.config.generation,
        catalog,
    };
    if let Err(e) = session.send(&hello).await {
        return Ended::Lost(e.to_string());
    }
    let interval = match tokio::time::timeout(Duration::from_secs(10), session.recv()).await {
        Ok(Ok(Some(HubMessage::Welcome {
            heartbeat_interval_s,
            hub_time_ms,
            ..
        }))) => {
            // One line per session, naming the hub: what an operator reading the
            // journal needs to see where this machine is (re)connected.
            tracing::info!(
                heartbeat_interval_s,
                "connected to {} as {} ({})",
                creds.config.hub_url,
                creds.config.agent_name,
                creds.config.agent_id
            );
            clock.learn(hub_time_ms);
            Duration::from_secs(heartbeat_interval_s.max(1))
        }
        Ok(Ok(Some(HubMessage::Refused { code, message }))) => {
            return Ended::Refused(format!("{message} ({code})"));
        }
        Ok(Ok(Some(HubMessage::Revoked { reason }))) => return Ended::Revoked(reason),
        Ok(Ok(other)) => return Ended::Lost(format!("expected welcome, got {other:?}")),
        Ok(Err(e)) => return Ended::Lost(e.to_string()),
        Err(_) => return Ended::Lost("no welcome from the hub".to_owned()),
    };
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut renew_problem: Option<String> = None;
    let mut skew = skew_line(*clock);
    let first_due = crate::renew::due_in(&creds, *clock).unwrap_or(RENEW_RETRY);
    let renewal = tokio::time::sleep(first_due);
    tokio::pin!(renewal);
    // The hub writes at least every ACK_EVERY heartbeats; silence well past that
    // means the hub (or the path to it) is gone even if TCP has not noticed.
    let silence = interval * (2 * muster_proto::ACK_EVERY as u32 + 1);
    let hub_silent = tokio::time::sleep(silence);
    tokio::pin!(hub_silent);
    // Dropped with this function: probes of a lost session stop.
    let mut in_flight = InFlight::new(probes.sources.clone());
    loop {
        tokio::select! {
            _ = &mut hub_silent => return Ended::Lost("nothing heard from the hub".to_owned()),
            answer = in_flight.next() => {
                if let Err(e) = session.send(&answer).await {
                    return Ended::Lost(e.to_string());
                }
            }
            Some(report) = updates.rx.recv() => {
                if let Err(e) = session.send(&report).await {
                    // Sent again after the next hello.
                    let _ = updates.tx.send(report);
                    return Ended::Lost(e.to_string());
                }
            }
            prepared = async {
                match updates.task.as_mut() {
                    Some(t) => t.await.ok().flatten(),
                    None => std::future::pending().await,
                }
            }, if updates.task.is_some() => {
                updates.task = None;
                if let Some(trial) = prepared {
                    // Say everything up to `installed` before the session closes.
                    while let Ok(report) = updates.rx.try_recv() {
                        if session.send(&report).await.is_err() {
                            let _ = updates.tx.send(report);
                            break;
                        }
                    }
                    session.close().await;
                    return Ended::Trial(trial);
                }
            }
            _ = &mut renewal => {
                // The session carries on over its connection while the certificate
                // is replaced; the hub accepts the previous one until it expires.
                let next = match crate::renew::renew(dir, &creds, clock).await {
                    Ok(renewed) => {
                        creds = renewed;
                        renew_problem = None;
                        crate::renew::due_in(&creds, *clock).unwrap_or(RENEW_RETRY)
                    }
                    Err(AgentError::Client(e)) if e.code() == Some(muster_proto::codes::AGENT_CLONED) => {
                        return Ended::Refused(e.to_string());
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "certificate renewal failed");
                        renew_problem = Some(format!("certificate renewal failing: {e}"));
                        RENEW_RETRY
                    }
                };
                renewal.as_mut().reset(tokio::time::Instant::now() + next.max(Duration::from_millis(500)));
            }
            _ = &mut *shutdown => {
                session.close().await;
                return Ended::Stopped;
            }
            _ = tick.tick() => {
                let packs = probes.problems();
                let problems = problems(dir, skew.as_deref(), renew_problem.as_deref(), &packs);
                let status = if problems.is_empty() { AgentHealth::Ok } else { AgentHealth::Degraded };
                if let Err(e) = session.send(&AgentMessage::Heartbeat { status, problems }).await {
                    return Ended::Lost(e.to_string());
                }
            }
            frame = session.recv() => match frame {
                Ok(Some(HubMessage::Ack { hub_time_ms })) => {
                    hub_silent.as_mut().reset(tokio::time::Instant::now() + silence);
                    clock.learn(hub_time_ms);
                    skew = skew_line(*clock);
                }
                Ok(Some(HubMessage::Revoked { reason })) => return Ended::Revoked(reason),
                Ok(Some(HubMessage::Refused { code, message })) => return Ended::Refused(format!("{message} ({code})")),
                Ok(Some(HubMessage::Shutdown { reconnect_within_ms })) => {
                    return Ended::HubShutdown(Duration::from_millis(reconnect_within_ms));
                }
                Ok(Some(HubMessage::Welcome { .. })) => {}
                Ok(Some(msg @ HubMessage::Update { .. })) => {
                    if let Some(order) = crate::update::Order::from_message(&msg) {
                        tracing::info!(version = %order.manifest.version, "update ordered by the hub");
                        updates.start(order, &creds);
                    }
                }
                Ok(Some(HubMessage::Probe { id, probe, params, timeout_ms })) => {
                    tracing::debug!(id, %probe, "probe asked by the hub");
                    if let Some(busy) = in_flight.start(id, probe, params, timeout_ms)
                        && let Err(e) = session.send(&busy).await
                    {
                        return Ended::Lost(e.to_string());
                    }
                }
                Ok(None) => return Ended::Lost("the hub closed the session".to_owned()),
                Err(e) => return Ended::Lost(e.to_string()),
            },
        }
    }
}

/// A problem line when our clock and the hub's differ by more than [`MAX_SKEW`].
/// Public for the fuzz harness.
#[doc(hidden)]
pub fn skew_problem(hub_time_ms: i64) -> Option<String> {
    let mut clock = HubClock::default();
    clock.learn(hub_time_ms);
    skew_line(clock)
}

fn skew_line(clock: HubClock) -> Option<String> {
    let diff = clock.offset().as_secs();
    (diff > MAX_SKEW.as_secs()).then(|| format!("clock skew of {diff} s against the hub"))
}

/// What the agent can detect about itself right now; `packs` are the failed
/// self-checks' lines.
fn problems(
    dir: &ConfigDir,
    skew: Option<&str>,
    renewal: Option<&str>,
    packs: &[String],
) -> Vec<String> {
    let mut out: Vec<String> = skew.into_iter().chain(renewal).map(str::to_owned).collect();
    out.extend_from_slice(packs);
    if let Err(e) = dir.check_writable() {
        out.push(format!("config dir not writable: {e}"));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_between_one_and_sixty_seconds() {
        let mut b = Backoff::default();
        let first: Vec<Duration> = (0..200).map(|_| Backoff::default().next_delay()).collect();
        assert!(
            first
                .iter()
                .all(|d| *d >= Duration::from_secs(1) && *d <= Duration::from_secs(2))
        );
        assert!(first.iter().any(|d| *d != first[0]), "jittered");
        for _ in 0..20 {
            let d = b.next_delay();
            assert!(d >= Duration::from_secs(1) && d <= Duration::from_secs(60));
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_secs(2));
    }

    #[test]
    fn a_failed_pack_makes_the_agent_degraded() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = ConfigDir::new(tmp.path().join("config"));
        let mut probes = Probes {
            sources: ProbeSources {
                proc_root: tmp.path().join("no-proc"),
                ..ProbeSources::default()
            },
            checks: SelfChecks::new(SELF_CHECK_EVERY),
            chosen: None,
        };
        let packs = probes.problems();
        let all = problems(&dir, None, None, &packs);
        let want = format!(
            "pack system: cannot read {}/loadavg: No such file or directory (os error 2)",
            tmp.path().join("no-proc").display()
        );
        assert!(all.contains(&want), "{all:?}");
        assert_eq!(probes.catalog()[0].name, "system");
        // A pack not chosen is neither announced nor a problem.
        probes.chosen = Some(Vec::new());
        assert!(probes.catalog().is_empty());
        assert!(probes.problems().is_empty());
    }

    #[test]
    fn skew_is_reported_past_a_minute() {
        let now = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
        assert!(skew_problem(now).is_none());
        assert!(skew_problem(now - 120_000).is_some());
    }
}
