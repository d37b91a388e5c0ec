-- The tamper-evident audit chain (see src/audit/mod.rs); same schema as
-- migrations/sqlite/0002_audit_chain.sql.
--
-- Every audit row gains `seq` (1, 2, 3, … assigned at insert), `prev_hash` (the previous
-- row's hash, or 64 zeros for the first row) and `hash` = SHA-256(prev_hash ‖ canonical
-- encoding of the row), both lowercase hex. `audit_chain_head` is the one row appends lock
-- (SELECT … FOR UPDATE) and advance in the same transaction as the insert;
-- `audit_checkpoints` holds Ed25519 signatures over (seq_upto, hash).
--
-- Rows written before this migration are kept as `audit_legacy`; the store chains them,
-- oldest first, in one transaction the first time it opens the database, then drops the
-- table (a one-time backfill in code, `PostgresStore::connect`, so that both backends share
-- one implementation of the canonical encoding).
DROP INDEX audit_by_time;
ALTER TABLE audit RENAME TO audit_legacy;
ALTER INDEX audit_pkey RENAME TO audit_legacy_pkey;

CREATE TABLE audit (
    id           TEXT PRIMARY KEY,
    seq          BIGINT NOT NULL UNIQUE,
    timestamp_ms BIGINT NOT NULL,
    action       TEXT NOT NULL,
    actor        TEXT NOT NULL,
    subject      TEXT NOT NULL,
    result       TEXT NOT NULL,
    detail       TEXT NOT NULL,
    prev_hash    TEXT NOT NULL,
    hash         TEXT NOT NULL
);
CREATE INDEX audit_by_time ON audit (timestamp_ms);

CREATE TABLE audit_chain_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  BIGINT NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_chain_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

CREATE TABLE audit_checkpoints (
    seq_upto      BIGINT NOT NULL,
    hash          TEXT NOT NULL,
    signature     TEXT NOT NULL,
    key_id        TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (seq_upto, key_id)
);
