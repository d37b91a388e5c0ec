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

use aho_corasick::{AhoCorasick, MatchKind};
use regex::{Captures, Regex};
use secrecy::{ExposeSecret, SecretString};

struct Pattern {
    regex: Regex,
    /// Index of the capture group holding the secret; the rest of the match is kept.
    group: usize,
    /// Literals of which every match holds at least one, compared ASCII-case-insensitively
    /// (see [`TRIGGERS`]).
    triggers: &'static [&'static str],
}

/// The literals of the `(?i)` patterns that mention `api key`: `(?i)` is Unicode-aware, so
/// the Kelvin sign `K` (U+212A) matches `k` there; it is listed, as the ASCII
/// case-insensitive prefilter would not see it otherwise.
const API_KEY: &[&str] = &[
    "api-key",
    "api_key",
    "apikey",
    "api-\u{212a}ey",
    "api_\u{212a}ey",
    "api\u{212a}ey",
];

#[expect(
    clippy::expect_used,
    reason = "the patterns are constants checked by tests"
)]
static PATTERNS: LazyLock<Vec<Pattern>> = LazyLock::new(|| {
    let p = |re: &str, group, triggers| Pattern {
        regex: Regex::new(re).expect("redaction pattern compiles"),
        group,
        triggers,
    };
    vec![
        // Warden's own opaque credentials.
        p(r"\b(w[kan]_[A-Za-z0-9_-]{20,})", 1, &["wk_", "wa_", "wn_"]),
        // JWTs (any, including Warden's).
        p(
            r"(eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*)",
            1,
            &["eyJ"],
        ),
        // OpenAI / Anthropic style keys (sk-…, sk-proj-…, sk-ant-…).
        p(r"\b(sk-[A-Za-z0-9_-]{6,})", 1, &["sk-"]),
        // Authorization: Bearer <anything>.
        p(r"(?i)\bbearer\s+([^\s,;'\x22]{4,})", 1, &["bearer"]),
        // x-api-key header in any rendering (`x-api-key: v`, `"x-api-key": "v"`).
        p(
            r#"(?i)x-api-key\x22?\s*[:=]\s*\x22?([^\s\x22,;}]{4,})"#,
            1,
            API_KEY,
        ),
        // Passwords in URLs (`redis://user:password@host`, `postgres://u:p@h/db`).
        p(r"[a-z][a-z0-9+.-]*://[^/\s:@]*:([^@\s/]{3,})@", 1, &["://"]),
        // JSON / query-string api_key fields.
        p(
            r#"(?i)\x22?api[_-]?key\x22?\s*[:=]\s*\x22?([^\s\x22,;}&]{4,})"#,
            1,
            API_KEY,
        ),
    ]
});

/// One automaton over every pattern's trigger literals: a pattern none of whose literals
/// occurs in a line cannot match it, so a line without any (most log lines) costs one
/// scan instead of one regex search per pattern.
struct Triggers {
    automaton: AhoCorasick,
    /// The pattern (bit index into [`PATTERNS`]) of each literal of the automaton.
    pattern_of: Vec<u32>,
}

#[expect(
    clippy::expect_used,
    reason = "the literals are constants checked by tests"
)]
static TRIGGERS: LazyLock<Triggers> = LazyLock::new(|| {
    let mut literals = Vec::new();
    let mut pattern_of = Vec::new();
    for (i, pattern) in PATTERNS.iter().enumerate() {
        for literal in pattern.triggers {
            literals.push(*literal);
            pattern_of.push(1 << i);
        }
    }
    let automaton = AhoCorasick::builder()
        .ascii_case_insensitive(true)
        .match_kind(MatchKind::Standard)
        .build(&literals)
        .expect("trigger literals build an automaton");
    Triggers {
        automaton,
        pattern_of,
    }
});

