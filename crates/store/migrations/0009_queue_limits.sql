-- The approval queue is open to anyone who can reach the hub, so what it keeps is
-- bounded: waiting requests are counted per source network (the address, or the /64
-- of an IPv6 one) and in total, and expired ones are deleted.
ALTER TABLE pending_requests ADD COLUMN source_net TEXT NOT NULL DEFAULT '';
UPDATE pending_requests SET source_net = source;
-- Labels the request's credential would have given the agent (a trust rule over its
-- hourly allowance), applied when an admin approves it. JSON object.
ALTER TABLE pending_requests ADD COLUMN labels TEXT NOT NULL DEFAULT '{}';
CREATE INDEX pending_requests_source_net ON pending_requests (source_net, status);
CREATE INDEX pending_requests_expiry ON pending_requests (status, expires_at);
