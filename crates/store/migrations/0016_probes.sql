-- Probes and packs (SPEC §15).
--
-- `catalog`: the packs an agent announced in its last `hello`, with their probes,
-- needs and self-check, as JSON; written when it changes, read when someone asks
-- what the agent offers or runs a probe (never by fleet listings).
ALTER TABLE agents ADD COLUMN catalog TEXT NOT NULL DEFAULT '[]';

-- An admin's decision on one agent's pack: `approved` grants the needs listed
-- (a pack that later needs more is pending again), `denied` refuses the pack.
CREATE TABLE pack_decisions (
    agent_id   TEXT NOT NULL,
    pack       TEXT NOT NULL,
    decision   TEXT NOT NULL,
    needs      TEXT NOT NULL,
    decided_by TEXT NOT NULL,
    decided_at BIGINT NOT NULL,
    PRIMARY KEY (agent_id, pack)
);
