//! Encryption at rest: AES-256-GCM per value with a fresh random 96-bit nonce, encoded as
//! `enc:v1:` + base64(nonce ‖ ciphertext ‖ tag). The master key is 32 bytes, from
//! `WARDEN_MASTER_KEY` (base64) or a key file holding the same; `secret name` is bound in as
//! associated data so a value copied to another name fails to decrypt.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::SecureRandom;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use secrecy::{ExposeSecret, SecretBox};
use zeroize::Zeroizing;

/// Marker in front of every encrypted value.
pub const PREFIX: &str = "enc:v1:";

/// Errors loading a master key or decrypting.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CipherError {
    #[error("master key must be 32 bytes encoded as base64")]
    BadMasterKey,
    #[error("value is not an enc:v1: ciphertext")]
    NotEncrypted,
    #[error("value does not decrypt under this master key")]
    Decrypt,
    #[error("encryption failed")]
    Encrypt,
}

/// The master key. Never printed.
pub struct MasterKey {
    key: LessSafeKey,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// Parses a base64 master key (surrounding whitespace ignored).
    pub fn from_base64(encoded: &SecretBox<str>) -> Result<Self, CipherError> {
        let raw = Zeroizing::new(
            STANDARD
                .decode(encoded.expose_secret().trim())
                .map_err(|_| CipherError::BadMasterKey)?,
        );
        if raw.len() != 32 {
            return Err(CipherError::BadMasterKey);
        }
        let key = UnboundKey::new(&AES_256_GCM, &raw).map_err(|_| CipherError::BadMasterKey)?;
        Ok(Self {
            key: LessSafeKey::new(key),
        })
    }

    /// A fresh random key, base64-encoded, for `wardenctl dev` and key-file generation.
    pub fn generate_base64() -> Zeroizing<String> {
        let mut raw = Zeroizing::new([0u8; 32]);
        #[expect(
            clippy::expect_used,
            reason = "no safe way to continue without OS entropy"
        )]
        aws_lc_rs::rand::SystemRandom::new()
            .fill(&mut raw[..])
            .expect("operating system random generator failed");
        Zeroizing::new(STANDARD.encode(&raw[..]))
    }

    /// Encrypts `plaintext` for storage under `name`.
    pub fn encrypt(&self, name: &str, plaintext: &[u8]) -> Result<String, CipherError> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| CipherError::Encrypt)?;
        let mut buf = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(name.as_bytes()),
                &mut buf,
            )
            .map_err(|_| CipherError::Encrypt)?;
        let mut out = Vec::with_capacity(NONCE_LEN + buf.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&buf);
        Ok(format!("{PREFIX}{}", STANDARD.encode(out)))
    }

    /// Decrypts a value stored under `name`.
    pub fn decrypt(&self, name: &str, value: &str) -> Result<Zeroizing<Vec<u8>>, CipherError> {
        let encoded = value
            .strip_prefix(PREFIX)
            .ok_or(CipherError::NotEncrypted)?;
        let raw = STANDARD.decode(encoded).map_err(|_| CipherError::Decrypt)?;
        if raw.len() < NONCE_LEN + 16 {
            return Err(CipherError::Decrypt);
        }
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CipherError::Decrypt)?;
        let mut buf = Zeroizing::new(sealed.to_vec());
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(name.as_bytes()), &mut buf)
            .map_err(|_| CipherError::Decrypt)?;
        Ok(Zeroizing::new(plain.to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> MasterKey {
        let b64 = MasterKey::generate_base64();
        MasterKey::from_base64(&SecretBox::from(b64.as_str())).unwrap()
    }

    #[test]
    fn round_trips_with_fresh_nonces() {
        let k = key();
        let a = k.encrypt("n", b"sk-secret").unwrap();
        let b = k.encrypt("n", b"sk-secret").unwrap();
        assert!(a.starts_with(PREFIX));
        assert_ne!(a, b, "nonce must be random");
        assert!(!a.contains("sk-secret"));
        assert_eq!(&k.decrypt("n", &a).unwrap()[..], b"sk-secret");
    }

    #[test]
    fn rejects_wrong_key_wrong_name_tampering_and_plaintext() {
        let k = key();
        let v = k.encrypt("n", b"value").unwrap();
        assert_eq!(key().decrypt("n", &v), Err(CipherError::Decrypt));
        assert_eq!(k.decrypt("other", &v), Err(CipherError::Decrypt));
        let mut tampered = v.clone();
        tampered.replace_range(10..11, if &v[10..11] == "A" { "B" } else { "A" });
        assert_eq!(k.decrypt("n", &tampered), Err(CipherError::Decrypt));
        assert_eq!(k.decrypt("n", "value"), Err(CipherError::NotEncrypted));
    }

    #[test]
    fn master_key_must_be_32_bytes() {
        let short = STANDARD.encode([0u8; 16]);
        assert_eq!(
            MasterKey::from_base64(&SecretBox::from(short.as_str())).err(),
            Some(CipherError::BadMasterKey)
        );
        assert!(MasterKey::from_base64(&SecretBox::from("not base64!")).is_err());
    }
}
