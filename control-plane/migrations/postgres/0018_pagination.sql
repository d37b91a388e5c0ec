-- Keyset pagination of the Admin API's list calls (src/page.rs): each big listing reads
-- `WHERE (sort key) > (last key) ORDER BY sort key LIMIT n + 1`, which these indexes serve
-- without a scan or a sort. Same indexes on both backends.
CREATE INDEX virtual_keys_by_created ON virtual_keys (created_at, id);
CREATE INDEX tokens_by_issued ON tokens (issued_at, jti);
CREATE INDEX admin_credentials_by_created ON admin_credentials (created_at, id);
CREATE INDEX node_credentials_by_created ON node_credentials (created_at, id);
-- `audit list` reads newest first, optionally one action; (timestamp_ms, id) also serves
-- what the old audit_by_time (timestamp_ms) did.
DROP INDEX audit_by_time;
CREATE INDEX audit_by_time_id ON audit (timestamp_ms, id);
CREATE INDEX audit_by_action_time ON audit (action, timestamp_ms, id);
