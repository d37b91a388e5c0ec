-- Limits, budgets and upstream key health (shared-state issue).
CREATE TABLE policies (
    target_kind        TEXT NOT NULL,   -- vkey | subject | model | global
    target_id          TEXT NOT NULL,   -- '' for global
    rpm                BIGINT NOT NULL,
    tpm                BIGINT NOT NULL,
    max_parallel       BIGINT NOT NULL,
    max_budget_micros  BIGINT NOT NULL,
    budget_period_secs BIGINT NOT NULL,
    source             TEXT NOT NULL,
    updated_at         BIGINT NOT NULL,
    PRIMARY KEY (target_kind, target_id)
);

-- USD per million tokens, by model alias (from the config file or `wardenctl model add`).
CREATE TABLE prices (
    alias           TEXT PRIMARY KEY,
    input_per_mtok  DOUBLE PRECISION NOT NULL,
    output_per_mtok DOUBLE PRECISION NOT NULL
);

ALTER TABLE models ADD COLUMN fallbacks TEXT NOT NULL DEFAULT '[]';

ALTER TABLE provider_keys ADD COLUMN disabled_reason TEXT;
ALTER TABLE provider_keys ADD COLUMN disabled_at BIGINT;
ALTER TABLE provider_keys ADD COLUMN health_epoch BIGINT NOT NULL DEFAULT 0;
