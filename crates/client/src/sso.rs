//! Single sign-on settings and the groups it admits (SPEC §14), for admins.

use crate::{HubClient, Result, path_segment};

impl HubClient {
    /// Single sign-on as the hub has it (admin).
    pub async fn sso(&self) -> Result<muster_proto::SsoInfo> {
        self.get("/api/v1/sso").await
    }

    /// Set the single sign-on provider (admin).
    pub async fn set_sso(
        &self,
        req: &muster_proto::SetSsoRequest,
    ) -> Result<muster_proto::SsoInfo> {
        let req = self.http.put(self.url("/api/v1/sso")).json(req);
        Self::decode(self.send(req, None).await?).await
    }

    /// Turn single sign-on off (admin).
    pub async fn clear_sso(&self) -> Result<muster_proto::SsoInfo> {
        let req = self.http.delete(self.url("/api/v1/sso"));
        Self::decode(self.send(req, None).await?).await
    }

    pub async fn list_sso_groups(&self) -> Result<Vec<muster_proto::SsoGroupInfo>> {
        Ok(self
            .get::<muster_proto::SsoGroupList>("/api/v1/sso/groups")
            .await?
            .groups)
    }

    pub async fn add_sso_group(
        &self,
        req: &muster_proto::CreateSsoGroupRequest,
    ) -> Result<muster_proto::SsoGroupInfo> {
        self.post("/api/v1/sso/groups", req).await
    }

    pub async fn remove_sso_group(&self, id: &str) -> Result<muster_proto::SsoGroupInfo> {
        let path = format!("/api/v1/sso/groups/{}", path_segment(id));
        let req = self.http.delete(self.url(&path));
        Self::decode(self.send(req, None).await?).await
    }
}
