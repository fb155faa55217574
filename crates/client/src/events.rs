//! The hub's live event stream (`GET /api/v1/events`, server-sent events).

use std::time::Duration;

use crate::{ClientError, HubClient, Result};

impl HubClient {
    /// `GET /api/v1/events`: the hub's live event stream (docs/ARCHITECTURE.md,
    /// "Live events"). It lasts until dropped or until the hub stops.
    pub async fn events(&self) -> Result<EventStream> {
        let req = self
            .http
            .get(self.url("/api/v1/events"))
            .timeout(Duration::from_secs(365 * 24 * 3600));
        let resp = Self::success(self.send(req, None).await?).await?;
        Ok(EventStream {
            resp,
            buf: Vec::new(),
        })
    }
}

/// A live event stream from [`HubClient::events`].
pub struct EventStream {
    resp: reqwest::Response,
    /// Bytes received and not yet parsed into events (a chunk may end mid-character).
    buf: Vec<u8>,
}

impl EventStream {
    /// The next event as (name, JSON data); `None` when the stream ended.
    /// Keep-alive comments are skipped.
    pub async fn next(&mut self) -> Result<Option<(String, serde_json::Value)>> {
        loop {
            while let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let raw: Vec<u8> = self.buf.drain(..end + 2).collect();
                let block = String::from_utf8_lossy(&raw);
                let mut name = None;
                let mut data = None;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        name = Some(v.to_owned());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data =
                            Some(serde_json::from_str(v).map_err(|e| {
                                ClientError::Protocol(format!("an event's data: {e}"))
                            })?);
                    }
                }
                if let (Some(name), Some(data)) = (name, data) {
                    return Ok(Some((name, data)));
                }
            }
            let chunk = self
                .resp
                .chunk()
                .await
                .map_err(|e| ClientError::Protocol(format!("reading the event stream: {e}")))?;
            match chunk {
                Some(bytes) => self.buf.extend_from_slice(&bytes),
                None => return Ok(None),
            }
        }
    }
}
