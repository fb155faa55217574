-- Muster schema, version 1. Portable SQL for SQLite and PostgreSQL: ids are TEXT,
-- times are BIGINT unix milliseconds, flags are BIGINT 0/1, lists and maps are JSON TEXT.

CREATE TABLE hub_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE tokens (
    id            TEXT PRIMARY KEY,
    hash          TEXT NOT NULL UNIQUE,
    prefix        TEXT NOT NULL,
    description   TEXT,
    max_uses      BIGINT,
    uses          BIGINT NOT NULL DEFAULT 0,
    expires_at    BIGINT,
    revoked_at    BIGINT,
    pattern       TEXT,
    cidrs         TEXT NOT NULL,
    labels        TEXT NOT NULL,
    allow_replace BIGINT NOT NULL DEFAULT 0,
    created_at    BIGINT NOT NULL,
    created_by    TEXT NOT NULL
);

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    hash         TEXT NOT NULL UNIQUE,
    prefix       TEXT NOT NULL,
    name         TEXT NOT NULL,
    role         TEXT NOT NULL,
    agents_glob  TEXT,
    expires_at   BIGINT,
    revoked_at   BIGINT,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT
);

CREATE TABLE agents (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    hostname        TEXT NOT NULL,
    ip              TEXT NOT NULL,
    os_info         TEXT NOT NULL,
    arch            TEXT NOT NULL,
    agent_version   TEXT NOT NULL,
    labels          TEXT NOT NULL,
    packs           TEXT NOT NULL,
    interfaces      TEXT NOT NULL,
    state           TEXT NOT NULL,
    key_hash        TEXT,
    cert_serial     TEXT NOT NULL,
    cert_pubkey     TEXT NOT NULL,
    cert_expires_at BIGINT NOT NULL,
    generation      BIGINT NOT NULL DEFAULT 1,
    enrolled_at     BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    last_seen_at    BIGINT,
    revoked_at      BIGINT,
    removed_at      BIGINT
);
-- Names are unique among agents that are neither revoked nor removed (SPEC §5).
CREATE UNIQUE INDEX agents_live_name ON agents (name) WHERE state = 'active';
CREATE UNIQUE INDEX agents_key_hash ON agents (key_hash);

CREATE TABLE enrollments (
    enrollment_id TEXT PRIMARY KEY,
    agent_id      TEXT NOT NULL,
    credential    TEXT NOT NULL,
    public_key    TEXT NOT NULL,
    created       BIGINT NOT NULL,
    created_at    BIGINT NOT NULL
);

CREATE TABLE audit_log (
    id      TEXT PRIMARY KEY,
    at      BIGINT NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    target  TEXT NOT NULL,
    source  TEXT NOT NULL,
    outcome TEXT NOT NULL,
    details TEXT NOT NULL
);
CREATE INDEX audit_log_at ON audit_log (at);
