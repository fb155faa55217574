-- The approval queue (SPEC §7): enrollments with no credential, and renewals past
-- the grace window, wait here for an admin.

CREATE TABLE pending_requests (
    id          TEXT PRIMARY KEY,
    -- Keyed hash of the requester's secret (the agent's enrollment id): only the
    -- requester can collect the result.
    secret_hash TEXT NOT NULL UNIQUE,
    kind        TEXT NOT NULL,
    agent_id    TEXT,
    name        TEXT NOT NULL,
    hostname    TEXT NOT NULL,
    source      TEXT NOT NULL,
    facts       TEXT NOT NULL,
    -- SHA-256 of the public key the request is bound to.
    public_key  TEXT NOT NULL,
    status      TEXT NOT NULL,
    reason      TEXT,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    decided_at  BIGINT,
    decided_by  TEXT
);
CREATE INDEX pending_requests_status ON pending_requests (status, created_at);
