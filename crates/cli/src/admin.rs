//! Admin commands (`tokens`, `agents`, `login`) and how they find the hub (SPEC §11):
//! flags or environment first, then `muster login`'s saved profile, then the
//! `hub.json` and `initial-admin-key` a hub writes into `./muster-data` on its own
//! machine. Each setting falls back independently.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use muster_ca::CaHash;
use muster_client::{HubClient, Trust};
use muster_proto::{AgentInfo, CreateTokenRequest, TokenInfo};
use serde::{Deserialize, Serialize};

use crate::duration::parse_duration;
use crate::output::{parse_label, table};

#[derive(Args, Clone, Default)]
pub struct ConnectionArgs {
    /// Hub URL, e.g. https://hub.example:8443.
    #[arg(long, global = true, env = "MUSTER_HUB_URL")]
    pub hub: Option<String>,
    /// Admin or member API key (mak_…).
    #[arg(long, global = true, env = "MUSTER_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// The hub CA's hash (sha256:…), as `muster hub ca-hash` prints it.
    #[arg(long, global = true, env = "MUSTER_CA_HASH")]
    pub ca_hash: Option<String>,
    /// The hub's CA certificate (PEM).
    #[arg(long, global = true, env = "MUSTER_CA_FILE")]
    pub ca_file: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum TokensCommand {
    /// Create an enrollment token (single use, 15 minutes, unless told otherwise).
    Create(CreateTokenArgs),
    /// List tokens (never their values).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by id or prefix.
    Revoke { id: String },
}

#[derive(Args)]
pub struct CreateTokenArgs {
    /// How many enrollments the token allows.
    #[arg(long, conflicts_with = "unlimited")]
    max_uses: Option<u32>,
    #[arg(long)]
    unlimited: bool,
    /// Lifetime, e.g. 15m, 24h, 7d.
    #[arg(long, value_parser = parse_duration, conflicts_with = "no_expiry")]
    ttl: Option<std::time::Duration>,
    #[arg(long)]
    no_expiry: bool,
    /// Hostname glob the enrolling machine must match, e.g. 'web-*'.
    #[arg(long)]
    pattern: Option<String>,
    /// Source network allowed to enroll; repeatable.
    #[arg(long = "cidr")]
    cidrs: Vec<String>,
    /// Label given to every agent enrolled with the token, k=v; repeatable.
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// May replace a live agent of the same name.
    #[arg(long)]
    allow_replace: bool,
    #[arg(long)]
    description: Option<String>,
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
pub enum AgentsCommand {
    /// List the fleet.
    List {
        #[arg(long)]
        status: Option<String>,
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        #[arg(long)]
        json: bool,
    },
    /// Show one agent by id or name.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Revoke an agent's credentials at once; its UUID never comes back.
    Revoke { id: String },
    /// Remove an agent from the fleet view (credentials revoked, history kept).
    Remove { id: String },
}

#[derive(Subcommand)]
pub enum UsersCommand {
    /// Add a user; the password comes from MUSTER_USER_PASSWORD or the first line of stdin.
    Add {
        name: String,
        #[arg(long, value_parser = ["admin", "member"])]
        role: String,
    },
    List {
        #[arg(long)]
        json: bool,
    },
    /// Refuse the user at once, including sessions already open.
    Disable {
        name: String,
    },
    Enable {
        name: String,
    },
    Remove {
        name: String,
    },
}

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create a key; its value is shown once.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, value_parser = ["admin", "member"])]
        role: String,
        /// Member keys: agent names this key may see (glob).
        #[arg(long)]
        agents: Option<String>,
        /// Member keys: probes this key may run, comma-separated.
        #[arg(long, value_delimiter = ',')]
        probes: Vec<String>,
        /// Lifetime, e.g. 90d; default: no expiry.
        #[arg(long, value_parser = parse_duration)]
        expires: Option<std::time::Duration>,
        #[arg(long)]
        json: bool,
    },
    /// Keys with role, scope, expiry and last use (never their values).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Replace a key's value; the old value stops working at once.
    Rotate { id: String },
    /// Revoke a key; it stops working at once.
    Revoke { id: String },
}

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Entries, newest first.
    List {
        /// Agent id or name.
        #[arg(long)]
        agent: Option<String>,
        /// e.g. key:<id>, agent:<id>, token:<id>, hub.
        #[arg(long)]
        actor: Option<String>,
        /// e.g. agent.enrolled, token.created.
        #[arg(long)]
        action: Option<String>,
        /// RFC 3339 time, or a duration meaning that long ago (e.g. 24h).
        #[arg(long, value_parser = parse_when)]
        since: Option<i64>,
        #[arg(long, value_parser = parse_when)]
        until: Option<i64>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// Walk the whole chain: OK with the count, or the first entry changed, deleted or inserted.
    Verify,
}

