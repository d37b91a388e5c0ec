//! The built-in detectors — a pattern that finds candidates and a validator that keeps only
//! real ones — and custom regular expressions (pattern only).
//!
//! | detector | finds | validated by |
//! |---|---|---|
//! | `card` | 13–19 digits, single spaces or dashes between them allowed | the Luhn checksum; not all zeros |
//! | `ssn` | `AAA-GG-SSSS` (dashes or spaces) | area not 000, 666 or 900–999; group not 00; serial not 0000; not the advertised 078-05-1120 / 219-09-9999 |
//! | `openai_key` | `sk-` then 20 or more of `[A-Za-z0-9_-]` | not `sk-ant-…` (that is `anthropic_key`) |
//! | `anthropic_key` | `sk-ant-` then 20 or more of `[A-Za-z0-9_-]` | — |
//! | `aws_access_key` | `AKIA`/`ASIA` then 16 of `[A-Z0-9]` | — |
//! | `warden_credential` | `wk_`, `wa_`, `wn_` then 48 characters | Warden's own format and CRC-32 ([`crate::credential::check_format`]) |
//!
//! Word boundaries are ASCII (`(?-u:\b)`) so that the set stays on the regex crate's fast
//! DFA path for any text.

use crate::credential::{self, Kind};

/// What a rule looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Detector {
    Card,
    Ssn,
    OpenAiKey,
    AnthropicKey,
    AwsAccessKey,
    WardenCredential,
    /// A custom regular expression (the rule's `pattern`).
    Regex,
}

impl Detector {
    /// The built-in detectors, in the order `enable-builtin` adds them.
    pub const BUILTIN: [Detector; 6] = [
        Self::Card,
        Self::Ssn,
        Self::OpenAiKey,
        Self::AnthropicKey,
        Self::AwsAccessKey,
        Self::WardenCredential,
    ];

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "card" => Some(Self::Card),
            "ssn" => Some(Self::Ssn),
            "openai_key" => Some(Self::OpenAiKey),
            "anthropic_key" => Some(Self::AnthropicKey),
            "aws_access_key" => Some(Self::AwsAccessKey),
            "warden_credential" => Some(Self::WardenCredential),
            "regex" => Some(Self::Regex),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Card => "card",
            Self::Ssn => "ssn",
            Self::OpenAiKey => "openai_key",
            Self::AnthropicKey => "anthropic_key",
            Self::AwsAccessKey => "aws_access_key",
            Self::WardenCredential => "warden_credential",
            Self::Regex => "regex",
        }
    }

    /// The candidate pattern of a built-in detector; `None` for [`Detector::Regex`].
    pub fn builtin_pattern(self) -> Option<&'static str> {
        Some(match self {
            Self::Card => r"(?-u:\b)(?:[0-9][ -]?){12,18}[0-9](?-u:\b)",
            Self::Ssn => r"(?-u:\b)[0-9]{3}[- ][0-9]{2}[- ][0-9]{4}(?-u:\b)",
            Self::OpenAiKey => r"(?-u:\b)sk-[A-Za-z0-9_-]{20,}",
            Self::AnthropicKey => r"(?-u:\b)sk-ant-[A-Za-z0-9_-]{20,}",
            Self::AwsAccessKey => r"(?-u:\b)(?:AKIA|ASIA)[A-Z0-9]{16}(?-u:\b)",
            Self::WardenCredential => r"(?-u:\b)w[kan]_[A-Za-z0-9_-]{48,}",
            Self::Regex => return None,
        })
    }

    /// How much of a candidate the pattern found is real: its length in bytes, or `None`.
    /// A card candidate that fails may hold a card followed by more digits
    /// (`4111 1111 1111 1111 2029`): its prefixes that end before a separator are tried.
    pub fn validated_len(self, candidate: &str) -> Option<usize> {
        if self != Self::Card {
            return self.validate(candidate).then_some(candidate.len());
        }
        if card(candidate) {
            return Some(candidate.len());
        }
        candidate
            .char_indices()
            .rev()
            .filter(|(_, c)| matches!(c, ' ' | '-'))
            .map(|(i, _)| i)
            .find(|&i| candidate.get(..i).is_some_and(card))
    }

    /// Whether a candidate the pattern found is real.
    pub fn validate(self, candidate: &str) -> bool {
        match self {
            Self::Card => card(candidate),
            Self::Ssn => ssn(candidate),
            Self::OpenAiKey => !candidate.starts_with("sk-ant-"),
            Self::WardenCredential => {
                credential::kind_of(candidate).is_some_and(|k| credential_ok(k, candidate))
            }
            Self::AnthropicKey | Self::AwsAccessKey | Self::Regex => true,
        }
    }
}

fn credential_ok(kind: Kind, candidate: &str) -> bool {
    credential::check_format(kind, candidate).is_ok()
}

/// The Luhn checksum of a string of ASCII digits.
pub fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(d.wrapping_sub(b'0'));
        if v > 9 {
            return false;
        }
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

/// A payment card number: 13 to 19 digits passing Luhn, not all zeros.
fn card(candidate: &str) -> bool {
    let digits: Vec<u8> = candidate.bytes().filter(u8::is_ascii_digit).collect();
    (13..=19).contains(&digits.len()) && digits.iter().any(|d| *d != b'0') && luhn(&digits)
}

/// A US social security number that could have been issued.
fn ssn(candidate: &str) -> bool {
    let digits: Vec<u8> = candidate.bytes().filter(u8::is_ascii_digit).collect();
    if digits.len() != 9 {
        return false;
    }
    let num = |r: std::ops::Range<usize>| {
        digits.get(r).map_or(0, |d| {
            d.iter().fold(0u32, |n, b| n * 10 + u32::from(b - b'0'))
        })
    };
    let (area, group, serial) = (num(0..3), num(3..5), num(5..9));
    let advertised = matches!((area, group, serial), (78, 5, 1120) | (219, 9, 9999));
    area != 0 && area != 666 && area < 900 && group != 0 && serial != 0 && !advertised
}
