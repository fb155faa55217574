//! The records the store reads and writes. Times are unix milliseconds.

use std::collections::BTreeMap;

use muster_proto::Interface;

/// An enrollment token. The value itself is never stored: only its keyed hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: String,
    /// HMAC-SHA256 of the secret part, hex. Lookups go by this.
    pub hash: String,
    /// First characters of the value, kept so admins can tell tokens apart.
    pub prefix: String,
    pub description: Option<String>,
    /// `None` is unlimited.
    pub max_uses: Option<i64>,
    pub uses: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub pattern: Option<String>,
    pub cidrs: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub allow_replace: bool,
    pub created_at: i64,
    pub created_by: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenState {
    Active,
    Exhausted,
    Expired,
    Revoked,
}

impl TokenState {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenState::Active => "active",
            TokenState::Exhausted => "exhausted",
            TokenState::Expired => "expired",
            TokenState::Revoked => "revoked",
        }
    }
}

impl TokenRecord {
    /// Revocation wins over expiry, expiry over exhaustion: the answer an admin
    /// needs first.
    pub fn state(&self, now: i64) -> TokenState {
        if self.revoked_at.is_some() {
            TokenState::Revoked
        } else if self.expires_at.is_some_and(|e| e <= now) {
            TokenState::Expired
        } else if self.max_uses.is_some_and(|m| self.uses >= m) {
            TokenState::Exhausted
        } else {
            TokenState::Active
        }
    }
}

/// An API key (admin or member). Stored as a keyed hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub id: String,
    pub hash: String,
    pub prefix: String,
    pub name: String,
    /// `admin` or `member`.
    pub role: String,
    pub agents_glob: Option<String>,
    /// Probes a member key may run (empty: none).
    pub probes: Vec<String>,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

/// Where an agent is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentState {
    Active,
    Revoked,
    Removed,
}

impl AgentState {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentState::Active => "active",
            AgentState::Revoked => "revoked",
            AgentState::Removed => "removed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(AgentState::Active),
            "revoked" => Some(AgentState::Revoked),
            "removed" => Some(AgentState::Removed),
            _ => None,
        }
    }
}

/// How an agent's life ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentEnd {
    /// Credentials dead, record kept and listed as `revoked`.
    Revoke,
    /// Credentials dead, record hidden from the fleet view.
    Remove,
}

/// What an agent says about itself at enrollment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentFacts {
    pub hostname: String,
    pub ip: String,
    pub os_info: String,
    pub arch: String,
    pub agent_version: String,
    pub labels: BTreeMap<String, String>,
    pub packs: Vec<String>,
    pub interfaces: Vec<Interface>,
}

/// The credentials the hub issued to an agent, as the hub keeps them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCredentials {
    /// Keyed hash of the agent key.
    pub key_hash: String,
    pub cert_serial: String,
    /// SHA-256 of the certificate's public key (hex): identifies the agent's key pair.
    pub cert_pubkey: String,
    pub cert_expires_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRecord {
    pub id: String,
    pub name: String,
    pub facts: AgentFacts,
    pub state: AgentState,
    /// Kept after revocation so a revoked agent's key is recognised and refused
    /// as revoked rather than unknown; only `state` decides whether it works.
    pub key_hash: Option<String>,
    pub cert_serial: String,
    pub cert_pubkey: String,
    pub cert_expires_at: i64,
    /// Advances with every credential change; the basis of clone detection.
    pub generation: i64,
    pub enrolled_at: i64,
    pub updated_at: i64,
    pub last_seen_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub removed_at: Option<i64>,
    /// The certificate the last renewal replaced; it works until it expires.
    pub prev_cert_serial: Option<String>,
    pub prev_cert_expires_at: Option<i64>,
    /// When two machines were caught sharing this identity; sessions are refused.
    pub cloned_at: Option<i64>,
    /// The last step of its last self-update, if it ever had one.
    pub update: Option<AgentUpdate>,
}

/// One step of an agent's self-update, as stored on the agent (the latest wins).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentUpdate {
    /// `requested`, `skipped`, `started`, … (`muster_proto::UpdatePhase`).
    pub phase: String,
    pub version: String,
    pub message: String,
    pub at: i64,
}