/// An RFC 3339 time, or a duration ago, as unix milliseconds.
fn parse_when(s: &str) -> Result<i64, String> {
    if let Ok(t) = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339) {
        return Ok((t.unix_timestamp_nanos() / 1_000_000) as i64);
    }
    let ago = parse_duration(s)
        .map_err(|_| format!("{s:?} is neither an RFC 3339 time nor a duration like 24h"))?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
    Ok(now as i64 - ago.as_millis() as i64)
}

#[derive(Subcommand)]
pub enum TrustCommand {
    /// Let machines whose hostname matches and whose source is inside a CIDR enroll
    /// without a credential.
    Add {
        #[arg(long)]
        pattern: String,
        /// Source network; repeatable. Without one, any source matches (warned).
        #[arg(long = "cidr")]
        cidrs: Vec<String>,
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        /// Enrollments per hour through this rule; beyond it they wait for approval.
        #[arg(long, default_value_t = 100)]
        max_per_hour: u32,
        #[arg(long)]
        json: bool,
    },
    List {
        #[arg(long)]
        json: bool,
    },
    Remove {
        id: String,
    },
}

#[derive(Subcommand)]
pub enum ApprovalsCommand {
    /// Requests waiting for a decision: hostname, source, facts, age.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Approve one request, or every waiting one whose hostname matches --pattern.
    Approve {
        #[arg(required_unless_present = "pattern")]
        id: Option<String>,
        #[arg(long, conflicts_with = "id")]
        pattern: Option<String>,
    },
    /// Deny a request; the agent is told the reason.
    Deny {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Args)]
pub struct LoginArgs {
    /// Where to save the profile (default: ~/.config/muster/profile.json).
    #[arg(long, env = "MUSTER_PROFILE")]
    profile: Option<PathBuf>,
}

/// What `muster login` saves.
#[derive(Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Profile {
    hub_url: String,
    api_key: String,
    ca_hash: String,
}

/// The subset of `hub.json` the CLI reads.
#[derive(Deserialize)]
struct HubJson {
    url: String,
    ca_hash: String,
}

fn profile_path(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("MUSTER_PROFILE").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("muster").join("profile.json"))
}

fn load_profile() -> Option<Profile> {
    let text = std::fs::read_to_string(profile_path(None)?).ok()?;
    serde_json::from_str(&text).ok()
}

