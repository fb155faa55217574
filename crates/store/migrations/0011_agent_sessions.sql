-- Session history (SPEC §13 "Agent page"): one row per agent session, written when
-- it opens and again when it closes (never per heartbeat). Bounded: the hub keeps the
-- newest rows of each agent and nothing past the retention age (docs/OPERATIONS.md).
-- `hub` is the id of the hub that held the session (`<data-dir>/hub-id`), so a hub
-- restarting after a crash closes only its own rows left open.
CREATE TABLE agent_sessions (
    id              TEXT PRIMARY KEY,
    agent_id        TEXT NOT NULL,
    hub             TEXT NOT NULL,
    address         TEXT NOT NULL,
    connected_at    BIGINT NOT NULL,
    disconnected_at BIGINT,
    reason          TEXT
);
CREATE INDEX agent_sessions_agent ON agent_sessions (agent_id, connected_at);
CREATE INDEX agent_sessions_age ON agent_sessions (connected_at);
CREATE INDEX agent_sessions_open ON agent_sessions (hub) WHERE disconnected_at IS NULL;
