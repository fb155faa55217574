//! [`AgentStore`] for [`SqlStore`]: agents and what happens to them after they
//! enroll (renewal, clones, facts, last seen, their end), with the enrollment handed
//! to the group commit and the watch handed to the listener.

use async_trait::async_trait;
use sqlx::{Any, Row, Transaction};

use crate::model::*;
use crate::sql::SqlStore;
use crate::sql::enroll::complete_request_tx;
use crate::sql::rows::{FromRow, decode_all, decode_one, fetch_in, json, uuid_like};
use crate::{AgentStore, Result, StoreError};

#[async_trait]
impl AgentStore for SqlStore {
    async fn get_agent(&self, id: &str) -> Result<Option<AgentRecord>> {
        let row = sqlx::query(agent_select!("WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.db.pool)
            .await?;
        decode_one(row)
    }

    async fn get_agents(&self, ids: &[String]) -> Result<Vec<AgentRecord>> {
        let rows = fetch_in(&self.db.pool, agent_select!("WHERE id IN ({in})"), ids).await?;
        decode_all(&rows)
    }

    async fn agent_names(&self, ids: &[String]) -> Result<Vec<(String, String)>> {
        let sql = "SELECT id, name FROM agents WHERE id IN ({in})";
        let rows = fetch_in(&self.db.pool, sql, ids).await?;
        rows.iter()
            .map(|r| Ok((r.try_get("id")?, r.try_get("name")?)))
            .collect()
    }

    async fn find_agent_by_key_hash(&self, hash: &str) -> Result<Option<AgentRecord>> {
        let row = sqlx::query(agent_select!("WHERE key_hash = $1"))
            .bind(hash)
            .fetch_optional(&self.db.pool)
            .await?;
        decode_one(row)
    }

    async fn find_live_agent_by_name(&self, name: &str) -> Result<Option<AgentRecord>> {
        let row = sqlx::query(agent_select!("WHERE name = $1 AND state = 'active'"))
            .bind(name)
            .fetch_optional(&self.db.pool)
            .await?;
        decode_one(row)
    }

    async fn list_agents(&self, include_removed: bool) -> Result<Vec<AgentRecord>> {
        let rows = if include_removed {
            sqlx::query(agent_select!("ORDER BY name, enrolled_at"))
                .fetch_all(&self.db.pool)
                .await?
        } else {
            sqlx::query(agent_select!(
                "WHERE state <> 'removed' ORDER BY name, enrolled_at"
            ))
            .fetch_all(&self.db.pool)
            .await?
        };
        decode_all(&rows)
    }

    async fn list_agents_page(
        &self,
        after: Option<(&str, &str)>,
        limit: i64,
    ) -> Result<Vec<AgentRecord>> {
        let (name, id) = after.unwrap_or(("", ""));
        let rows = sqlx::query(agent_select!(
            "WHERE state <> 'removed' AND (name > $1 OR (name = $1 AND id > $2)) \
             ORDER BY name, id LIMIT $3"
        ))
        .bind(name)
        .bind(id)
        .bind(limit)
        .fetch_all(&self.db.pool)
        .await?;
        decode_all(&rows)
    }

    async fn list_agents_page_where(
        &self,
        after: Option<(&str, &str)>,
        filter: &AgentPageFilter,
        limit: i64,
    ) -> Result<Vec<AgentRecord>> {
        let (name, id) = after.unwrap_or(("", ""));
        let prefix = filter.name_prefix();
        // An empty pattern means no condition (a real one is never empty). The
        // prefix range is not optional the same way: behind `$6 = '' OR` a
        // PostgreSQL generic plan could not use `agents_name_lower`, so a glob
        // with a literal start gets its own statement. PostgreSQL compares in the
        // `C` collation, which the index is built in: in a language collation a
        // prefix's strings need not lie in one range (see migration 0013).
        let sql = match &prefix {
            None => agent_select!(
                "WHERE state <> 'removed' AND (name > $1 OR (name = $1 AND id > $2)) \
                 AND ($3 = '' OR LOWER(name) LIKE $3 ESCAPE '\\') \
                 AND ($4 = '' OR labels LIKE $4 ESCAPE '\\') \
                 ORDER BY name, id LIMIT $5"
            ),
            Some(_) if self.db.postgres => agent_select!(
                "WHERE state <> 'removed' AND (name > $1 OR (name = $1 AND id > $2)) \
                 AND LOWER(name) COLLATE \"C\" >= $6 AND LOWER(name) COLLATE \"C\" < $7 \
                 AND ($3 = '' OR LOWER(name) LIKE $3 ESCAPE '\\') \
                 AND ($4 = '' OR labels LIKE $4 ESCAPE '\\') \
                 ORDER BY name, id LIMIT $5"
            ),
            Some(_) => agent_select!(
                "WHERE state <> 'removed' AND (name > $1 OR (name = $1 AND id > $2)) \
                 AND LOWER(name) >= $6 AND LOWER(name) < $7 \
                 AND ($3 = '' OR LOWER(name) LIKE $3 ESCAPE '\\') \
                 AND ($4 = '' OR labels LIKE $4 ESCAPE '\\') \
                 ORDER BY name, id LIMIT $5"
            ),
        };
        let mut query = sqlx::query(sql)
            .bind(name)
            .bind(id)
            .bind(filter.name_like().unwrap_or_default())
            .bind(filter.labels_like().unwrap_or_default())
            .bind(limit);
        if let Some((lower, upper)) = prefix {
            query = query.bind(lower).bind(upper);
        }
        let rows = query.fetch_all(&self.db.pool).await?;
        decode_all(&rows)
    }

    async fn find_enrollment(&self, enrollment_id: &str) -> Result<Option<EnrollmentRecord>> {
        let row = sqlx::query("SELECT * FROM enrollments WHERE enrollment_id = $1")
            .bind(enrollment_id)
            .fetch_optional(&self.db.pool)
            .await?;
        decode_one(row)
    }

    async fn enroll(&self, w: &EnrollWrite) -> Result<AgentRecord> {
        self.enrollments.enroll(w).await
    }

    fn enroll_commits(&self) -> EnrollCommits {
        self.enrollments.commits()
    }

    async fn watch_agent_changes(
        &self,
    ) -> Result<Option<tokio::sync::mpsc::Receiver<AgentChange>>> {
        if !self.db.postgres {
            return Ok(None);
        }
        Ok(Some(crate::watch::watch(self.url.clone())))
    }

    async fn renew(&self, r: &RenewWrite) -> Result<AgentRecord> {
        let mut w = self.db.begin_audited().await?;
        let sql = if r.advance {
            concat!(
                "UPDATE agents SET prev_cert_serial = cert_serial, \
                 prev_cert_expires_at = cert_expires_at, cert_serial = $3, cert_pubkey = $4, \
                 cert_expires_at = $5, generation = generation + 1, updated_at = $6 \
                 WHERE id = $1 AND generation = $2 AND state = 'active' AND cloned_at IS NULL \
                 RETURNING ",
                agent_columns!()
            )
        } else {
            concat!(
                "UPDATE agents SET cert_serial = $3, cert_pubkey = $4, cert_expires_at = $5, \
                 updated_at = $6 \
                 WHERE id = $1 AND generation = $2 AND state = 'active' AND cloned_at IS NULL \
                 RETURNING ",
                agent_columns!()
            )
        };
        let row = sqlx::query(sql)
            .bind(&r.agent_id)
            .bind(r.expected_generation)
            .bind(&r.cert_serial)
            .bind(&r.cert_pubkey)
            .bind(r.cert_expires_at)
            .bind(r.now)
            .fetch_optional(&mut *w.tx)
            .await?;
        let Some(row) = row else {
            return Err(StoreError::Conflict(
                "the agent's generation changed: another copy renewed first".to_owned(),
            ));
        };
        let agent = AgentRecord::from_row(&row)?;
        if let Some(id) = &r.complete_request {
            complete_request_tx(&mut w.tx, id, r.now).await?;
        }
        w.commit(&[&r.audit]).await?;
        Ok(agent)
    }

    async fn mark_cloned(&self, e: &CloneEvent, audit: &AuditEntry) -> Result<AgentRecord> {
        let mut w = self.db.begin_audited().await?;
        let row = sqlx::query(concat!(
            "UPDATE agents SET cloned_at = COALESCE(cloned_at, $2), updated_at = $2 \
             WHERE id = $1 RETURNING ",
            agent_columns!()
        ))
        .bind(&e.agent_id)
        .bind(e.at)
        .fetch_optional(&mut *w.tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        sqlx::query(
            "INSERT INTO clone_events (id, agent_id, at, source, presented, expected, via) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(uuid_like())
        .bind(&e.agent_id)
        .bind(e.at)
        .bind(&e.source)
        .bind(e.presented)
        .bind(e.expected)
        .bind(&e.via)
        .execute(&mut *w.tx)
        .await?;
        self.db.notify_agent_changed(&mut w.tx, &e.agent_id).await?;
        w.commit(&[audit]).await?;
        AgentRecord::from_row(&row)
    }

    async fn clone_events(&self, agent_id: &str) -> Result<Vec<CloneEvent>> {
        let rows = sqlx::query("SELECT * FROM clone_events WHERE agent_id = $1 ORDER BY at, id")
            .bind(agent_id)
            .fetch_all(&self.db.pool)
            .await?;
        decode_all(&rows)
    }

    async fn update_facts(&self, agent_id: &str, f: &AgentFacts, now: i64) -> Result<()> {
        let (_turn, mut tx) = self.db.begin_write().await?;
        sqlx::query(
            "UPDATE agents SET hostname = $2, ip = $3, os_info = $4, arch = $5, agent_version = $6, \
             packs = $7, interfaces = $8, updated_at = $9 WHERE id = $1",
        )
        .bind(agent_id)
        .bind(&f.hostname)
        .bind(&f.ip)
        .bind(&f.os_info)
        .bind(&f.arch)
        .bind(&f.agent_version)
        .bind(json(&f.packs))
        .bind(json(&f.interfaces))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn record_last_seen(&self, seen: &[(String, i64)]) -> Result<()> {
        // One statement per chunk: `CASE id WHEN $1 THEN $2 …` keeps it portable, and
        // small chunks keep it cheap: SQLite resolves each `$n` by name and walks
        // the CASE per row, both quadratic in the chunk size.
        const CHUNK: usize = 100;
        let (_turn, mut tx) = self.db.begin_write().await?;
        for chunk in seen.chunks(CHUNK) {
            let mut sql = String::from("UPDATE agents SET last_seen_at = CASE id");
            for i in 0..chunk.len() {
                sql.push_str(&format!(" WHEN ${} THEN ${}", 2 * i + 1, 2 * i + 2));
            }
            sql.push_str(" ELSE last_seen_at END WHERE id IN (");
            for i in 0..chunk.len() {
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!("${}", 2 * i + 1));
            }
            sql.push(')');
            // Only generated placeholders are spliced in; every value is bound.
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (id, at) in chunk {
                query = query.bind(id.as_str()).bind(*at);
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn end_agent(
        &self,
        id: &str,
        end: AgentEnd,
        now: i64,
        audit: &AuditEntry,
    ) -> Result<AgentRecord> {
        let mut w = self.db.begin_audited().await?;
        let done = match end {
            AgentEnd::Revoke => sqlx::query(
                "UPDATE agents SET state = 'revoked', revoked_at = $2, updated_at = $2 \
                 WHERE id = $1 AND state = 'active'",
            ),
            AgentEnd::Remove => sqlx::query(
                "UPDATE agents SET state = 'removed', removed_at = $2, \
                 revoked_at = COALESCE(revoked_at, $2), updated_at = $2 \
                 WHERE id = $1 AND state <> 'removed'",
            ),
        }
        .bind(id)
        .bind(now)
        .execute(&mut *w.tx)
        .await?
        .rows_affected();
        if done == 0 {
            return Err(StoreError::NotFound);
        }
        self.db.notify_agent_changed(&mut w.tx, id).await?;
        let agent = get_agent_tx(&mut w.tx, id)
            .await?
            .ok_or(StoreError::NotFound)?;
        w.commit(&[audit]).await?;
        Ok(agent)
    }

    async fn find_agent_by_name(&self, name: &str) -> Result<Option<AgentRecord>> {
        // At most one live agent holds a name (`agents_live_name`); it sorts first.
        let row = sqlx::query(agent_select!(
            "WHERE name = $1 AND state <> 'removed' \
             ORDER BY CASE WHEN state = 'active' THEN 0 ELSE 1 END, revoked_at DESC, \
             enrolled_at DESC, id DESC LIMIT 1"
        ))
        .bind(name)
        .fetch_optional(&self.db.pool)
        .await?;
        decode_one(row)
    }

    async fn change_labels(
        &self,
        id: &str,
        edit: &LabelEdit,
        now: i64,
        audit: &AuditEntry,
    ) -> Result<AgentRecord> {
        // Read, edit, write: with the chain's lock taken first, PostgreSQL runs this
        // after any other audited write in flight (two edits of one agent included),
        // as SQLite's single writer does anyway, so no edit is lost.
        let mut w = self.db.begin_audited_chain().await?;
        let agent = get_agent_tx(&mut w.tx, id)
            .await?
            .filter(|a| a.state == AgentState::Active)
            .ok_or(StoreError::NotFound)?;
        let mut labels = agent.facts.labels;
        for key in &edit.remove {
            labels.remove(key);
        }
        labels.extend(edit.set.clone());
        if labels.len() > edit.max_labels {
            return Err(StoreError::Conflict(format!(
                "an agent holds at most {} labels; this edit would leave {}",
                edit.max_labels,
                labels.len()
            )));
        }
        let row = sqlx::query(concat!(
            "UPDATE agents SET labels = $2, updated_at = $3 WHERE id = $1 RETURNING ",
            agent_columns!()
        ))
        .bind(id)
        .bind(json(&labels))
        .bind(now)
        .fetch_one(&mut *w.tx)
        .await?;
        let agent = AgentRecord::from_row(&row)?;
        w.commit(&[audit]).await?;
        Ok(agent)
    }

    async fn record_update(
        &self,
        agent_id: &str,
        u: &AgentUpdate,
        audit: &AuditEntry,
    ) -> Result<()> {
        let mut w = self.db.begin_audited().await?;
        let done = sqlx::query(
            "UPDATE agents SET update_state = $2, update_version = $3, update_message = $4, \
             update_at = $5 WHERE id = $1",
        )
        .bind(agent_id)
        .bind(&u.phase)
        .bind(&u.version)
        .bind(&u.message)
        .bind(u.at)
        .execute(&mut *w.tx)
        .await?
        .rows_affected();
        if done == 0 {
            return Err(StoreError::NotFound);
        }
        w.commit(&[audit]).await?;
        Ok(())
    }
}

/// [`AgentStore::get_agent`] inside a transaction, to answer with what it wrote.
async fn get_agent_tx(tx: &mut Transaction<'static, Any>, id: &str) -> Result<Option<AgentRecord>> {
    let row = sqlx::query(agent_select!("WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
    decode_one(row)
}