/// The hub on this machine, from the files it writes at start.
fn local_hub() -> Option<(HubJson, Option<String>)> {
    let dir = std::env::var_os("MUSTER_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("./muster-data"));
    let hub: HubJson =
        serde_json::from_str(&std::fs::read_to_string(dir.join("hub.json")).ok()?).ok()?;
    let key = std::fs::read_to_string(dir.join(muster_hub::INITIAL_ADMIN_KEY_FILE))
        .ok()
        .map(|k| k.trim().to_owned());
    Some((hub, key))
}

fn trust_from(conn: &ConnectionArgs, fallback_hash: Option<&str>) -> Result<Trust, String> {
    if let Some(file) = &conn.ca_file {
        let pem = std::fs::read_to_string(file)
            .map_err(|e| format!("cannot read --ca-file {}: {e}", file.display()))?;
        return Ok(Trust::CaPem(pem));
    }
    match conn.ca_hash.as_deref().or(fallback_hash) {
        Some(h) => Ok(Trust::Hash(
            CaHash::parse(h).map_err(|e| format!("invalid CA hash: {e}"))?,
        )),
        None => Err("cannot verify the hub: pass --ca-hash (print it with `muster hub ca-hash` on the hub) or --ca-file, or run `muster login`".to_owned()),
    }
}

/// An authenticated client for admin commands.
pub fn client(conn: &ConnectionArgs) -> Result<HubClient, String> {
    let profile = load_profile();
    let local = local_hub();
    let hub = conn
        .hub
        .clone()
        .or_else(|| profile.as_ref().map(|p| p.hub_url.clone()))
        .or_else(|| local.as_ref().map(|(h, _)| h.url.clone()))
        .ok_or("no hub given: use --hub URL (or MUSTER_HUB_URL), run `muster login`, or run this on the hub's machine")?;
    let key = conn
        .api_key
        .clone()
        .or_else(|| profile.as_ref().map(|p| p.api_key.clone()))
        .or_else(|| local.as_ref().and_then(|(_, k)| k.clone()))
        .ok_or("no API key given: use --api-key (or MUSTER_API_KEY), or run `muster login`")?;
    let fallback_hash = profile
        .as_ref()
        .map(|p| p.ca_hash.clone())
        .or_else(|| local.as_ref().map(|(h, _)| h.ca_hash.clone()));
    let trust = trust_from(conn, fallback_hash.as_deref())?;
    Ok(HubClient::new(&hub, trust)
        .map_err(|e| e.to_string())?
        .with_bearer(key))
}

pub async fn login(conn: &ConnectionArgs, args: LoginArgs) -> Result<(), String> {
    let hub = conn.hub.clone().ok_or("login needs --hub URL")?;
    let key = conn.api_key.clone().ok_or("login needs --api-key")?;
    let ca_hash = match (&conn.ca_file, &conn.ca_hash) {
        (Some(file), _) => {
            let pem = std::fs::read_to_string(file)
                .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            CaHash::of_pem(&pem).map_err(|e| e.to_string())?
        }
        (None, Some(h)) => CaHash::parse(h).map_err(|e| format!("invalid --ca-hash: {e}"))?,
        (None, None) => {
            return Err("login needs --ca-hash or --ca-file to verify the hub".to_owned());
        }
    };
    let client = HubClient::new(&hub, Trust::Hash(ca_hash))
        .map_err(|e| e.to_string())?
        .with_bearer(key.clone());
    let who = client.whoami().await.map_err(|e| e.to_string())?;
    let path = profile_path(args.profile.as_deref())
        .ok_or("cannot find a home directory; use --profile")?;
    let dir = path.parent().unwrap_or(Path::new("."));
    muster_files::create_private_dir_all(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let profile = Profile {
        hub_url: hub.clone(),
        api_key: key,
        ca_hash: ca_hash.to_string(),
    };
    let body = serde_json::to_vec_pretty(&profile).map_err(|e| e.to_string())?;
    muster_files::write_atomic_path(&path, &body, muster_files::PRIVATE)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    println!(
        "Logged in to {hub} as {} ({}); profile saved to {}",
        who["name"].as_str().unwrap_or("?"),
        who["role"].as_str().unwrap_or("?"),
        path.display()
    );
    Ok(())
}

pub async fn tokens(conn: &ConnectionArgs, action: TokensCommand) -> Result<(), String> {
    let client = client(conn)?;
    match action {
        TokensCommand::Create(a) => {
            let req = CreateTokenRequest {
                max_uses: if a.unlimited {
                    None
                } else {
                    Some(a.max_uses.unwrap_or(1))
                },
                ttl_s: if a.no_expiry {
                    None
                } else {
                    Some(a.ttl.map_or(15 * 60, |d| d.as_secs()))
                },
                pattern: a.pattern,
                cidrs: a.cidrs,
                labels: a.labels.into_iter().collect(),
                allow_replace: a.allow_replace,
                description: a.description,
            };
            let t = client.create_token(&req).await.map_err(|e| e.to_string())?;
            if a.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&t).map_err(|e| e.to_string())?
                );
            } else {
                println!("Token:    {}", t.token);
                println!("ID:       {}", t.id);
                println!("Expires:  {}", t.expires_at.as_deref().unwrap_or("never"));
                println!(
                    "Uses:     {}",
                    t.max_uses.map_or("unlimited".to_owned(), |m| m.to_string())
                );
                println!();
                println!("Enroll a machine with (the token pins the hub's CA):");
                println!("  {}", t.enroll_command);
                println!();
                println!("The token is shown only this once.");
            }
        }
        TokensCommand::List { json } => {
            let tokens = client.list_tokens().await.map_err(|e| e.to_string())?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&tokens).map_err(|e| e.to_string())?
                );
            } else {
                println!("{}", tokens_table(&tokens));
            }
        }
        TokensCommand::Revoke { id } => {
            let t = client.revoke_token(&id).await.map_err(|e| e.to_string())?;
            println!("Revoked token {} ({})", t.id, t.prefix);
        }
    }
    Ok(())
}

