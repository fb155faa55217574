//! Request bodies, before any handler sees them: refused by their announced length
//! without reading a byte, read whole within a deadline, never more than
//! [`MAX_BODY_BYTES`] kept.
//!
//! Refusing on `Content-Length` before polling the body matters: hyper sends
//! `100 Continue` only when the body is first polled, so a client that asked first
//! gets its 413 instead of an invitation to send megabytes we would cut off (and
//! whose reset could then destroy the 413 before the client read it). A client that
//! sends anyway, or sends chunks without a length, has the rest of its body read and
//! discarded, up to a bound, while the 413 goes out, for the same reason.
//!
//! The deadline is what keeps a connection that sent headers and `{` from being held
//! forever: past it the answer is 408 and the connection closes.
//!
//! Bodies are read before authentication, so what they may hold together is
//! bounded too ([`BodyBudget`]): without it, one address's 256 connections times
//! 32 HTTP/2 streams could keep 512 MiB buffered. A body that finds the budget spent
//! gets 503 with `Retry-After`.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use muster_proto::MAX_BODY_BYTES;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::error::ApiFailure;

/// Most a refused body is read (and thrown away) so its 413 reaches the client.
const DRAIN_MAX_BYTES: usize = 4 * 1024 * 1024;

/// Bytes of request bodies held at once, in all: 64 MiB (a thousand full bodies).
const BUDGET_BYTES: usize = 64 * 1024 * 1024;
/// The budget is counted in KiB, so a permit count fits a `u32`.
const UNIT: usize = 1024;

/// How long bodies may take, and how much of them the hub holds at once.
#[derive(Clone)]
pub struct BodyBudget {
    /// `--request-body-timeout`.
    pub timeout: Duration,
    bytes: Arc<Semaphore>,
}

impl BodyBudget {
    pub fn new(timeout: Duration) -> Self {
        BodyBudget {
            timeout,
            bytes: Arc::new(Semaphore::new(BUDGET_BYTES / UNIT)),
        }
    }
}

/// Middleware: bound the request body (see the module doc).
pub async fn bound_body(
    State(budget): State<BodyBudget>,
    request: Request,
    next: Next,
) -> Response {
    let deadline = Instant::now() + budget.timeout;
    let (parts, mut body) = request.into_parts();
    let announced = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        // A client waiting for `100 Continue` sends nothing more: leave the body
        // unread, so hyper never invites it.
        let waits = parts
            .headers
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        if !waits {
            drain(body, deadline);
        }
        return ApiFailure::too_large().into_response();
    }
    // Bodiless requests (GETs, WebSocket upgrades) pass untouched.
    if body.is_end_stream() {
        return next.run(Request::from_parts(parts, body)).await;
    }
    let mut kept = Vec::new();
    // Held until the handler is done with the body.
    let mut held = Vec::new();
    loop {
        let frame = tokio::time::timeout_at(deadline, next_frame(&mut body)).await;
        match frame {
            Err(_) => return ApiFailure::body_timeout().into_response(),
            Ok(None) => break,
            // The client broke the body off (a reset, bad chunk framing): it will
            // not read an answer, but give it a well-formed one.
            Ok(Some(Err(_))) => {
                return ApiFailure::bad_request("the request body could not be read")
                    .into_response();
            }
            Ok(Some(Ok(data))) => {
                if kept.len() + data.len() > MAX_BODY_BYTES {
                    drain(body, deadline);
                    return ApiFailure::too_large().into_response();
                }
                let units = u32::try_from(data.len().div_ceil(UNIT)).unwrap_or(u32::MAX);
                match budget.bytes.clone().try_acquire_many_owned(units) {
                    Ok(permit) => held.push(permit),
                    Err(_) => {
                        drain(body, deadline);
                        return ApiFailure::unavailable(
                            "the hub is reading too many request bodies; retry shortly",
                            Some(rand::random_range(1..=3)),
                        )
                        .into_response();
                    }
                }
                kept.extend_from_slice(&data);
            }
        }
    }
    let response = next.run(Request::from_parts(parts, Body::from(kept))).await;
    drop(held);
    response
}

/// The next chunk of body data (trailers are skipped); `None` at the end.
async fn next_frame(body: &mut Body) -> Option<Result<Bytes, axum::Error>> {
    loop {
        let frame = std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await?;
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    return Some(Ok(data));
                }
            }
            Err(e) => return Some(Err(e)),
        }
    }
}

/// Read and discard the rest of a refused body in the background, up to
/// [`DRAIN_MAX_BYTES`] and `until`, so the connection is not reset under a client
/// still sending (a reset can discard the answer before the client reads it).
fn drain(mut body: Body, until: Instant) {
    tokio::spawn(async move {
        let mut left = DRAIN_MAX_BYTES;
        while let Ok(Some(Ok(data))) = tokio::time::timeout_at(until, next_frame(&mut body)).await {
            match left.checked_sub(data.len()) {
                Some(rest) => left = rest,
                None => break,
            }
        }
    });
}
