-- Warden control-plane state. Secrets never live here: provider keys and signing keys are
-- referenced by name in the secret store; credentials are stored as HMACs only.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE providers (
    name       TEXT PRIMARY KEY,
    format     TEXT NOT NULL,
    base_url   TEXT NOT NULL,
    source     TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE provider_keys (
    id          TEXT PRIMARY KEY,
    provider    TEXT NOT NULL REFERENCES providers(name) ON DELETE CASCADE,
    secret_name TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE models (
    alias          TEXT PRIMARY KEY,
    provider       TEXT NOT NULL REFERENCES providers(name) ON DELETE CASCADE,
    upstream_model TEXT NOT NULL,
    source         TEXT NOT NULL,
    created_at     INTEGER NOT NULL
);

CREATE TABLE signing_keys (
    kid         TEXT PRIMARY KEY,
    algorithm   TEXT NOT NULL,
    secret_name TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE tokens (
    jti        TEXT PRIMARY KEY,
    subject    TEXT NOT NULL,
    scopes     TEXT NOT NULL,
    models     TEXT NOT NULL,
    kid        TEXT NOT NULL,
    issued_at  INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked_at INTEGER
);

CREATE TABLE virtual_keys (
    id         TEXT PRIMARY KEY,
    hash       TEXT NOT NULL UNIQUE,
    name       TEXT NOT NULL,
    owner      TEXT NOT NULL,
    scopes     TEXT NOT NULL,
    models     TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked_at INTEGER
);

CREATE TABLE admin_credentials (
    id         TEXT PRIMARY KEY,
    hash       TEXT NOT NULL UNIQUE,
    name       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);

CREATE TABLE node_credentials (
    id         TEXT PRIMARY KEY,
    hash       TEXT NOT NULL UNIQUE,
    name       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);

CREATE TABLE nodes (
    node_id          TEXT PRIMARY KEY,
    credential_id    TEXT NOT NULL,
    acked_version    INTEGER NOT NULL,
    last_seen        INTEGER NOT NULL,
    software_version TEXT NOT NULL
);

CREATE TABLE audit (
    id           TEXT PRIMARY KEY,
    timestamp_ms INTEGER NOT NULL,
    action       TEXT NOT NULL,
    actor        TEXT NOT NULL,
    subject      TEXT NOT NULL,
    result       TEXT NOT NULL,
    detail       TEXT NOT NULL
);
CREATE INDEX audit_by_time ON audit (timestamp_ms);
