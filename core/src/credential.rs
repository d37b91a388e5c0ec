//! Opaque credentials Warden issues: virtual keys for clients (`wk_`), admin credentials
//! (`wa_`) and node credentials (`wn_`).
//!
//! Format: `<prefix>` + base64url(32 random bytes ‖ CRC-32 of them, big-endian), 48
//! characters after the prefix. The prefix lets secret scanners recognise a leaked
//! credential (`wk_[A-Za-z0-9_-]{48}`); the checksum rejects a typo or a made-up value
//! before any lookup. Warden stores only `HMAC-SHA256(pepper, credential)` and compares
//! in constant time.

use aws_lc_rs::{hmac, rand::SecureRandom};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

/// Number of random bytes in a credential (256 bits).
const RANDOM_LEN: usize = 32;
/// Length of the encoded body after the prefix.
const BODY_LEN: usize = 48;

/// The kinds of opaque credential, told apart by prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A client's virtual key, `wk_…`.
    VirtualKey,
    /// An administrator's credential for the Admin API, `wa_…`.
    Admin,
    /// A data-plane node's credential for the Sync API, `wn_…`.
    Node,
}

impl Kind {
    /// The prefix credentials of this kind start with.
    pub fn prefix(self) -> &'static str {
        match self {
            Self::VirtualKey => "wk_",
            Self::Admin => "wa_",
            Self::Node => "wn_",
        }
    }
}

/// Why a presented string is not a well-formed credential.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    #[error("credential has the wrong prefix")]
    WrongPrefix,
    #[error("credential has the wrong length or alphabet")]
    Malformed,
    #[error("credential checksum does not match")]
    BadChecksum,
}

/// Generates a new credential of `kind` from the OS random generator.
pub fn generate(kind: Kind) -> SecretString {
    let mut buf = zeroize::Zeroizing::new([0u8; RANDOM_LEN + 4]);
    // The system RNG only fails when the OS cannot provide entropy at all; no credential
    // must be issued then, and aborting is the only safe answer.
    #[expect(
        clippy::expect_used,
        reason = "no safe way to continue without OS entropy"
    )]
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut buf[..RANDOM_LEN])
        .expect("operating system random generator failed");
    let crc = crc32fast::hash(&buf[..RANDOM_LEN]);
    buf[RANDOM_LEN..].copy_from_slice(&crc.to_be_bytes());
    SecretString::from(format!(
        "{}{}",
        kind.prefix(),
        URL_SAFE_NO_PAD.encode(&buf[..])
    ))
}

/// Checks prefix, length, alphabet and checksum of a presented credential. Cheap; run
/// before any lookup.
pub fn check_format(kind: Kind, presented: &str) -> Result<(), FormatError> {
    let body = presented
        .strip_prefix(kind.prefix())
        .ok_or(FormatError::WrongPrefix)?;
    if body.len() != BODY_LEN {
        return Err(FormatError::Malformed);
    }
    // Decoded on the stack (no allocation per request); room to spare, since the decoder
    // asks for a conservative estimate of the output length.
    let mut raw = zeroize::Zeroizing::new([0u8; BODY_LEN]);
    let len = URL_SAFE_NO_PAD
        .decode_slice(body, &mut raw[..])
        .map_err(|_| FormatError::Malformed)?;
    if len != RANDOM_LEN + 4 {
        return Err(FormatError::Malformed);
    }
    let expected = crc32fast::hash(&raw[..RANDOM_LEN]).to_be_bytes();
    if raw[RANDOM_LEN..len] != expected {
        return Err(FormatError::BadChecksum);
    }
    Ok(())
}

/// Which kind a presented credential claims to be, from its prefix.
pub fn kind_of(presented: &str) -> Option<Kind> {
    [Kind::VirtualKey, Kind::Admin, Kind::Node]
        .into_iter()
        .find(|k| presented.starts_with(k.prefix()))
}

/// The stored form of a credential: hex `HMAC-SHA256(pepper, credential)`.
pub fn hash(pepper: &[u8], credential: &SecretString) -> String {
    hash_str(pepper, credential.expose_secret())
}

/// [`hash`] for a presented value not (yet) wrapped in a secret type.
pub fn hash_str(pepper: &[u8], presented: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, pepper);
    hex::encode(hmac::sign(&key, presented.as_bytes()).as_ref())
}

/// The pepper as an HMAC key, for [`hash_hex_into`]: built once (per snapshot on a node),
/// not per presented credential.
pub fn hash_key(pepper: &[u8]) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, pepper)
}

/// [`hash_str`] with a prepared key, written into `out` (no allocation): the same hex text.
pub fn hash_hex_into<'a>(key: &hmac::Key, presented: &str, out: &'a mut [u8; 64]) -> &'a str {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let tag = hmac::sign(key, presented.as_bytes());
    for (pair, byte) in out.chunks_exact_mut(2).zip(tag.as_ref()) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0x0f)];
    }
    // Always ASCII; an empty string would match no stored hash.
    std::str::from_utf8(&out[..]).unwrap_or_default()
}

/// Constant-time comparison of two stored hashes.
pub fn hashes_equal(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// A fresh random pepper (32 bytes).
pub fn generate_pepper() -> zeroize::Zeroizing<Vec<u8>> {
    let mut pepper = zeroize::Zeroizing::new(vec![0u8; 32]);
    #[expect(
        clippy::expect_used,
        reason = "no safe way to continue without OS entropy"
    )]
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut pepper)
        .expect("operating system random generator failed");
    pepper
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_credentials_pass_their_own_check() {
        for kind in [Kind::VirtualKey, Kind::Admin, Kind::Node] {
            let c = generate(kind);
            assert!(c.expose_secret().starts_with(kind.prefix()));
            assert_eq!(check_format(kind, c.expose_secret()), Ok(()));
            assert_eq!(kind_of(c.expose_secret()), Some(kind));
        }
    }

    #[test]
    fn a_typo_fails_the_checksum() {
        let c = generate(Kind::VirtualKey);
        let s = c.expose_secret();
        let mut chars: Vec<char> = s.chars().collect();
        let i = 10;
        chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
        let typo: String = chars.into_iter().collect();
        assert_eq!(
            check_format(Kind::VirtualKey, &typo),
            Err(FormatError::BadChecksum)
        );
    }

    #[test]
    fn wrong_prefix_and_length_are_rejected() {
        let c = generate(Kind::Admin);
        assert_eq!(
            check_format(Kind::VirtualKey, c.expose_secret()),
            Err(FormatError::WrongPrefix)
        );
        assert_eq!(
            check_format(Kind::VirtualKey, "wk_short"),
            Err(FormatError::Malformed)
        );
        let bad_alphabet = format!("wk_{}", "!".repeat(48));
        assert_eq!(
            check_format(Kind::VirtualKey, &bad_alphabet),
            Err(FormatError::Malformed)
        );
    }

    #[test]
    fn hash_depends_on_pepper_and_compares_in_constant_time() {
        let c = generate(Kind::VirtualKey);
        let a = hash(b"pepper-a", &c);
        let b = hash(b"pepper-b", &c);
        assert_ne!(a, b);
        assert!(hashes_equal(&a, &hash(b"pepper-a", &c)));
        assert!(!hashes_equal(&a, &b));
        assert!(!hashes_equal(&a, "short"));
        let mut buf = [0u8; 64];
        assert_eq!(
            hash_hex_into(&hash_key(b"pepper-a"), c.expose_secret(), &mut buf),
            a
        );
    }
}
