//! `GET /api/v1/events`: the fleet's changes as server-sent events, for the
//! dashboard's pages (SPEC §13). The format is in docs/ARCHITECTURE.md ("Live
//! events and the fleet's numbers"); coalescing and the bounds on watchers are
//! `events.rs`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;

use crate::error::{ApiFailure, ApiResult};
use crate::events::Scope;
use crate::live::fleet_counts;
use crate::principal::Principal;
use crate::rules::hostname_matches;
use crate::state::AppState;

/// Open a stream. The first frames are the fleet's counts now (`agents` with no
/// agents, and `approvals`), so a page starts from fresh numbers; then changes.
#[utoipa::path(get, path = "/api/v1/events", tag = "agents", summary = "The fleet's changes as server-sent events", responses((status = 200, description = "an endless event stream", body = String, content_type = "text/event-stream"), (status = 503, description = "too many streams are open; see Retry-After", body = muster_proto::ApiError)), security(("api_key" = ["member"]), ("session" = ["member"])))]
pub async fn events(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let scope: Option<Scope> = match &principal {
        Principal::Member(key) => key.agents_glob.clone().map(|glob| {
            let scope: Scope = Arc::new(move |name: &str| hostname_matches(&glob, name));
            scope
        }),
        _ => None,
    };
    let scoped = scope.is_some();
    let admin = principal.is_admin();
    let sub = state.events.subscribe(scope, admin).ok_or_else(|| {
        ApiFailure::unavailable("too many live event streams are open; retry later", Some(5))
    })?;
    if !scoped {
        let summary = fleet_counts(&state).await?;
        let mut counts = summary.counts;
        if !admin {
            // The approval queue is the admins' (its route is admin-only).
            counts.pending = 0;
        }
        sub.send(
            "agents",
            &serde_json::json!({"agents": [], "counts": counts}),
        );
        if admin {
            sub.send("approvals", &serde_json::json!({"pending": counts.pending}));
        }
    }
    let stream = futures_util::stream::unfold(sub, |mut sub| async move {
        let frame = sub.next().await?;
        let event = Event::default().event(frame.event).data(&*frame.data);
        Some((Ok(event), sub))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
