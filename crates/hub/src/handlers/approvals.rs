//! The approval queue and trust rules (SPEC §7): list, approve (one, or every
//! request matching a pattern), deny with a reason; create, list and remove rules.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use muster_proto::{
    ApprovalInfo, ApprovalKind, ApprovalList, ApprovalStatus, CreateTrustRule, DecideRequest,
    TrustRuleInfo, TrustRuleList,
};
use muster_store::{PendingRecord, StoreError, TrustRuleRecord};

use crate::audit::AuditExt;
use crate::clock::{now_ms, rfc3339};
use crate::error::{ApiFailure, ApiResult};
use crate::extract::{ApiJson, Caller};
use crate::rules::parse_pattern;
use crate::state::AppState;
use crate::validate::{check_scope, check_text};

fn approval_info(r: &PendingRecord, now: i64) -> ApprovalInfo {
    ApprovalInfo {
        id: r.id.clone(),
        kind: r.kind.parse().unwrap_or(ApprovalKind::Enroll),
        agent_id: r.agent_id.clone(),
        name: r.name.clone(),
        hostname: r.hostname.clone(),
        source: r.source.clone(),
        facts: serde_json::from_str(&r.facts).ok(),
        status: r.status.parse().unwrap_or(ApprovalStatus::Pending),
        reason: r.reason.clone(),
        created_at: rfc3339(r.created_at),
        expires_at: rfc3339(r.expires_at),
        age_s: ((now - r.created_at).max(0) / 1000) as u64,
    }
}

#[utoipa::path(get, path = "/api/v1/approvals", tag = "approvals", summary = "Requests waiting for approval", responses((status = 200, description = "the waiting requests", body = muster_proto::ApprovalList)), security(("api_key" = ["admin"]), ("session" = ["admin"])))]
pub async fn list_approvals(State(state): State<Arc<AppState>>) -> ApiResult<Json<ApprovalList>> {
    let now = now_ms();
    let pending = state.store.list_pending(now).await?;
    Ok(Json(ApprovalList {
        requests: pending.iter().map(|r| approval_info(r, now)).collect(),
    }))
}

async fn decide(
    state: &AppState,
    caller: &Caller,
    id: &str,
    approve: bool,
    reason: Option<&str>,
) -> ApiResult<ApprovalInfo> {
    if let Some(r) = reason {
        check_text("reason", r, true)?;
    }
    let now = now_ms();
    let action = if approve {
        "request.approved"
    } else {
        "request.denied"
    };
    let audit = caller
        .audit(action, format!("request:{id}"))
        .at(now)
        .details(serde_json::json!({ "reason": reason }));
    let decided = state
        .store
        .decide_request(id, approve, reason, &caller.actor(), now, &audit)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiFailure::not_found(format!(
                "no waiting request {id:?} (decided or expired already?)"
            )),
            other => other.into(),
        })?;
    tracing::info!(request_id = %id, approve, "queued request decided");
    state.events.approvals_changed();
    Ok(approval_info(&decided, now))
}

