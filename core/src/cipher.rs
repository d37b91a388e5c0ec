//! Encryption at rest: AES-256-GCM per value with a fresh random 96-bit nonce, encoded as
//! `enc:v2:<kid>:` + base64(nonce ‖ ciphertext ‖ tag), where `<kid>` names the master key
//! (8 hex digits of a SHA-256 over it, see [`MasterKey::kid`]). The master key is 32 bytes,
//! from `WARDEN_MASTER_KEY` (base64) or a key file holding the same; `secret name` is bound
//! in as associated data so a value copied to another name fails to decrypt.
//!
//! Values written before key ids, `enc:v1:` + base64(…), stay readable: they are tried under
//! every key held. A [`MasterKey`] is a key ring: the current key, which seals every new
//! value, and the previous keys (`[secrets] previous_master_key_files`), which only read, so
//! values under an old and a new key coexist while `warden-cp migrate rotate-master-key`
//! re-encrypts them. A `v2` value under a key the ring does not hold fails with
//! [`CipherError::UnknownKey`], naming the key id.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::SecureRandom;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use secrecy::{ExposeSecret, SecretBox};
use zeroize::Zeroizing;

/// Marker in front of values written before key ids (any key held may have sealed them).
pub const PREFIX_V1: &str = "enc:v1:";
/// Marker in front of every value written now, followed by `<kid>:`.
pub const PREFIX_V2: &str = "enc:v2:";

/// Whether `value` is a ciphertext (`enc:v1:` or `enc:v2:`), as opposed to a plaintext value.
pub fn is_encrypted(value: &str) -> bool {
    value.starts_with(PREFIX_V1) || value.starts_with(PREFIX_V2)
}

/// The key id an `enc:v2:` value names (`None` for `enc:v1:` values and plaintext).
pub fn key_id_of(value: &str) -> Option<&str> {
    value
        .strip_prefix(PREFIX_V2)
        .and_then(|rest| rest.split_once(':'))
        .map(|(kid, _)| kid)
}

/// What re-encrypting a store under the current master key found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Resealed {
    /// Values re-encrypted under the current key now.
    pub resealed: usize,
    /// Values already under the current key (left as they are).
    pub current: usize,
    /// Plaintext values (not under any key; `warden-cp migrate encrypt` seals them).
    pub plaintext: usize,
}

impl std::ops::AddAssign for Resealed {
    fn add_assign(&mut self, other: Self) {
        self.resealed += other.resealed;
        self.current += other.current;
        self.plaintext += other.plaintext;
    }
}

/// Errors loading a master key or decrypting.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CipherError {
    #[error("master key must be 32 bytes encoded as base64")]
    BadMasterKey,
    #[error("value is not an enc:v1: or enc:v2: ciphertext")]
    NotEncrypted,
    #[error("value does not decrypt under this master key")]
    Decrypt,
    /// An `enc:v2:` value sealed under a key this ring does not hold.
    #[error("value is encrypted under master key {0}, which is not configured here")]
    UnknownKey(String),
    #[error("encryption failed")]
    Encrypt,
}

/// One AES-256-GCM key and its id.
struct Key {
    key: LessSafeKey,
    kid: String,
}

impl Key {
    fn open(&self, name: &str, encoded: &str) -> Result<Zeroizing<Vec<u8>>, CipherError> {
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

/// The master key ring: the current key and the previous ones. Never printed.
pub struct MasterKey {
    current: Key,
    previous: Vec<Key>,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey({}, ..)", self.current.kid)
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
        let mut id = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        id.update(b"warden master key id\0");
        id.update(&raw);
        Ok(Self {
            current: Key {
                key: LessSafeKey::new(key),
                kid: hex::encode(&id.finish().as_ref()[..4]),
            },
            previous: Vec::new(),
        })
    }

    /// This ring with `previous` keys added for reading (their own previous keys too); a key
    /// already held is not added twice.
    pub fn with_previous(mut self, previous: impl IntoIterator<Item = MasterKey>) -> Self {
        for ring in previous {
            for key in std::iter::once(ring.current).chain(ring.previous) {
                if !self.kids().any(|k| k == key.kid) {
                    self.previous.push(key);
                }
            }
        }
        self
    }

    /// The id of the current key: 8 hex digits of SHA-256 over a label and the key, safe to
    /// show (it names the key, it does not reveal it).
    pub fn kid(&self) -> &str {
        &self.current.kid
    }

    /// The ids of every key held, the current one first.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .map(|k| k.kid.as_str())
    }