/// A completed enrollment, remembered so that a retry with the same id returns the
/// same agent instead of consuming another token use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollmentRecord {
    pub enrollment_id: String,
    pub agent_id: String,
    /// Which credential enrolled: `token:<id>`, `key:<id>`, `agent:<id>`.
    pub credential: String,
    /// SHA-256 of the public key in the CSR: a retry must present the same key.
    pub public_key: String,
    /// Whether that enrollment created the agent (201) or re-enrolled it (200).
    pub created: bool,
    pub created_at: i64,
}

/// Whether an enrollment creates a new agent or re-enrolls an existing one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnrollMode {
    /// Insert a new agent; fails with `NameInUse` when a live agent holds the name.
    New,
    /// Replace the credentials and facts of the live agent `agent_id`.
    Replace,
}

/// Everything one enrollment writes, in one transaction.
#[derive(Debug, Clone)]
pub struct EnrollWrite {
    pub agent_id: String,
    pub name: String,
    pub facts: AgentFacts,
    pub creds: IssuedCredentials,
    pub mode: EnrollMode,
    /// Token whose use this enrollment consumes.
    pub consume_token: Option<String>,
    /// Trust rule whose hourly allowance this enrollment consumes.
    pub consume_rule: Option<String>,
    /// Remembered for idempotent retries; `None` when this *is* a retry.
    pub enrollment: Option<EnrollmentRecord>,
    /// An approved request this enrollment collects (once: it becomes `completed`).
    pub complete_request: Option<String>,
    pub audit: AuditEntry,
    pub now: i64,
}

/// How enrollments were committed since the store opened (see the group commit in
/// `group.rs`): enrollments per transaction is what the grouping saves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EnrollCommits {
    /// Enrollment transactions begun, grouped or single, committed or refused.
    pub transactions: u64,
    /// Enrollments committed as part of a group of two or more.
    pub grouped: u64,
}

/// What [`AgentStore::watch_agent_changes`](crate::AgentStore::watch_agent_changes) reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentChange {
    /// This agent's credentials ended or changed, on some hub.
    Changed(String),
    /// Changes may have been missed (the connection dropped): re-check everything.
    Missed,
}

/// One entry of the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub at: i64,
    /// `user:<name>`, `key:<id>`, `token:<id>`, `agent:<id>`, `hub`.
    pub actor: String,
    /// Dotted verb, e.g. `agent.enrolled`.
    pub action: String,
    pub target: String,
    pub source: String,
    /// `ok` or `denied`.
    pub outcome: String,
    /// JSON object with what else matters.
    pub details: String,
}

/// A certificate renewal, in one transaction.
#[derive(Debug, Clone)]
pub struct RenewWrite {
    pub agent_id: String,
    /// The generation the agent presented; the write happens only if it is current.
    pub expected_generation: i64,
    pub cert_serial: String,
    pub cert_pubkey: String,
    pub cert_expires_at: i64,
    /// `true` for a renewal (the old certificate becomes the previous one and the
    /// generation advances); `false` for a retry whose answer was lost (the same key
    /// gets its certificate again, nothing advances).
    pub advance: bool,
    /// An approved renewal request this renewal collects.
    pub complete_request: Option<String>,
    pub audit: AuditEntry,
    pub now: i64,
}

/// Evidence that two machines share one identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloneEvent {
    pub agent_id: String,
    pub at: i64,
    /// Source address that presented the stale generation.
    pub source: String,
    pub presented: i64,
    pub expected: i64,
    /// `session` or `renewal`.
    pub via: String,
}

/// A request waiting in the approval queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRecord {
    /// Public id, shown to admins.
    pub id: String,
    /// Keyed hash of the requester's secret (its enrollment id).
    pub secret_hash: String,
    /// `enroll` or `renew`.
    pub kind: String,
    /// For renewals: the agent to renew.
    pub agent_id: Option<String>,
    pub name: String,
    pub hostname: String,
    pub source: String,
    /// The network the per-source cap counts by: the address, or the /64 of an IPv6
    /// one (a single host often holds a whole /64).
    pub source_net: String,
    /// The host facts as JSON, for the admin deciding (bounded by the hub).
    pub facts: String,
    /// Labels the request's credential gives the agent once approved: a trust rule's,
    /// when the rule matched but was over its hourly allowance.
    pub labels: BTreeMap<String, String>,
    /// SHA-256 of the public key the request is bound to.
    pub public_key: String,
    /// `pending`, `approved`, `denied`, `completed`.
    pub status: String,
    pub reason: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
    pub decided_at: Option<i64>,
    pub decided_by: Option<String>,
}

