-- Passthrough providers (each client brings its own upstream key) and parameters a
-- provider does not accept.
ALTER TABLE providers ADD COLUMN passthrough BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE providers ADD COLUMN drop_params TEXT NOT NULL DEFAULT '[]';
