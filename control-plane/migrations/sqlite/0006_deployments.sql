-- Several deployments of one model alias, chosen by weight: the model row is the first
-- (with `weight`), further ones live in `deployments`.
ALTER TABLE models ADD COLUMN weight BIGINT NOT NULL DEFAULT 1;

CREATE TABLE deployments (
    alias          TEXT NOT NULL REFERENCES models(alias) ON DELETE CASCADE,
    provider       TEXT NOT NULL REFERENCES providers(name) ON DELETE CASCADE,
    upstream_model TEXT NOT NULL,
    weight         BIGINT NOT NULL,
    PRIMARY KEY (alias, provider, upstream_model)
);
