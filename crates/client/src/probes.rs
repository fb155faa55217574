//! Probes (SPEC §15): what an agent offers, running a probe on one agent or many,
//! deciding on packs; and integrations, the probes the hub runs against external
//! HTTPS APIs.

use crate::{HubClient, Result, path_segment};

impl HubClient {
    /// What an agent offers, with each pack's state (SPEC §15).
    pub async fn agent_probes(&self, agent: &str) -> Result<muster_proto::AgentPacks> {
        self.get(&format!("/api/v1/agents/{}/probes", path_segment(agent)))
            .await
    }

    /// Run a probe on one agent.
    pub async fn run_probe(
        &self,
        agent: &str,
        probe: &str,
        req: &muster_proto::RunProbeRequest,
    ) -> Result<muster_proto::ProbeRun> {
        self.post(
            &format!(
                "/api/v1/agents/{}/probes/{}",
                path_segment(agent),
                path_segment(probe)
            ),
            req,
        )
        .await
    }

    /// Run a probe on every agent `req.agents` / `req.label` select.
    pub async fn run_probes(
        &self,
        probe: &str,
        req: &muster_proto::RunProbeRequest,
    ) -> Result<Vec<muster_proto::ProbeRun>> {
        Ok(self
            .post::<_, muster_proto::ProbeRunList>(
                &format!("/api/v1/probes/{}", path_segment(probe)),
                req,
            )
            .await?
            .runs)
    }

    /// `approve` or `deny` an agent's pack (admin).
    pub async fn decide_pack(
        &self,
        agent: &str,
        pack: &str,
        decision: &str,
    ) -> Result<muster_proto::AgentPacks> {
        self.post(
            &format!(
                "/api/v1/agents/{}/packs/{}/{decision}",
                path_segment(agent),
                path_segment(pack)
            ),
            &serde_json::json!({}),
        )
        .await
    }

    /// Create an integration (admin); its secret is never sent back.
    pub async fn create_integration(
        &self,
        req: &muster_proto::CreateIntegrationRequest,
    ) -> Result<muster_proto::IntegrationInfo> {
        self.post("/api/v1/integrations", req).await
    }

    pub async fn list_integrations(&self) -> Result<Vec<muster_proto::IntegrationInfo>> {
        Ok(self
            .get::<muster_proto::IntegrationList>("/api/v1/integrations")
            .await?
            .integrations)
    }

    pub async fn integration(&self, name: &str) -> Result<muster_proto::IntegrationInfo> {
        self.get(&format!("/api/v1/integrations/{}", path_segment(name)))
            .await
    }

    pub async fn remove_integration(&self, name: &str) -> Result<muster_proto::IntegrationInfo> {
        let path = format!("/api/v1/integrations/{}", path_segment(name));
        let req = self.http.delete(self.url(&path));
        Self::decode(self.send(req, None).await?).await
    }

    /// "Test connection" (admin): the outcome, also stored as the status.
    pub async fn test_integration(
        &self,
        name: &str,
    ) -> Result<muster_proto::IntegrationTestResult> {
        let path = format!("/api/v1/integrations/{}/test", path_segment(name));
        self.post(&path, &serde_json::json!({})).await
    }

    /// Run one of an integration's probes (member).
    pub async fn run_integration_probe(
        &self,
        name: &str,
        probe: &str,
        req: &muster_proto::RunIntegrationProbeRequest,
    ) -> Result<muster_proto::IntegrationProbeResult> {
        let path = format!(
            "/api/v1/integrations/{}/probes/{}",
            path_segment(name),
            path_segment(probe)
        );
        self.post(&path, req).await
    }
}