#[utoipa::path(post, path = "/api/v1/approvals/{id}/approve", tag = "approvals", summary = "Approve a waiting request", params(("id" = String, Path, description = "the request's id")), responses((status = 200, description = "the request, approved", body = muster_proto::ApprovalInfo), (status = 404, description = "no such waiting request", body = muster_proto::ApiError), (status = 409, description = "the request was already decided", body = muster_proto::ApiError)), security(("api_key" = ["admin"]), ("session" = ["admin"])))]
pub async fn approve_request(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<ApprovalInfo>> {
    Ok(Json(decide(&state, &caller, &id, true, None).await?))
}

#[utoipa::path(post, path = "/api/v1/approvals/{id}/deny", tag = "approvals", summary = "Deny a waiting request", params(("id" = String, Path, description = "the request's id")), request_body = muster_proto::DecideRequest, responses((status = 200, description = "the request, denied", body = muster_proto::ApprovalInfo), (status = 404, description = "no such waiting request", body = muster_proto::ApiError), (status = 409, description = "the request was already decided", body = muster_proto::ApiError)), security(("api_key" = ["admin"]), ("session" = ["admin"])))]
pub async fn deny_request(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<DecideRequest>,
) -> ApiResult<Json<ApprovalInfo>> {
    Ok(Json(
        decide(&state, &caller, &id, false, body.reason.as_deref()).await?,
    ))
}

/// Approve every waiting request whose hostname matches the pattern: all of them in
/// one transaction, each with its audit entry, or none (an admin who approved
/// `web-*` must not find half the web servers approved after an error).
#[utoipa::path(post, path = "/api/v1/approvals/approve", tag = "approvals", summary = "Approve every waiting request whose hostname matches a pattern", request_body = muster_proto::DecideRequest, responses((status = 200, description = "the requests approved", body = muster_proto::ApprovalList), (status = 400, description = "no pattern, or an invalid one", body = muster_proto::ApiError)), security(("api_key" = ["admin"]), ("session" = ["admin"])))]
pub async fn approve_matching(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(body): ApiJson<DecideRequest>,
) -> ApiResult<Json<ApprovalList>> {
    let pattern = body
        .pattern
        .as_deref()
        .ok_or_else(|| ApiFailure::bad_request("give a hostname pattern to approve"))?;
    check_text("pattern", pattern, false)?;
    let matcher = parse_pattern(pattern).map_err(ApiFailure::bad_request)?;
    let now = now_ms();
    // The store names each request as the entry's target.
    let audit = caller
        .audit("request.approved", "request")
        .at(now)
        .details(serde_json::json!({ "pattern": pattern }));
    let approved = state
        .store
        .approve_matching(
            &|r: &PendingRecord| matcher.is_match(&r.hostname),
            &caller.actor(),
            now,
            &audit,
        )
        .await?;
    state.events.approvals_changed();
    tracing::info!(
        pattern,
        count = approved.len(),
        "queued requests approved by pattern"
    );
    Ok(Json(ApprovalList {
        requests: approved.iter().map(|r| approval_info(r, now)).collect(),
    }))
}

fn rule_info(r: &TrustRuleRecord) -> TrustRuleInfo {
    TrustRuleInfo {
        id: r.id.clone(),
        pattern: r.pattern.clone(),
        cidrs: r.cidrs.clone(),
        labels: r.labels.clone(),
        max_per_hour: r.max_per_hour.max(0) as u32,
        created_at: rfc3339(r.created_at),
    }
}

#[utoipa::path(post, path = "/api/v1/trust-rules", tag = "approvals", summary = "Create a trust rule (machines it matches enroll without a token)", request_body = muster_proto::CreateTrustRule, responses((status = 201, description = "the rule", body = muster_proto::TrustRuleInfo), (status = 400, description = "invalid pattern, CIDR, labels or rate", body = muster_proto::ApiError)), security(("api_key" = ["admin"]), ("session" = ["admin"])))]
pub async fn create_trust_rule(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateTrustRule>,
) -> ApiResult<(StatusCode, Json<TrustRuleInfo>)> {
    let cidrs = check_scope("rule", Some(&req.pattern), &req.cidrs, &req.labels)?;
    let max_per_hour = req.max_per_hour.unwrap_or(100);
    if max_per_hour == 0 {
        return Err(ApiFailure::bad_request("max_per_hour must be at least 1"));
    }
    let now = now_ms();
    let rule = TrustRuleRecord {
        id: uuid::Uuid::new_v4().to_string(),
        pattern: req.pattern.clone(),
        cidrs,
        labels: req.labels.clone(),
        max_per_hour: i64::from(max_per_hour),
        created_at: now,
        created_by: caller.actor(),
    };
    let audit = caller
        .audit("trust_rule.created", format!("rule:{}", rule.id))
        .at(now)
        .details(serde_json::json!({"pattern": rule.pattern, "cidrs": rule.cidrs, "labels": rule.labels, "max_per_hour": rule.max_per_hour}));
    state.store.create_trust_rule(&rule, &audit).await?;
    if rule.cidrs.is_empty() {
        tracing::warn!(rule_id = %rule.id, pattern = %rule.pattern, "trust rule without CIDR: any source may enroll a matching hostname");
    }
    Ok((StatusCode::CREATED, Json(rule_info(&rule))))
}

#[utoipa::path(get, path = "/api/v1/trust-rules", tag = "approvals", summary = "Trust rules", responses((status = 200, description = "the rules", body = muster_proto::TrustRuleList)), security(("api_key" = ["admin"]), ("session" = ["admin"])))]
pub async fn list_trust_rules(
    State(state): State<Arc<AppState>>,
) -> ApiResult<Json<TrustRuleList>> {
    let rules = state.store.list_trust_rules().await?;
    Ok(Json(TrustRuleList {
        rules: rules.iter().map(rule_info).collect(),
    }))
}

#[utoipa::path(delete, path = "/api/v1/trust-rules/{id}", tag = "approvals", summary = "Remove a trust rule", params(("id" = String, Path, description = "the rule's id")), responses((status = 204, description = "removed"), (status = 404, description = "no such trust rule", body = muster_proto::ApiError)), security(("api_key" = ["admin"]), ("session" = ["admin"])))]
pub async fn remove_trust_rule(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let audit = caller.audit("trust_rule.removed", format!("rule:{id}"));
    state
        .store
        .remove_trust_rule(&id, &audit)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiFailure::not_found(format!("no trust rule {id:?}")),
            other => other.into(),
        })?;
    Ok(StatusCode::NO_CONTENT)
}