fn tokens_table(tokens: &[TokenInfo]) -> String {
    let rows: Vec<Vec<String>> = tokens
        .iter()
        .map(|t| {
            vec![
                t.id.clone(),
                t.prefix.clone(),
                format!(
                    "{}/{}",
                    t.uses,
                    t.max_uses.map_or("∞".to_owned(), |m| m.to_string())
                ),
                t.expires_at.clone().unwrap_or_else(|| "never".to_owned()),
                t.state.clone(),
                t.description.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table(
        &["ID", "PREFIX", "USES", "EXPIRES", "STATE", "DESCRIPTION"],
        &rows,
    )
}

pub async fn agents(conn: &ConnectionArgs, action: AgentsCommand) -> Result<(), String> {
    let client = client(conn)?;
    match action {
        AgentsCommand::List {
            status,
            labels,
            json,
        } => {
            let mut agents = client.list_agents().await.map_err(|e| e.to_string())?;
            agents.retain(|a| {
                status.as_deref().is_none_or(|s| a.status == s)
                    && labels.iter().all(|(k, v)| a.labels.get(k) == Some(v))
            });
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&agents).map_err(|e| e.to_string())?
                );
            } else {
                let rows: Vec<Vec<String>> = agents
                    .iter()
                    .map(|a| {
                        vec![
                            a.name.clone(),
                            a.id.clone(),
                            a.status.clone(),
                            a.hostname.clone(),
                            a.ip.clone(),
                            a.last_seen_at.clone().unwrap_or_else(|| "never".to_owned()),
                        ]
                    })
                    .collect();
                println!(
                    "{}",
                    table(
                        &["NAME", "ID", "STATUS", "HOSTNAME", "IP", "LAST SEEN"],
                        &rows
                    )
                );
            }
        }
        AgentsCommand::Show { id, json } => {
            let a = client.agent(&id).await.map_err(|e| e.to_string())?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&a).map_err(|e| e.to_string())?
                );
            } else {
                print_agent(&a);
            }
        }
        AgentsCommand::Revoke { id } => {
            let a = client.revoke_agent(&id).await.map_err(|e| e.to_string())?;
            println!("Revoked agent {} ({})", a.name, a.id);
        }
        AgentsCommand::Remove { id } => {
            let a = client.remove_agent(&id).await.map_err(|e| e.to_string())?;
            println!("Removed agent {} ({})", a.name, a.id);
        }
    }
    Ok(())
}

fn print_agent(a: &AgentInfo) {
    println!("Name:          {}", a.name);
    println!("ID:            {}", a.id);
    println!("Status:        {}", a.status);
    println!("Hostname:      {}", a.hostname);
    println!("IP:            {}", a.ip);
    println!("OS:            {}", a.os_info);
    println!("Arch:          {}", a.arch);
    println!("Agent version: {}", a.agent_version);
    let labels: Vec<String> = a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("Labels:        {}", labels.join(", "));
    println!("Enrolled:      {}", a.enrolled_at);
    println!(
        "Last seen:     {}",
        a.last_seen_at.as_deref().unwrap_or("never")
    );
    println!(
        "Cert expires:  {}",
        a.cert_expires_at.as_deref().unwrap_or("-")
    );
    for i in &a.interfaces {
        println!(
            "Interface:     {} {} {}{}",
            i.name,
            i.mac.as_deref().unwrap_or("-"),
            i.addresses.join(" "),
            if i.is_management { " (management)" } else { "" }
        );
    }
}

