-- Warden's own secrets (JWT signing keys `warden/jwt/<kid>`, the credential pepper
-- `warden/credential-pepper`, the audit checkpoint key `warden/audit/checkpoint-key`):
-- kept in the state store so that control-plane replicas sharing a database share them.
-- `value` is always `enc:v1:` (AES-256-GCM under the master key, the name bound in as
-- associated data); the store never sees a plaintext value. Times are Unix seconds.
CREATE TABLE warden_secrets (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
