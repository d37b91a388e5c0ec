-- Lists of scopes and models as JSON arrays in TEXT columns, as SQLite has always stored
-- them and as `models.fallbacks` and `providers.drop_params` are stored on both backends.
-- Nothing queries these lists as JSON; one column type lets both backends share one set of
-- statements (src/store/sql.rs). Existing values keep their JSON text (`jsonb::text`).
ALTER TABLE tokens
    ALTER COLUMN scopes TYPE TEXT USING scopes::text,
    ALTER COLUMN models TYPE TEXT USING models::text;
ALTER TABLE virtual_keys
    ALTER COLUMN scopes TYPE TEXT USING scopes::text,
    ALTER COLUMN models TYPE TEXT USING models::text;