pub async fn approvals(conn: &ConnectionArgs, action: ApprovalsCommand) -> Result<(), String> {
    let client = client(conn)?;
    match action {
        ApprovalsCommand::List { json } => {
            let list = client.list_approvals().await.map_err(|e| e.to_string())?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&list).map_err(|e| e.to_string())?
                );
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|r| {
                        let facts = r
                            .facts
                            .as_ref()
                            .map(|f| format!("{} {} {}", f.os_info, f.arch, f.ip))
                            .unwrap_or_default();
                        vec![
                            r.id.clone(),
                            r.kind.clone(),
                            r.hostname.clone(),
                            r.source.clone(),
                            facts,
                            format!("{}s", r.age_s),
                        ]
                    })
                    .collect();
                println!(
                    "{}",
                    table(&["ID", "KIND", "HOSTNAME", "SOURCE", "FACTS", "AGE"], &rows)
                );
            }
        }
        ApprovalsCommand::Approve { id, pattern } => match (id, pattern) {
            (_, Some(p)) => {
                let approved = client
                    .approve_matching(&p)
                    .await
                    .map_err(|e| e.to_string())?;
                println!("Approved {} request(s) matching {p:?}", approved.len());
            }
            (Some(id), None) => {
                let r = client.approve(&id).await.map_err(|e| e.to_string())?;
                println!("Approved {} ({} from {})", r.id, r.hostname, r.source);
            }
            (None, None) => return Err("give a request id or --pattern".to_owned()),
        },
        ApprovalsCommand::Deny { id, reason } => {
            let r = client
                .deny(&id, reason.as_deref())
                .await
                .map_err(|e| e.to_string())?;
            println!("Denied {} ({} from {})", r.id, r.hostname, r.source);
        }
    }
    Ok(())
}

pub async fn trust(conn: &ConnectionArgs, action: TrustCommand) -> Result<(), String> {
    let client = client(conn)?;
    match action {
        TrustCommand::Add {
            pattern,
            cidrs,
            labels,
            max_per_hour,
            json,
        } => {
            if cidrs.is_empty() {
                eprintln!(
                    "warning: a rule without --cidr admits any source; the hostname is only the machine's own claim"
                );
            }
            let rule = client
                .create_trust_rule(&muster_proto::CreateTrustRule {
                    pattern,
                    cidrs,
                    labels: labels.into_iter().collect(),
                    max_per_hour: Some(max_per_hour),
                })
                .await
                .map_err(|e| e.to_string())?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&rule).map_err(|e| e.to_string())?
                );
            } else {
                println!("Added trust rule {} for {}", rule.id, rule.pattern);
            }
        }
        TrustCommand::List { json } => {
            let rules = client.list_trust_rules().await.map_err(|e| e.to_string())?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&rules).map_err(|e| e.to_string())?
                );
            } else {
                let rows: Vec<Vec<String>> = rules
                    .iter()
                    .map(|r| {
                        let labels: Vec<String> =
                            r.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                        vec![
                            r.id.clone(),
                            r.pattern.clone(),
                            if r.cidrs.is_empty() {
                                "any".to_owned()
                            } else {
                                r.cidrs.join(",")
                            },
                            labels.join(","),
                            r.max_per_hour.to_string(),
                        ]
                    })
                    .collect();
                println!(
                    "{}",
                    table(&["ID", "PATTERN", "CIDRS", "LABELS", "PER HOUR"], &rows)
                );
            }
        }
        TrustCommand::Remove { id } => {
            client
                .remove_trust_rule(&id)
                .await
                .map_err(|e| e.to_string())?;
            println!("Removed trust rule {id}");
        }
    }
    Ok(())
}

pub async fn audit(conn: &ConnectionArgs, action: AuditCommand) -> Result<(), String> {
    let client = client(conn)?;
    match action {
        AuditCommand::List {
            agent,
            actor,
            action,
            since,
            until,
            limit,
            json,
        } => {
            let q = muster_client::AuditQuery {
                agent,
                actor,
                action,
                since_ms: since,
                until_ms: until,
                limit: Some(limit),
            };
            let entries = client.audit(&q).await.map_err(|e| e.to_string())?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&entries).map_err(|e| e.to_string())?
                );
            } else {
                let rows: Vec<Vec<String>> = entries
                    .iter()
                    .map(|e| {
                        vec![
                            e.seq.to_string(),
                            e.at.clone(),
                            e.actor.clone(),
                            e.action.clone(),
                            e.target.clone(),
                            e.source.clone(),
                            e.outcome.clone(),
                        ]
                    })
                    .collect();
                println!(
                    "{}",
                    table(
                        &[
                            "SEQ", "AT", "ACTOR", "ACTION", "TARGET", "SOURCE", "OUTCOME"
                        ],
                        &rows
                    )
                );
            }
            Ok(())
        }
        AuditCommand::Verify => {
            let v = client.verify_audit().await.map_err(|e| e.to_string())?;
            if v.ok {
                println!("OK: {} entries verify", v.count);
                Ok(())
            } else {
                Err(format!(
                    "the audit chain is broken at entry {}: {} ({} entries)",
                    v.broken_seq.unwrap_or(0),
                    v.problem.unwrap_or_default(),
                    v.count
                ))
            }
        }
    }
}

