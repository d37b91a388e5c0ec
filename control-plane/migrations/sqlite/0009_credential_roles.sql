-- Admin credential roles (`admin`, `operator`, `auditor`; the Admin API's table of RPCs
-- says which role may call what) and expiry (`wardenctl admin credential issue --ttl`).
-- Credentials issued before roles existed are `admin`. Node credentials carry the same
-- columns (one SQL text for both tables); their role is `node`.
ALTER TABLE admin_credentials ADD COLUMN role TEXT NOT NULL DEFAULT 'admin';
ALTER TABLE admin_credentials ADD COLUMN expires_at BIGINT;
ALTER TABLE node_credentials ADD COLUMN role TEXT NOT NULL DEFAULT 'node';
ALTER TABLE node_credentials ADD COLUMN expires_at BIGINT;

-- The first admin credential is issued once per database: the replica whose insert of
-- this row succeeds issues it, in the same transaction (`warden-cp bootstrap-admin`).
CREATE TABLE admin_bootstrap (
    id            TEXT PRIMARY KEY,
    credential_id TEXT NOT NULL,
    created_at    BIGINT NOT NULL
);
