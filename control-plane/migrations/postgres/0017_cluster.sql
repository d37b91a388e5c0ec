-- Several control-plane replicas on one PostgreSQL (`cluster` module).
--
-- The leader lease: one row. `holder` is the replica id holding it until `expires_at`
-- (the database's clock, never a replica's); `fencing_token` grows by one at each
-- takeover, and every leader-only write (checkpoints, retention, export cursors) checks it
-- in the same transaction, so a replica that lost the lease cannot write.
CREATE TABLE cp_lease (
    id            BIGINT PRIMARY KEY CHECK (id = 1),
    holder        TEXT NOT NULL,
    fencing_token BIGINT NOT NULL,
    expires_at    TIMESTAMPTZ NOT NULL
);
INSERT INTO cp_lease (id, holder, fencing_token, expires_at) VALUES (1, '', 0, 'epoch');

-- Live replicas: each upserts its row with a heartbeat (database clock) every lease
-- renewal period. `file_backend`: its config uses the `file` provider-key backend, which
-- is refused while another replica is live.
CREATE TABLE cp_replicas (
    replica_id       TEXT PRIMARY KEY,
    started_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    heartbeat_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    file_backend     BOOLEAN NOT NULL DEFAULT FALSE,
    snapshot_version BIGINT NOT NULL DEFAULT 0
);

-- What the leader's rotation poll last read for each provider-key reference: every
-- replica re-reads a reference whose version moved before it publishes again.
CREATE TABLE secret_versions (
    reference   TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    version     BIGINT NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The snapshot version is allocated by one `UPDATE … RETURNING` on this row.
INSERT INTO meta (key, value) VALUES ('snapshot_version', '0') ON CONFLICT (key) DO NOTHING;
