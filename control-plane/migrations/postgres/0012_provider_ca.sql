-- A provider's own CA bundle (`wardenctl provider add --ca-file`, `[[providers]] ca_file`):
-- the PEM text of its certificates, which nodes use instead of the public web roots to
-- verify that provider's TLS. NULL: the public roots, as for every provider before.
ALTER TABLE providers ADD COLUMN ca_pem TEXT;