/// How many requests may wait in the approval queue, which anyone can write to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// Waiting requests from one source network.
    pub per_source: i64,
    /// Waiting requests in all.
    pub total: i64,
}

/// A trust rule: machines whose hostname matches and whose source is inside one of
/// the CIDRs may enroll without a credential, up to `max_per_hour`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustRuleRecord {
    pub id: String,
    pub pattern: String,
    /// Empty means any source (the CLI warns when such a rule is created).
    pub cidrs: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub max_per_hour: i64,
    pub created_at: i64,
    pub created_by: String,
}

/// Which audit entries to list. `None` fields do not filter.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Exact target, e.g. `agent:<uuid>`.
    pub target: Option<String>,
    pub actor: Option<String>,
    pub action: Option<String>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    /// Keyset cursor: only entries with `seq` below it (the last `seq` of the page
    /// before), so paging back through a long log costs one index range each time
    /// instead of skipping an ever larger offset.
    pub before_seq: Option<i64>,
    pub limit: i64,
}

/// An audit entry with its position in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub seq: i64,
    pub entry: AuditEntry,
}

/// The result of walking the audit chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditVerdict {
    pub count: usize,
    /// The first entry that does not verify, and why.
    pub broken: Option<(i64, String)>,
}

impl AuditVerdict {
    pub(crate) fn broken(count: usize, seq: i64, why: &str) -> Self {
        AuditVerdict {
            count,
            broken: Some((seq, why.to_owned())),
        }
    }
}

/// What happens to an API key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyChange {
    Revoke,
    /// New value's keyed hash and display prefix; the old value dies at once.
    Rotate {
        hash: String,
        prefix: String,
    },
}

/// A dashboard user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub id: String,
    pub name: String,
    /// `admin` or `member`.
    pub role: String,
    /// argon2id PHC string; empty for a user with no password (single sign-on only).
    pub password_hash: String,
    pub disabled_at: Option<i64>,
    pub created_at: i64,
    /// The role an admin gave this user by name; `None` when only groups admit them.
    pub granted_role: Option<String>,
    /// Single sign-on: the name the provider gave, recorded at each login.
    pub display_name: Option<String>,
    /// Single sign-on: the provider (issuer) and the user's subject there, linked
    /// at the first login.
    pub sso_issuer: Option<String>,
    pub sso_subject: Option<String>,
    /// The authorized groups that matched at the last single sign-on.
    pub groups: Vec<String>,
    pub last_login_at: Option<i64>,
}

impl UserRecord {
    /// A user as `users add` makes one (no provider identity yet).
    pub fn new(id: String, name: String, role: String, password_hash: String, now: i64) -> Self {
        UserRecord {
            id,
            name,
            granted_role: Some(role.clone()),
            role,
            password_hash,
            disabled_at: None,
            created_at: now,
            display_name: None,
            sso_issuer: None,
            sso_subject: None,
            groups: Vec::new(),
            last_login_at: None,
        }
    }
}

/// A provider group whose members may sign in (SPEC §14).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SsoGroupRecord {
    /// The value in the groups claim.
    pub id: String,
    pub name: String,
    pub role: String,
    pub created_at: i64,
}

/// An integration (SPEC §15): an external HTTPS API the hub probes itself.
#[derive(Clone, PartialEq, Eq)]
pub struct IntegrationRecord {
    pub name: String,
    /// `http` (a generic HTTPS API), the only kind so far.
    pub kind: String,
    /// The base URL every probe stays under.
    pub url: String,
    /// `none`, `bearer`, `basic` or `header`.
    pub auth: String,
    /// The header carrying the secret when `auth` is `header`.
    pub header_name: Option<String>,
    /// Ciphertext under the hub secret; the plain credential is never stored.
    pub secret: Option<String>,
    /// `untested`, `connected` or `error`.
    pub status: String,
    /// Why the last test failed: one line, no secrets.
    pub last_error: Option<String>,
    pub last_tested_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl std::fmt::Debug for IntegrationRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntegrationRecord")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("url", &self.url)
            .field("auth", &self.auth)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

/// The outcome of an integration's "test connection", as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntegrationTest {
    /// `connected` or `error`.
    pub status: String,
    pub last_error: Option<String>,
    pub tested_at: i64,
}

