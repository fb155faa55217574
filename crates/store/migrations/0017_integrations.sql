-- Integrations (SPEC §15): hub-side probes against external HTTPS APIs.
--
-- Numbered 0017 although it is the 16th migration on this branch: 0016 (probes)
-- comes from another branch, and the two are put in order when they meet.
--
-- `secret` is AES-256-GCM ciphertext under the hub secret, bound to the
-- integration's name (its associated data), never the plain credential. `status`
-- is `untested` until the first "test connection", then `connected` or `error`
-- with `last_error` (one line, no secrets).
CREATE TABLE integrations (
    name            TEXT PRIMARY KEY,
    kind            TEXT NOT NULL,
    url             TEXT NOT NULL,
    auth            TEXT NOT NULL,
    header_name     TEXT,
    secret          TEXT,
    status          TEXT NOT NULL DEFAULT 'untested',
    last_error      TEXT,
    last_tested_at  BIGINT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
