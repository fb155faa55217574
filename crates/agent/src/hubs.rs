//! Which hub an agent talks to (SPEC §12): the hub URLs it was given, checked once
//! when given; the order it tries them in (the one that worked last first, the one
//! that just failed last); and one call to the hub that falls through the list.
//!
//! Invariant: only a hub that cannot be reached sends the agent to the next one. An
//! answer, a refusal included, is the fleet's answer (every hub of a fleet shares
//! one database and one CA), so it is returned as it is, never retried elsewhere.

use std::future::Future;
use std::time::Duration;

use muster_client::{ClientError, HubClient};

use crate::AgentError;

/// The longest pause between two hubs of one round: enough to spread a fleet whose
/// hub died at one instant over the others, short enough that the next hub is
/// tried at once rather than after a backoff.
pub const BETWEEN_HUBS_MAX: Duration = Duration::from_millis(500);

/// The hub URLs in `values` (each may hold several, comma-separated), checked and
/// normalised (no trailing `/`), each once, in the order given. `source` names
/// where they came from (`--hub`, `MUSTER_HUB_URL`) for the one-line error.
pub fn parse_list(values: &[String], source: &str) -> Result<Vec<String>, AgentError> {
    let mut out: Vec<String> = Vec::new();
    for value in values.iter().flat_map(|v| v.split(',')) {
        let url = value.trim().trim_end_matches('/');
        if url.is_empty() {
            return Err(AgentError::Usage(format!(
                "{source}: an empty hub URL (expected https://HOST[:PORT], several separated by commas)"
            )));
        }
        check_url(url).map_err(|why| {
            AgentError::Usage(format!(
                "{source}: invalid hub URL {url:?}: {why} (expected https://HOST[:PORT])"
            ))
        })?;
        if !out.iter().any(|u| u == url) {
            out.push(url.to_owned());
        }
    }
    Ok(out)
}

fn check_url(url: &str) -> Result<(), &'static str> {
    let parsed = reqwest::Url::parse(url).map_err(|_| "not a URL")?;
    if parsed.scheme() != "https" {
        return Err("the scheme must be https");
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("no host");
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("credentials do not belong in the URL");
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err("nothing may follow the host and port");
    }
    Ok(())
}

/// The order to try hubs in: `preferred` first, then `all` in the operator's order,
/// each once; `avoid` (the hub a session was just lost with) goes last, so the next
/// attempt is made with another hub.
pub fn order(preferred: &str, all: &[String], avoid: Option<&str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(all.len() + 1);
    for url in std::iter::once(preferred).chain(all.iter().map(String::as_str)) {
        if !url.is_empty() && !out.iter().any(|u| u == url) {
            out.push(url.to_owned());
        }
    }
    if let Some(avoid) = avoid
        && let Some(i) = out.iter().position(|u| u == avoid)
    {
        let lost = out.remove(i);
        out.push(lost);
    }
    out
}

/// A random pause in [0, [`BETWEEN_HUBS_MAX`]) before trying the next hub of a round.
pub fn between_hubs() -> Duration {
    Duration::from_millis(rand::random_range(0..BETWEEN_HUBS_MAX.as_millis() as u64))
}

/// A random delay in [0, `within`), as a hub that is stopping asks (full jitter:
/// its whole fleet must not come back at one moment).
pub fn within(within: Duration) -> Duration {
    let ms = within.as_millis().max(1) as u64;
    Duration::from_millis(rand::random_range(0..ms))
}

/// Whether trying another hub can help with `e`: the hub was not reached, or not
/// answered (a hub stopping or overloaded), not a refusal by the fleet.
pub fn unreachable(e: &ClientError) -> bool {
    matches!(e, ClientError::Unreachable { .. })
        || matches!(e.code(), Some(muster_proto::codes::UNAVAILABLE))
}