/// The OpenID Connect provider as set through the hub (`muster sso set`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SsoSettingsRecord {
    pub issuer: String,
    pub client_id: String,
    /// Ciphertext under the hub secret (kept in `hub_meta`, see the migration).
    pub client_secret: Option<String>,
    pub display_name: Option<String>,
    pub groups_claim: Option<String>,
    pub scopes: Vec<String>,
    pub updated_at: i64,
}

/// What happens to a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserChange {
    Disable,
    Enable,
    /// Gone, with every login session.
    Remove,
}

/// What the fleet view narrows a page to (`AgentStore::list_agents_page_where`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentPageFilter {
    /// A hostname glob (`*`, `?`; case-insensitive).
    pub name_glob: Option<String>,
    /// A label key, and the value it must have (any value when `None`).
    pub label: Option<(String, Option<String>)>,
}

impl AgentPageFilter {
    /// `LOWER(name) LIKE` pattern (escape `\`) admitting every name the glob
    /// matches; `None` when the glob has more than `*` and `?` (classes,
    /// alternatives) and only the caller can judge.
    pub fn name_like(&self) -> Option<String> {
        let glob = self.name_glob.as_deref()?;
        let mut like = String::with_capacity(glob.len() + 4);
        for c in glob.to_lowercase().chars() {
            match c {
                '*' => like.push('%'),
                '?' => like.push('_'),
                '[' | ']' | '{' | '}' => return None,
                '%' | '_' | '\\' => {
                    like.push('\\');
                    like.push(c);
                }
                c => like.push(c),
            }
        }
        Some(like)
    }

    /// The glob's literal start, lowercased, as a half-open range of
    /// `LOWER(name)` (`web-*` → `["web-", "web.")`) that an index on
    /// `LOWER(name)` can seek to, so a selective glob reads its matches rather
    /// than the whole fleet. `None` when the glob starts with a wildcard.
    ///
    /// The prefix stops at the first character that is not printable ASCII:
    /// SQLite's `LOWER` folds ASCII only, so beyond it the two databases (and
    /// Rust) could disagree about what the lowercase name starts with. Being
    /// printable ASCII, the last character always has a successor, and byte order
    /// (the `C` collation) keeps every string with the prefix inside the range.
    pub fn name_prefix(&self) -> Option<(String, String)> {
        let glob = self.name_glob.as_deref()?;
        let prefix: String = glob
            .chars()
            .take_while(|c| {
                matches!(c, ' '..='~') && !matches!(c, '*' | '?' | '[' | ']' | '{' | '}' | '\\')
            })
            .map(|c| c.to_ascii_lowercase())
            .collect();
        let last = prefix.chars().last()?;
        let mut upper = prefix[..prefix.len() - 1].to_owned();
        upper.push(char::from(last as u8 + 1));
        Some((prefix, upper))
    }

    /// `labels LIKE` pattern over the stored JSON object admitting every agent
    /// holding the label (and perhaps a few more: callers check exactly).
    pub fn labels_like(&self) -> Option<String> {
        let (key, value) = self.label.as_ref()?;
        let quoted = |s: &str| serde_json::to_string(s).unwrap_or_default();
        let needle = match value {
            Some(v) => format!("{}:{}", quoted(key), quoted(v)),
            None => format!("{}:", quoted(key)),
        };
        let mut like = String::from("%");
        for c in needle.chars() {
            if matches!(c, '%' | '_' | '\\') {
                like.push('\\');
            }
            like.push(c);
        }
        like.push('%');
        Some(like)
    }
}

/// An admin's edit of an agent's labels, applied to the labels the agent holds
/// when it commits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelEdit {
    /// Labels to add or overwrite.
    pub set: BTreeMap<String, String>,
    /// Keys to drop (absent ones are ignored).
    pub remove: Vec<String>,
    /// How many labels the agent may hold afterwards; beyond it nothing changes.
    pub max_labels: usize,
}

/// One agent session as the history keeps it: opened when the agent's WebSocket was
/// accepted, closed when it ended (`None` while it lasts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub id: String,
    pub agent_id: String,
    /// The hub that held the session (its `hub-id`), so a hub restarting after a
    /// crash closes only the rows it left open.
    pub hub: String,
    /// The agent's address as the hub saw it.
    pub address: String,
    pub connected_at: i64,
    pub disconnected_at: Option<i64>,
    /// Why it ended, one line (`closed by the agent`, `heartbeats stopped`, …).
    pub reason: Option<String>,
}

