//! The PostgreSQL advisory locks Muster takes, named in one place so no two uses
//! share an id by accident. Every hub on a database uses the same ids; the values
//! are arbitrary (they only have to match between hubs and not collide with
//! another application's on the same database).

/// Serializes schema migrations between hubs starting together.
pub(crate) const MIGRATIONS: i64 = 7_361_726;
/// Serializes first-start initialisation (secret check, CA) between hubs starting
/// together on an empty database: one writes, the others read what it wrote.
pub(crate) const META_INIT: i64 = 7_361_727;
/// Serializes appends to the audit chain between hubs sharing a database. Also
/// spelled as a literal in `sql::db`'s `chain_lock!`, which is prepended to `BEGIN`
/// to save a round trip; a test keeps the two equal.
pub(crate) const AUDIT_CHAIN: i64 = 7_361_728;

/// `SELECT pg_advisory_xact_lock(<id>)` for one of the ids above.
pub(crate) const XACT_LOCK: &str = "SELECT pg_advisory_xact_lock($1)";