/// `call` against each of `hubs` in turn until one answers: that answer (success
/// or refusal), or the last hub's error when none could be reached.
pub async fn first_answer<T, Fut>(
    hubs: &[String],
    client: impl Fn(&str) -> Result<HubClient, ClientError>,
    call: impl Fn(HubClient) -> Fut,
) -> Result<T, ClientError>
where
    Fut: Future<Output = Result<T, ClientError>>,
{
    first_answer_from(hubs, client, call).await.1
}

/// [`first_answer`], with the URL of the hub that gave it (the last one tried when
/// none answered).
pub async fn first_answer_from<T, Fut>(
    hubs: &[String],
    client: impl Fn(&str) -> Result<HubClient, ClientError>,
    call: impl Fn(HubClient) -> Fut,
) -> (String, Result<T, ClientError>)
where
    Fut: Future<Output = Result<T, ClientError>>,
{
    let mut last = (
        String::new(),
        Err(ClientError::InvalidUrl("no hub URL configured".to_owned())),
    );
    for (i, url) in hubs.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(between_hubs()).await;
        }
        let answer = match client(url) {
            Ok(c) => call(c).await,
            Err(e) => return (url.clone(), Err(e)),
        };
        match answer {
            Err(e) if unreachable(&e) => {
                if hubs.len() > 1 {
                    tracing::info!(hub = %url, error = %e, "hub not reachable; trying the next");
                }
                last = (url.clone(), Err(e));
            }
            other => return (url.clone(), other),
        }
    }
    last
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn the_preferred_hub_comes_first_and_the_lost_one_last() {
        let all = v(&["https://a", "https://b", "https://c"]);
        assert_eq!(order("https://a", &all, None), all);
        assert_eq!(
            order("https://b", &all, None),
            v(&["https://b", "https://a", "https://c"])
        );
        assert_eq!(
            order("https://b", &all, Some("https://b")),
            v(&["https://a", "https://c", "https://b"])
        );
        // An old config: hub_url alone.
        assert_eq!(order("https://a", &[], None), v(&["https://a"]));
        assert_eq!(
            order("https://a", &[], Some("https://a")),
            v(&["https://a"])
        );
        // A hub_url an operator edited in, not in the list, is still tried first.
        assert_eq!(
            order("https://z", &all, None),
            v(&["https://z", "https://a", "https://b", "https://c"])
        );
    }

    #[test]
    fn jitter_stays_in_its_bounds() {
        let pauses: Vec<Duration> = (0..500).map(|_| between_hubs()).collect();
        assert!(pauses.iter().all(|d| *d < BETWEEN_HUBS_MAX));
        assert!(pauses.iter().any(|d| *d != pauses[0]), "jittered");
        let n = Duration::from_millis(10_000);
        let delays: Vec<Duration> = (0..500).map(|_| within(n)).collect();
        assert!(delays.iter().all(|d| *d < n));
        assert!(
            delays.iter().any(|d| *d < Duration::from_millis(2_500)),
            "full jitter reaches the start of the window"
        );
        assert!(delays.iter().any(|d| *d > Duration::from_millis(7_500)));
        assert_eq!(within(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn hub_lists_are_checked_and_name_their_source() {
        let got = parse_list(
            &v(&["https://a:8443/", "https://b:8443,https://a:8443"]),
            "--hub",
        )
        .unwrap();
        assert_eq!(got, v(&["https://a:8443", "https://b:8443"]));
        for bad in [
            "http://a",
            "https://a,,https://b",
            "a:8443",
            "https://a?x=1",
            "https://u:p@a",
        ] {
            let err = parse_list(&v(&["https://ok", bad]), "--hub")
                .unwrap_err()
                .to_string();
            assert!(err.starts_with("--hub: "), "{bad}: {err}");
            assert!(!err.contains('\n'), "{err}");
        }
        let err = parse_list(&v(&["ftp://x"]), "MUSTER_HUB_URL")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("MUSTER_HUB_URL") && err.contains("https"),
            "{err}"
        );
    }
}
