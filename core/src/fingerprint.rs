//! Stable short fingerprints of secrets: safe to log, show and audit, useless to an
//! attacker (12 hex characters of SHA-256 = 48 bits, enough to tell keys apart, far too few
//! to search for the key).

use aws_lc_rs::digest;

/// Length of a fingerprint in hex characters.
pub const LEN: usize = 12;

/// Fingerprint of a secret value: the first 12 hex characters of its SHA-256.
pub fn of(secret: &[u8]) -> String {
    let digest = digest::digest(&digest::SHA256, secret);
    let mut hex = hex::encode(digest.as_ref());
    hex.truncate(LEN);
    hex
}

/// Obfuscates an identifier for display in audit records, keeping a recognisable prefix
/// (`tok-1234567890abcdef` → `tok-1234****cdef`; the llm-proxy seed's convention). Values
/// without a known prefix keep only their first and last two characters.
pub fn obfuscate(id: &str) -> String {
    const PREFIXES: [&str; 8] = [
        "tok-", "sk-", "api_", "Bearer ", "ghp_", "wk_", "vk_", "wa_",
    ];
    let chars: Vec<char> = id.chars().collect();
    if let Some(prefix) = PREFIXES.iter().find(|p| id.starts_with(*p)) {
        let rest: Vec<char> = id[prefix.len()..].chars().collect();
        if rest.len() >= 12 {
            let head: String = rest[..4].iter().collect();
            let tail: String = rest[rest.len() - 4..].iter().collect();
            return format!("{prefix}{head}****{tail}");
        }
        return format!("{prefix}****");
    }
    if chars.len() >= 8 {
        let head: String = chars[..2].iter().collect();
        let tail: String = chars[chars.len() - 2..].iter().collect();
        return format!("{head}{}{tail}", "*".repeat(8));
    }
    "*".repeat(chars.len().max(4))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_stable_and_short() {
        assert_eq!(of(b"sk-abc"), of(b"sk-abc"));
        assert_ne!(of(b"sk-abc"), of(b"sk-abd"));
        assert_eq!(of(b"x").len(), LEN);
    }

    #[test]
    fn obfuscates_like_the_seed() {
        assert_eq!(obfuscate("tok-1234567890abcdef"), "tok-1234****cdef");
        assert_eq!(obfuscate("abcd1234efgh5678"), "ab********78");
        assert_eq!(obfuscate("sk-1"), "sk-****");
        assert_eq!(obfuscate("abc"), "****");
    }
}
