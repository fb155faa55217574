-- Probe scopes of API keys (SPEC §11 `--probes`), as a JSON list.
ALTER TABLE api_keys ADD COLUMN probes TEXT NOT NULL DEFAULT '[]';
