-- The audit log becomes a chain (SPEC §11): each entry carries its position and
-- HMAC-SHA256(audit key, previous hash ‖ canonical entry), so rewriting, removing
-- or adding an entry without the hub secret is detected by `muster audit verify`.

ALTER TABLE audit_log ADD COLUMN seq BIGINT;
ALTER TABLE audit_log ADD COLUMN hash TEXT;
CREATE UNIQUE INDEX audit_log_seq ON audit_log (seq);
