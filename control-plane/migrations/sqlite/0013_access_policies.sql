-- Client access (issue 14): the IP and origin lists of a virtual key or a JWT subject, and
-- the gateway's IP allow-list and CORS (target_kind 'global'), as the JSON of an
-- `AccessPolicy` (allowed_ips, allowed_origins, cors_methods, cors_headers,
-- cors_expose_headers, cors_max_age_seconds, cors_allow_credentials).
CREATE TABLE access_policies (
    target_kind TEXT NOT NULL,   -- vkey | subject | global
    target_id   TEXT NOT NULL,   -- '' for global
    body        TEXT NOT NULL,
    source      TEXT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (target_kind, target_id)
);
