-- The last step of each agent's last self-update (SPEC §10 "Updates"), so every hub
-- sharing the database shows it: the phase, the version it is about, why (one line),
-- and when. NULL until the first update.
ALTER TABLE agents ADD COLUMN update_state TEXT;
ALTER TABLE agents ADD COLUMN update_version TEXT;
ALTER TABLE agents ADD COLUMN update_message TEXT;
ALTER TABLE agents ADD COLUMN update_at BIGINT;