pub async fn keys(conn: &ConnectionArgs, action: KeysCommand) -> Result<(), String> {
    let client = client(conn)?;
    match action {
        KeysCommand::Create {
            name,
            role,
            agents,
            probes,
            expires,
            json,
        } => {
            let created = client
                .create_key(&muster_proto::CreateKeyRequest {
                    name,
                    role,
                    agents,
                    probes,
                    expires_s: expires.map(|d| d.as_secs()),
                })
                .await
                .map_err(|e| e.to_string())?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&created).map_err(|e| e.to_string())?
                );
            } else {
                println!("Key:  {}", created.key);
                println!("ID:   {}", created.info.id);
                println!("Role: {}", created.info.role);
                println!("The key is shown only this once.");
            }
        }
        KeysCommand::List { json } => {
            let keys = client.list_keys().await.map_err(|e| e.to_string())?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&keys).map_err(|e| e.to_string())?
                );
            } else {
                let rows: Vec<Vec<String>> = keys
                    .iter()
                    .map(|k| {
                        vec![
                            k.id.clone(),
                            k.name.clone(),
                            k.prefix.clone(),
                            k.role.clone(),
                            k.agents.clone().unwrap_or_else(|| "*".to_owned()),
                            k.state.clone(),
                            k.last_used_at.clone().unwrap_or_else(|| "never".to_owned()),
                        ]
                    })
                    .collect();
                println!(
                    "{}",
                    table(
                        &[
                            "ID",
                            "NAME",
                            "PREFIX",
                            "ROLE",
                            "AGENTS",
                            "STATE",
                            "LAST USED"
                        ],
                        &rows
                    )
                );
            }
        }
        KeysCommand::Rotate { id } => {
            let k = client.rotate_key(&id).await.map_err(|e| e.to_string())?;
            println!("Key:  {}", k.key);
            println!("The old value no longer works; the new one is shown only this once.");
        }
        KeysCommand::Revoke { id } => {
            let k = client.revoke_key(&id).await.map_err(|e| e.to_string())?;
            println!("Revoked key {} ({})", k.id, k.name);
        }
    }
    Ok(())
}

pub async fn users(conn: &ConnectionArgs, action: UsersCommand) -> Result<(), String> {
    let client = client(conn)?;
    match action {
        UsersCommand::Add { name, role } => {
            let password = match std::env::var("MUSTER_USER_PASSWORD") {
                Ok(p) if !p.is_empty() => p,
                _ => {
                    let mut line = String::new();
                    std::io::stdin()
                        .read_line(&mut line)
                        .map_err(|e| format!("reading the password from stdin: {e}"))?;
                    line.trim_end_matches(['\r', '\n']).to_owned()
                }
            };
            let u = client
                .create_user(&muster_proto::CreateUserRequest {
                    name,
                    role,
                    password,
                })
                .await
                .map_err(|e| e.to_string())?;
            println!("Added {} ({})", u.name, u.role);
        }
        UsersCommand::List { json } => {
            let users = client.list_users().await.map_err(|e| e.to_string())?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&users).map_err(|e| e.to_string())?
                );
            } else {
                let rows: Vec<Vec<String>> = users
                    .iter()
                    .map(|u| {
                        vec![
                            u.name.clone(),
                            u.role.clone(),
                            if u.disabled { "disabled" } else { "active" }.to_owned(),
                            u.created_at.clone(),
                        ]
                    })
                    .collect();
                println!("{}", table(&["NAME", "ROLE", "STATE", "CREATED"], &rows));
            }
        }
        UsersCommand::Disable { name } => {
            client
                .change_user(&name, "disable")
                .await
                .map_err(|e| e.to_string())?;
            println!("Disabled {name}");
        }
        UsersCommand::Enable { name } => {
            client
                .change_user(&name, "enable")
                .await
                .map_err(|e| e.to_string())?;
            println!("Enabled {name}");
        }
        UsersCommand::Remove { name } => {
            client
                .change_user(&name, "remove")
                .await
                .map_err(|e| e.to_string())?;
            println!("Removed {name}");
        }
    }
    Ok(())
}
