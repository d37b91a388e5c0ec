-- A credential bound to a client certificate's key (`wardenctl node|admin credential issue
-- --client-cert FILE`): the SHA-256 (hex) of that certificate's SubjectPublicKeyInfo. Such
-- a credential is accepted only over a TLS connection whose verified client certificate
-- has that key. NULL: unbound, as every credential issued before.
ALTER TABLE admin_credentials ADD COLUMN cert_spki_sha256 TEXT;
ALTER TABLE node_credentials ADD COLUMN cert_spki_sha256 TEXT;
