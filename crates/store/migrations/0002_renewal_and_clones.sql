-- Certificate renewal and clone detection (SPEC §9).

-- The certificate a renewal replaced keeps working until it expires.
ALTER TABLE agents ADD COLUMN prev_cert_serial TEXT;
ALTER TABLE agents ADD COLUMN prev_cert_expires_at BIGINT;
-- Set when two machines were caught sharing this identity; sessions are refused.
ALTER TABLE agents ADD COLUMN cloned_at BIGINT;

-- Who presented which generation, so an admin can tell the machines apart.
CREATE TABLE clone_events (
    id        TEXT PRIMARY KEY,
    agent_id  TEXT NOT NULL,
    at        BIGINT NOT NULL,
    source    TEXT NOT NULL,
    presented BIGINT NOT NULL,
    expected  BIGINT NOT NULL,
    via       TEXT NOT NULL
);
CREATE INDEX clone_events_agent ON clone_events (agent_id);
