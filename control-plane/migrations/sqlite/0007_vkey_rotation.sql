-- `wardenctl vkey rotate`: the replaced secret's hash stays valid until
-- `previous_expires_at` (Unix seconds), as the same key (id, limits, usage).
ALTER TABLE virtual_keys ADD COLUMN previous_hash TEXT;
ALTER TABLE virtual_keys ADD COLUMN previous_expires_at BIGINT NOT NULL DEFAULT 0;
