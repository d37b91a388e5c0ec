-- The same tables as PostgreSQL's 0017 (`cluster` module). With SQLite the control plane
-- is one replica and always the leader: the lease row is never contended, but the schema
-- stays the same on both backends.
CREATE TABLE cp_lease (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    holder        TEXT NOT NULL,
    fencing_token INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL
);
INSERT INTO cp_lease (id, holder, fencing_token, expires_at) VALUES (1, '', 0, 0);

CREATE TABLE cp_replicas (
    replica_id       TEXT PRIMARY KEY,
    started_at       INTEGER NOT NULL,
    heartbeat_at     INTEGER NOT NULL,
    file_backend     INTEGER NOT NULL DEFAULT 0,
    snapshot_version INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE secret_versions (
    reference   TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    version     INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

INSERT INTO meta (key, value) VALUES ('snapshot_version', '0') ON CONFLICT (key) DO NOTHING;
