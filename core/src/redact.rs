//! Redaction of secrets from text: every log line passes through [`redact`] before it is
//! written (see [`crate::telemetry`]), and so does any upstream error message before it is
//! passed on to a client.
//!
//! Two nets: patterns for the shapes secrets take (`sk-…`, `Bearer …`, `x-api-key: …`,
//! JSON `"api_key": "…"`, Warden's own `wk_`/`wa_`/`wn_` credentials, JWTs), and the exact
//! values of secrets this process knows about ([`register`]), such as provider keys that
//! follow no known pattern. Each match becomes `[REDACTED:<fingerprint>]`, so that two log
//! lines about one key can still be correlated.

use std::borrow::Cow;
use std::sync::{LazyLock, RwLock};

use regex::{Captures, Regex};
use secrecy::{ExposeSecret, SecretString};

struct Pattern {
    regex: Regex,
    /// Index of the capture group holding the secret; the rest of the match is kept.
    group: usize,
}

#[expect(
    clippy::expect_used,
    reason = "the patterns are constants checked by tests"
)]
static PATTERNS: LazyLock<Vec<Pattern>> = LazyLock::new(|| {
    let p = |re: &str, group| Pattern {
        regex: Regex::new(re).expect("redaction pattern compiles"),
        group,
    };
    vec![
        // Warden's own opaque credentials.
        p(r"\b(w[kan]_[A-Za-z0-9_-]{20,})", 1),
        // JWTs (any, including Warden's).
        p(
            r"(eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*)",
            1,
        ),
        // OpenAI / Anthropic style keys (sk-…, sk-proj-…, sk-ant-…).
        p(r"\b(sk-[A-Za-z0-9_-]{6,})", 1),
        // Authorization: Bearer <anything>.
        p(r"(?i)\bbearer\s+([^\s,;'\x22]{4,})", 1),
        // x-api-key header in any rendering (`x-api-key: v`, `"x-api-key": "v"`).
        p(r#"(?i)x-api-key\x22?\s*[:=]\s*\x22?([^\s\x22,;}]{4,})"#, 1),
        // Passwords in URLs (`redis://user:password@host`, `postgres://u:p@h/db`).
        p(r"[a-z][a-z0-9+.-]*://[^/\s:@]*:([^@\s/]{3,})@", 1),
        // JSON / query-string api_key fields.
        p(
            r#"(?i)\x22?api[_-]?key\x22?\s*[:=]\s*\x22?([^\s\x22,;}&]{4,})"#,
            1,
        ),
    ]
});

static KNOWN: RwLock<Vec<SecretString>> = RwLock::new(Vec::new());

/// Replaces the set of exact secret values to redact beyond the patterns (e.g. every
/// provider key in the current snapshot). Values shorter than 6 bytes are ignored, as
/// redacting them would mangle ordinary text.
pub fn register(secrets: impl IntoIterator<Item = SecretString>) {
    let list: Vec<SecretString> = secrets
        .into_iter()
        .filter(|s| s.expose_secret().len() >= 6)
        .collect();
    if let Ok(mut known) = KNOWN.write() {
        *known = list;
    }
}

fn marker(secret: &str) -> String {
    format!("[REDACTED:{}]", crate::fingerprint::of(secret.as_bytes()))
}

/// Returns `text` with every secret replaced by a fingerprint marker.
pub fn redact(text: &str) -> Cow<'_, str> {
    let mut out: Cow<'_, str> = Cow::Borrowed(text);
    if let Ok(known) = KNOWN.read() {
        for secret in known.iter() {
            let s = secret.expose_secret();
            if out.contains(s) {
                out = Cow::Owned(out.replace(s, &marker(s)));
            }
        }
    }
    for pattern in PATTERNS.iter() {
        if !pattern.regex.is_match(&out) {
            continue;
        }
        let replaced = pattern
            .regex
            .replace_all(&out, |caps: &Captures<'_>| {
                let whole = caps.get(0).map_or("", |m| m.as_str());
                let Some(secret) = caps.get(pattern.group) else {
                    return whole.to_owned();
                };
                if secret.as_str().starts_with("[REDACTED:") {
                    return whole.to_owned();
                }
                let start = secret.start() - caps.get(0).map_or(0, |m| m.start());
                let mut s = String::with_capacity(whole.len());
                s.push_str(&whole[..start]);
                s.push_str(&marker(secret.as_str()));
                s.push_str(&whole[start + secret.as_str().len()..]);
                s
            })
            .into_owned();
        out = Cow::Owned(replaced);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_known_shapes() {
        let cases = [
            "upstream said: Incorrect API key provided: sk-proj-abcdef123456",
            "Authorization: Bearer abc.def-ghijkl",
            r#"{"x-api-key": "ant-very-secret"}"#,
            r#"{"api_key":"s3cr3t-value"}"#,
            "key=wk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "token eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl",
            "connecting to redis://warden:s3cr3t-value@10.0.0.5:6379/0 failed",
        ];
        for case in cases {
            let out = redact(case);
            assert!(out.contains("[REDACTED:"), "not redacted: {case} -> {out}");
            for secret in [
                "sk-proj-abcdef123456",
                "abc.def-ghijkl",
                "ant-very-secret",
                "s3cr3t-value",
                "wk_AAAA",
                "c2lnbmF0dXJl",
            ] {
                assert!(!out.contains(secret), "{secret} survived in {out}");
            }
        }
    }

    #[test]
    fn leaves_ordinary_text_alone() {
        let text = "request finished status=200 model=gpt-4o latency_ms=12";
        assert!(matches!(redact(text), Cow::Borrowed(_)));
    }

    #[test]
    fn redacts_registered_values_and_is_stable() {
        register([SecretString::from("zz-custom-provider-key-123")]);
        let a = redact("failed with zz-custom-provider-key-123 today");
        let b = redact("again zz-custom-provider-key-123");
        assert!(!a.contains("zz-custom"));
        let fp = crate::fingerprint::of(b"zz-custom-provider-key-123");
        assert!(a.contains(&fp) && b.contains(&fp));
        register([]);
    }
}