    /// Whether `value` is sealed under the current key (nothing to re-encrypt).
    pub fn is_current(&self, value: &str) -> bool {
        key_id_of(value) == Some(self.kid())
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

    /// Encrypts `plaintext` for storage under `name`, with the current key.
    pub fn encrypt(&self, name: &str, plaintext: &[u8]) -> Result<String, CipherError> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| CipherError::Encrypt)?;
        let mut buf = plaintext.to_vec();
        self.current
            .key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(name.as_bytes()),
                &mut buf,
            )
            .map_err(|_| CipherError::Encrypt)?;
        let mut out = Vec::with_capacity(NONCE_LEN + buf.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&buf);
        Ok(format!(
            "{PREFIX_V2}{}:{}",
            self.current.kid,
            STANDARD.encode(out)
        ))
    }

    /// Decrypts a value stored under `name`: an `enc:v2:` value with the key it names, an
    /// `enc:v1:` value with whichever key held opens it.
    pub fn decrypt(&self, name: &str, value: &str) -> Result<Zeroizing<Vec<u8>>, CipherError> {
        let mut keys = std::iter::once(&self.current).chain(&self.previous);
        if let Some(rest) = value.strip_prefix(PREFIX_V2) {
            let (kid, encoded) = rest.split_once(':').ok_or(CipherError::Decrypt)?;
            let key = keys
                .find(|k| k.kid == kid)
                .ok_or_else(|| CipherError::UnknownKey(shown_kid(kid)))?;
            return key.open(name, encoded);
        }
        let encoded = value
            .strip_prefix(PREFIX_V1)
            .ok_or(CipherError::NotEncrypted)?;
        keys.find_map(|k| k.open(name, encoded).ok())
            .ok_or(CipherError::Decrypt)
    }

    /// Re-encrypts `value` (stored under `name`) under the current key: `None` when it is
    /// already there, the new ciphertext otherwise. Plaintext is refused
    /// ([`CipherError::NotEncrypted`]): `warden-cp migrate encrypt` is for that.
    pub fn reseal(&self, name: &str, value: &str) -> Result<Option<String>, CipherError> {
        if self.is_current(value) {
            return Ok(None);
        }
        let plain = self.decrypt(name, value)?;
        self.encrypt(name, &plain).map(Some)
    }
}

/// A key id as read from a stored value, fit to show in an error: 8 hex digits, or a note
/// that the value is malformed.
fn shown_kid(kid: &str) -> String {
    if kid.len() == 8 && kid.chars().all(|c| c.is_ascii_hexdigit()) {
        kid.to_owned()
    } else {
        "<malformed key id>".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> MasterKey {
        let b64 = MasterKey::generate_base64();
        MasterKey::from_base64(&SecretBox::from(b64.as_str())).unwrap()
    }

    /// An `enc:v1:` value as the control plane wrote it before key ids.
    fn seal_v1(k: &MasterKey, name: &str, plain: &[u8]) -> String {
        let v2 = k.encrypt(name, plain).unwrap();
        let (_, encoded) = v2.strip_prefix(PREFIX_V2).unwrap().split_once(':').unwrap();
        format!("{PREFIX_V1}{encoded}")
    }

    #[test]
    fn round_trips_with_fresh_nonces() {
        let k = key();
        let a = k.encrypt("n", b"sk-secret").unwrap();
        let b = k.encrypt("n", b"sk-secret").unwrap();
        assert!(a.starts_with(&format!("{PREFIX_V2}{}:", k.kid())));
        assert_eq!(key_id_of(&a), Some(k.kid()));
        assert!(is_encrypted(&a) && k.is_current(&a));
        assert_ne!(a, b, "nonce must be random");
        assert!(!a.contains("sk-secret"));
        assert_eq!(&k.decrypt("n", &a).unwrap()[..], b"sk-secret");
    }

    #[test]
    fn rejects_wrong_key_wrong_name_tampering_and_plaintext() {
        let k = key();
        let v = k.encrypt("n", b"value").unwrap();
        let other = key();
        assert_eq!(
            other.decrypt("n", &v),
            Err(CipherError::UnknownKey(k.kid().to_owned()))
        );
        assert_eq!(k.decrypt("other", &v), Err(CipherError::Decrypt));
        let mut tampered = v.clone();
        let at = v.len() - 4;
        let was = &v[at..=at];
        tampered.replace_range(at..=at, if was == "A" { "B" } else { "A" });
        assert_eq!(k.decrypt("n", &tampered), Err(CipherError::Decrypt));
        assert_eq!(k.decrypt("n", "value"), Err(CipherError::NotEncrypted));
        assert!(!is_encrypted("value"));
        let v1 = seal_v1(&k, "n", b"value");
        assert_eq!(other.decrypt("n", &v1), Err(CipherError::Decrypt));
    }

    #[test]
    fn a_ring_reads_old_and_new_values_and_reseals_under_the_current_key() {
        let old_b64 = MasterKey::generate_base64();
        let old = || MasterKey::from_base64(&SecretBox::from(old_b64.as_str())).unwrap();
        let under_old = old().encrypt("n", b"sk-v2").unwrap();
        let v1 = seal_v1(&old(), "n", b"sk-v1");
        let ring = key().with_previous([old(), old()]);
        assert_eq!(ring.kids().count(), 2, "a key held twice counts once");
        assert_ne!(ring.kid(), old().kid());
        assert_eq!(&ring.decrypt("n", &under_old).unwrap()[..], b"sk-v2");
        assert_eq!(&ring.decrypt("n", &v1).unwrap()[..], b"sk-v1");
        let resealed = ring.reseal("n", &v1).unwrap().unwrap();
        assert!(ring.is_current(&resealed));
        assert_eq!(ring.reseal("n", &resealed).unwrap(), None, "idempotent");
        assert_eq!(
            old().decrypt("n", &resealed),
            Err(CipherError::UnknownKey(ring.kid().to_owned())),
            "a holder of only the old key is told which key it lacks"
        );
        assert_eq!(ring.reseal("n", "plain"), Err(CipherError::NotEncrypted));
    }

    #[test]
    fn master_key_must_be_32_bytes() {
        let short = STANDARD.encode([0u8; 16]);
        assert_eq!(
            MasterKey::from_base64(&SecretBox::from(short.as_str())).err(),
            Some(CipherError::BadMasterKey)
        );
        assert!(MasterKey::from_base64(&SecretBox::from("not base64!")).is_err());
        assert_eq!(key_id_of("enc:v2:zz"), None);
        assert_eq!(
            key().decrypt("n", "enc:v2:../etc:AAAA"),
            Err(CipherError::UnknownKey("<malformed key id>".into()))
        );
    }
}
