-- Limits, budgets and upstream key health (shared-state issue).
CREATE TABLE policies (
    target_kind        TEXT NOT NULL,   -- vkey | subject | model | global
    target_id          TEXT NOT NULL,   -- '' for global
    rpm                INTEGER NOT NULL,
    tpm                INTEGER NOT NULL,
    max_parallel       INTEGER NOT NULL,
    max_budget_micros  INTEGER NOT NULL,
    budget_period_secs INTEGER NOT NULL,
    source             TEXT NOT NULL,
    updated_at         INTEGER NOT NULL,
    PRIMARY KEY (target_kind, target_id)
);

-- USD per million tokens, by model alias (from the config file or `wardenctl model add`).
CREATE TABLE prices (
    alias          TEXT PRIMARY KEY,
    input_per_mtok  REAL NOT NULL,
    output_per_mtok REAL NOT NULL
);

ALTER TABLE models ADD COLUMN fallbacks TEXT NOT NULL DEFAULT '[]';

ALTER TABLE provider_keys ADD COLUMN disabled_reason TEXT;
ALTER TABLE provider_keys ADD COLUMN disabled_at INTEGER;
ALTER TABLE provider_keys ADD COLUMN health_epoch INTEGER NOT NULL DEFAULT 0;
