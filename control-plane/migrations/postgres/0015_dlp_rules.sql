-- Data loss prevention rules on request content (issue 14 item 4). One row per rule, by
-- name; nodes receive them in the snapshot and compile them once per snapshot.
CREATE TABLE dlp_rules (
    name       TEXT PRIMARY KEY,
    detector   TEXT NOT NULL,   -- card | ssn | openai_key | anthropic_key | aws_access_key | warden_credential | regex
    pattern    TEXT NOT NULL,   -- the regular expression of a regex rule; '' otherwise
    action     TEXT NOT NULL,   -- block | redact | flag
    scope_kind TEXT NOT NULL,   -- gateway | model | vkey | subject
    scope_id   TEXT NOT NULL,   -- '' for gateway
    source     TEXT NOT NULL,   -- config | admin
    updated_at BIGINT NOT NULL
);
