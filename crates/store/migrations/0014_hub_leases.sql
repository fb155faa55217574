-- Hubs sharing this database and the sessions they hold (SPEC §12 "one fleet view").
--
-- Each hub keeps a lease row it renews every few seconds; a hub whose lease has
-- expired is dead (kill -9, a lost machine) and whatever it held counts as offline.
-- `online`/`degraded` are the hub's own session counts at its last renewal, so the
-- fleet's counts are a sum over a handful of rows, not a scan of the sessions.
CREATE TABLE hubs (
    id          TEXT PRIMARY KEY,
    address     TEXT NOT NULL,
    version     TEXT NOT NULL,
    started_at  BIGINT NOT NULL,
    renewed_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    online      BIGINT NOT NULL,
    degraded    BIGINT NOT NULL,
    stopped_at  BIGINT
);

-- Where each agent's session is: one row per agent that ever connected, written
-- when a session opens, when its health changes and when it closes (never per
-- heartbeat). A row whose hub's lease expired is ignored by readers. Other hubs
-- follow it by `changed_at` (when the row was written, so a reader that looks a
-- little behind its last read sees every write), so a disconnect is an update, not
-- a delete. `since` is when the row's session opened on its hub: of two hubs'
-- sessions of one agent, the later one wins, whichever is written last (a close
-- leaves it alone, so a session that opened elsewhere meanwhile still lands).
CREATE TABLE presence (
    agent_id    TEXT PRIMARY KEY,
    hub         TEXT NOT NULL,
    session     TEXT NOT NULL,
    connected   BIGINT NOT NULL,
    health      TEXT NOT NULL,
    problems    TEXT NOT NULL,
    since       BIGINT NOT NULL,
    changed_at  BIGINT NOT NULL
);
CREATE INDEX presence_changed ON presence (changed_at, agent_id);
CREATE INDEX presence_hub ON presence (hub) WHERE connected = 1;
