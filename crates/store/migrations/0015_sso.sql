-- Single sign-on (SPEC §14).
--
-- `users.role` stays the role in force (what login sessions act with); for a user
-- who signs in through the provider it is recomputed at every login as the highest
-- of `granted_role` (given by name, `users add`) and the roles of the authorized
-- groups the provider says they are in (`groups`, a JSON list, as of that login).
-- A user only groups admit has no `granted_role`. `password_hash` is empty for a
-- user with no password (single sign-on only).
ALTER TABLE users ADD COLUMN granted_role TEXT;
ALTER TABLE users ADD COLUMN display_name TEXT;
ALTER TABLE users ADD COLUMN sso_issuer TEXT;
ALTER TABLE users ADD COLUMN sso_subject TEXT;
ALTER TABLE users ADD COLUMN groups TEXT NOT NULL DEFAULT '[]';
ALTER TABLE users ADD COLUMN last_login_at BIGINT;
UPDATE users SET granted_role = role;
-- One user per identity at a provider (both dialects allow many NULLs).
CREATE UNIQUE INDEX users_sso_identity ON users (sso_issuer, sso_subject);

-- Provider groups whose members may sign in, with the role they get.
CREATE TABLE sso_groups (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    role       TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- The provider, when set through the hub (`muster sso set`) rather than the
-- environment: one row. Its client secret is AES-256-GCM ciphertext under the hub
-- secret, kept in `hub_meta` (`sso_client_secret`) so that rotating the secret
-- re-encrypts it with the CA key.
CREATE TABLE sso_settings (
    id            BIGINT PRIMARY KEY,
    issuer        TEXT NOT NULL,
    client_id     TEXT NOT NULL,
    display_name  TEXT,
    groups_claim  TEXT,
    scopes        TEXT NOT NULL DEFAULT '[]',
    updated_at    BIGINT NOT NULL
);
