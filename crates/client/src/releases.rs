//! Agent releases (SPEC §10): what the hub offers, downloading it, publishing one,
//! and an agent's report of its own update.

use std::time::Duration;

use muster_proto::{LatestRelease, ReleaseInfo, ReleaseList};

use crate::{ClientError, HubClient, Result, path_segment};

impl HubClient {
    /// The release the hub offers for `os`/`arch` (`GET /api/v1/agent/latest`):
    /// exactly `version` when given, else the newest published.
    pub async fn release_for(
        &self,
        os: &str,
        arch: &str,
        version: Option<&str>,
    ) -> Result<LatestRelease> {
        let mut path = format!(
            "/api/v1/agent/latest?os={}&arch={}",
            path_segment(os),
            path_segment(arch)
        );
        if let Some(v) = version {
            path.push_str(&format!("&version={}", path_segment(v)));
        }
        self.get(&path).await
    }

    /// Report a step of a self-update the calling agent ran outside its session.
    pub async fn report_update(&self, report: &muster_proto::UpdateReport) -> Result<()> {
        let req = self
            .http
            .post(self.url("/api/v1/agent/update-status"))
            .json(report);
        Self::success(self.send(req, None).await?).await.map(drop)
    }

    /// GET `path` and stream the body into `out`, refusing more than `max_bytes`
    /// (a release binary, whose size the signed manifest announced). Returns how many
    /// bytes were written; `out` is synced. An error answer comes back typed.
    pub async fn download(
        &self,
        path: &str,
        out: &mut std::fs::File,
        max_bytes: u64,
    ) -> Result<u64> {
        use std::io::Write as _;
        let resp = self.send(self.http.get(self.url(path)), None).await?;
        let mut resp = Self::success(resp).await?;
        let mut written = 0u64;
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| ClientError::Protocol(format!("reading the download: {e}")))?
        {
            written += chunk.len() as u64;
            if written > max_bytes {
                return Err(ClientError::Protocol(format!(
                    "the download is larger than the {max_bytes} bytes announced"
                )));
            }
            out.write_all(&chunk)
                .map_err(|e| ClientError::Protocol(format!("writing the download: {e}")))?;
        }
        out.sync_all()
            .map_err(|e| ClientError::Protocol(format!("writing the download: {e}")))?;
        Ok(written)
    }

    /// Publish a binary (admin): `manifest_json` is its signed manifest (compact
    /// JSON, sent in the `muster-manifest` header), `binary` the file's bytes.
    pub async fn publish_release(
        &self,
        version: &str,
        os: &str,
        arch: &str,
        manifest_json: &str,
        binary: Vec<u8>,
    ) -> Result<ReleaseInfo> {
        let req = self
            .http
            .put(self.url(&format!(
                "/api/v1/releases/{}/{}/{}",
                path_segment(version),
                path_segment(os),
                path_segment(arch)
            )))
            .header("muster-manifest", manifest_json)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            // A large binary over a slow link: more than the default 30 s.
            .timeout(Duration::from_secs(900))
            .body(binary);
        Self::decode(self.send(req, None).await?).await
    }

    /// Published releases, newest first.
    pub async fn list_releases(&self) -> Result<Vec<ReleaseInfo>> {
        Ok(self.get::<ReleaseList>("/api/v1/releases").await?.releases)
    }
}