/// A change to the session history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionWrite {
    Open(SessionRecord),
    Close { id: String, at: i64, reason: String },
}

/// How much session history is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionRetention {
    /// The newest sessions kept per agent.
    pub per_agent: i64,
    /// Sessions that began before this (unix ms) are deleted.
    pub not_before: i64,
}

/// The fleet counted by what the database knows (the live part of an agent's status,
/// online or offline, is the session registry's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AgentCounts {
    /// Active agents not locked as cloned: online, degraded or offline.
    pub active: i64,
    /// Active agents locked as cloned.
    pub cloned: i64,
    pub revoked: i64,
    /// Enrollment requests waiting for approval.
    pub pending: i64,
}

/// A hub's lease on its place among the hubs sharing the database (SPEC §12), as it
/// renews it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubLease {
    /// The hub's id (`<data-dir>/hub-id`).
    pub id: String,
    /// The URL agents and people reach it at.
    pub address: String,
    pub version: String,
    pub started_at: i64,
    /// When this renewal was made, and when the lease runs out without another.
    pub renewed_at: i64,
    pub expires_at: i64,
    /// Sessions it holds, by health.
    pub online: i64,
    pub degraded: i64,
}

/// A hub as the database knows it: its last renewal, and whether it stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubRecord {
    pub lease: HubLease,
    /// Set when it stopped gracefully (its lease was given back).
    pub stopped_at: Option<i64>,
}

impl HubRecord {
    /// Whether its sessions count at `now`: it renewed in time and did not stop.
    pub fn is_live(&self, now: i64) -> bool {
        self.stopped_at.is_none() && self.lease.expires_at > now
    }
}

/// One change to where an agent's session is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PresenceWrite {
    /// `session` opened on `hub` (a later connect elsewhere is not overwritten by
    /// an earlier one written late).
    Connected {
        agent_id: String,
        hub: String,
        session: String,
        health: muster_proto::AgentHealth,
        problems: Vec<String>,
        at: i64,
    },
    /// The health `session` reported changed.
    Health {
        agent_id: String,
        session: String,
        health: muster_proto::AgentHealth,
        problems: Vec<String>,
        at: i64,
    },
    /// `session` closed; nothing happens when the agent has a newer one.
    Disconnected {
        agent_id: String,
        session: String,
        at: i64,
    },
}

impl PresenceWrite {
    pub fn agent_id(&self) -> &str {
        match self {
            PresenceWrite::Connected { agent_id, .. }
            | PresenceWrite::Health { agent_id, .. }
            | PresenceWrite::Disconnected { agent_id, .. } => agent_id,
        }
    }
}

/// Where an agent's latest session is, as last written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceRecord {
    pub agent_id: String,
    pub hub: String,
    pub session: String,
    pub connected: bool,
    pub health: muster_proto::AgentHealth,
    pub problems: Vec<String>,
    pub changed_at: i64,
}

#[cfg(test)]
mod tests {
    use super::AgentPageFilter;

    fn prefix(glob: &str) -> Option<(String, String)> {
        AgentPageFilter {
            name_glob: Some(glob.to_owned()),
            label: None,
        }
        .name_prefix()
    }

    #[test]
    fn a_glob_prefix_is_its_lowercase_ascii_literal_start() {
        let range = |a: &str, b: &str| Some((a.to_owned(), b.to_owned()));
        assert_eq!(prefix("Web-*"), range("web-", "web."));
        assert_eq!(prefix("db?"), range("db", "dc"));
        assert_eq!(prefix("rack{1,2}"), range("rack", "racl"));
        assert_eq!(prefix("a\\*"), range("a", "b"));
        assert_eq!(prefix("z~"), range("z~", "z\u{7f}"));
        // SQLite would not fold `É`, Rust and PostgreSQL would: stop before it.
        assert_eq!(prefix("wÉb*"), range("w", "x"));
        for none in ["*web", "?", "[ab]x", "", "Éb*"] {
            assert_eq!(prefix(none), None, "{none}");
        }
    }
}

/// An admin's decision on one agent's pack (SPEC §15).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackDecisionRecord {
    pub agent_id: String,
    pub pack: String,
    /// `approved` or `denied`.
    pub decision: String,
    /// The needs this decision covers (an approval grants exactly these).
    pub needs: Vec<String>,
    pub decided_by: String,
    pub decided_at: i64,
}
