-- The tamper-evident audit chain (see src/audit/mod.rs).
--
-- Every audit row gains `seq` (1, 2, 3, … assigned at insert), `prev_hash` (the previous
-- row's hash, or 64 zeros for the first row) and `hash` = SHA-256(prev_hash ‖ canonical
-- encoding of the row), both lowercase hex. `audit_chain_head` is the one row appends lock
-- and advance in the same transaction as the insert; `audit_checkpoints` holds Ed25519
-- signatures over (seq_upto, hash).
--
-- Rows written before this migration cannot be hashed in SQL (SQLite has no SHA-256), so
-- the old table is kept as `audit_legacy` and the store chains its rows, oldest first, in
-- one transaction the first time it opens the database, then drops it (a one-time backfill
-- in code: `SqliteStore::open`).
DROP INDEX audit_by_time;
ALTER TABLE audit RENAME TO audit_legacy;

CREATE TABLE audit (
    id           TEXT PRIMARY KEY,
    seq          INTEGER NOT NULL UNIQUE,
    timestamp_ms INTEGER NOT NULL,
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
    seq  INTEGER NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_chain_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

CREATE TABLE audit_checkpoints (
    seq_upto      INTEGER NOT NULL,
    hash          TEXT NOT NULL,
    signature     TEXT NOT NULL,
    key_id        TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (seq_upto, key_id)
);
