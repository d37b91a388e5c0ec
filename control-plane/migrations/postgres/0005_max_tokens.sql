-- Ceiling on the completion tokens one request may ask for (0 = none).
ALTER TABLE policies ADD COLUMN max_tokens BIGINT NOT NULL DEFAULT 0;