/// The patterns (bits of [`PATTERNS`] indices) that can match somewhere in `text`.
fn candidates(text: &str) -> u32 {
    let triggers = &*TRIGGERS;
    let mut mask = 0;
    // Overlapping: one literal may hide in or overlap another (`api-keyJ…` and `eyJ…`).
    for m in triggers.automaton.find_overlapping_iter(text) {
        mask |= triggers.pattern_of[m.pattern().as_usize()];
    }
    mask
}

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
    redact_with(text, candidates)
}

/// [`redact`], trying only the patterns that `prefilter` says can match.
fn redact_with(text: &str, prefilter: fn(&str) -> u32) -> Cow<'_, str> {
    let mut out: Cow<'_, str> = Cow::Borrowed(text);
    if let Ok(known) = KNOWN.read() {
        for secret in known.iter() {
            let s = secret.expose_secret();
            if out.contains(s) {
                out = Cow::Owned(out.replace(s, &marker(s)));
            }
        }
    }
    let mut mask = prefilter(&out);
    for (i, pattern) in PATTERNS.iter().enumerate() {
        if mask & (1 << i) == 0 || !pattern.regex.is_match(&out) {
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
        // The text changed: look again for the patterns still to come.
        mask = prefilter(&out);
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

    /// Lines that hit the trigger literals with and without a secret behind them.
    const NEAR_MISSES: [&str; 14] = [
        "request forwarded request_id=0193 endpoint=/v1/chat/completions principal=vk:team-a model=gpt-4o provider=openai status=200 latency_ms=3",
        "x-api-\u{212a}ey: kelvin-secret-value",
        "API\u{212a}EY=kelvin-secret-value",
        "api_keyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl",
        "bearer abc",
        "BEARER  tok-abcdef, next",
        "task-abcdefgh sk-abc sk-abcdefgh",
        "see https://example.com/path and redis://host:6379",
        "postgres://u:pa@h/db then postgres://user:password@db/x",
        "wk_short wa_AAAAAAAAAAAAAAAAAAAAAAAAA",
        "{\"Api-Key\": \"[REDACTED:0123456789ab]\"}",
        "eyJ.eyJ.eyJ eyJhbGciOiJ9.short",
        "\"x-api-key\"=\"v1234\"; api_key=q1234&b=2",
        "SK-UPPERCASE-not-a-key bEaReR\tmixed-case-token",
    ];

    #[test]
    fn the_prefilter_changes_nothing() {
        for line in NEAR_MISSES {
            assert_eq!(
                redact(line),
                redact_with(line, |_| u32::MAX),
                "prefiltered and full redaction differ on {line}"
            );
        }
        for secret in [
            "kelvin-secret-value",
            "c2lnbmF0dXJl",
            "password",
            "v1234",
            "q1234",
        ] {
            for line in NEAR_MISSES {
                assert!(
                    !redact(line).contains(secret),
                    "{secret} survived in {line}"
                );
            }
        }
    }

    /// `(?i)` in a pattern is Unicode-aware: every character it lets stand for a letter of
    /// a case-insensitive trigger literal must be one the prefilter looks for.
    #[test]
    fn the_triggers_cover_unicode_case_folding() {
        for letter in ["b", "e", "a", "r", "p", "i", "k", "y"] {
            let re = Regex::new(&format!("(?i)^{letter}$")).unwrap();
            let folded: Vec<char> = (0..=0x10ffff_u32)
                .filter_map(char::from_u32)
                .filter(|c| !c.is_ascii() && re.is_match(c.encode_utf8(&mut [0; 4])))
                .collect();
            let expected: &[char] = if letter == "k" { &['\u{212a}'] } else { &[] };
            assert_eq!(folded, expected, "non-ASCII forms of {letter}");
        }
        assert_eq!(
            candidates("X-API-\u{212a}EY"),
            candidates("x-api-key"),
            "the Kelvin sign triggers the api-key patterns"
        );
        assert_eq!(candidates("request forwarded status=200"), 0);
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
