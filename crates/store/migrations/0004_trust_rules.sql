-- Trust rules (SPEC §7): a hostname glob and source CIDRs that let a machine enroll
-- without a credential, up to a number of enrollments per hour.

CREATE TABLE trust_rules (
    id           TEXT PRIMARY KEY,
    pattern      TEXT NOT NULL,
    cidrs        TEXT NOT NULL,
    labels       TEXT NOT NULL,
    max_per_hour BIGINT NOT NULL,
    -- Fixed one-hour window counting enrollments, for the rate limit.
    window_start BIGINT NOT NULL DEFAULT 0,
    window_uses  BIGINT NOT NULL DEFAULT 0,
    created_at   BIGINT NOT NULL,
    created_by   TEXT NOT NULL
);
