-- Incident response (`wardenctl credentials suspend|resume|revoke-all`, `wardenctl lockdown`).
--
-- A suspension refuses client credentials until it is lifted: `subject` names one JWT
-- subject exactly; `prefix` covers every JWT whose subject starts with the value and every
-- virtual key whose id (`vk_…`) or owner starts with it.
CREATE TABLE credential_suspensions (
    kind       TEXT NOT NULL CHECK (kind IN ('subject', 'prefix')),
    value      TEXT NOT NULL,
    reason     TEXT NOT NULL DEFAULT '',
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (kind, value)
);

-- The gateway-wide lockdown: one row while it is on, none otherwise.
CREATE TABLE lockdown (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    reason     TEXT NOT NULL DEFAULT '',
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

-- `credentials revoke-all` retires every signing key but the new one: a retired key never
-- returns to a snapshot, whatever tokens it signed. NULL: not retired.
ALTER TABLE signing_keys ADD COLUMN retired_at INTEGER;
