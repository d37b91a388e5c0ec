//! `[dlp]` in the control plane's config file: the built-in rules switched on with one
//! action, and further rules — a built-in detector or a custom regular expression, for
//! the whole gateway or one model, virtual key or JWT subject. Rules from the file are
//! stored with source `config` at every start; a `config` rule no longer in the file is
//! removed then.
//!
//! ```toml
//! [dlp]
//! builtin = "redact"                 # card, ssn, openai_key, anthropic_key, aws_access_key,
//!                                    # warden_credential — each named after its detector
//! [[dlp.rules]]
//! name = "project-codes"
//! regex = "PRJ-[0-9]{4}"            # or: detector = "card"
//! action = "block"
//! model = "gpt-4o"                   # or virtual_key = "vk_…", subject = "svc"; none: all
//! ```

use serde::Deserialize;
use warden_core::dlp::{self, Action, Detector, RuleSpec, Scope};

use super::{ConfigError, invalid};

/// `[dlp]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDlp {
    /// `block`, `redact` or `flag`: every built-in detector as a gateway-wide rule with
    /// this action. Absent: the built-ins are off.
    pub builtin: Option<String>,
    #[serde(default)]
    pub rules: Vec<RawDlpRule>,
}

/// One `[[dlp.rules]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDlpRule {
    pub name: String,
    /// A built-in detector (`card`, `ssn`, …); or give `regex`.
    pub detector: Option<String>,
    pub regex: Option<String>,
    pub action: String,
    pub model: Option<String>,
    pub virtual_key: Option<String>,
    pub subject: Option<String>,
}

fn action(field: &str, s: &str) -> Result<Action, ConfigError> {
    Action::parse(s).ok_or_else(|| invalid(field, "must be block, redact or flag"))
}

impl RawDlp {
    /// The rules the file declares, each compiled once here (and the set as a whole).
    pub fn build(self) -> Result<Vec<RuleSpec>, ConfigError> {
        let mut specs = Vec::new();
        if let Some(a) = &self.builtin {
            let action = action("dlp.builtin", a)?;
            specs.extend(Detector::BUILTIN.iter().map(|d| RuleSpec {
                name: d.as_str().to_owned(),
                detector: *d,
                pattern: String::new(),
                action,
                scope: Scope::Gateway,
            }));
        }
        for (i, r) in self.rules.into_iter().enumerate() {
            let field = |f: &str| format!("dlp.rules[{i}].{f}");
            let (detector, pattern) = match (r.detector, r.regex) {
                (Some(d), None) => (
                    Detector::parse(&d)
                        .filter(|d| *d != Detector::Regex)
                        .ok_or_else(|| invalid(&field("detector"), "unknown built-in detector"))?,
                    String::new(),
                ),
                (None, Some(p)) => (Detector::Regex, p),
                _ => {
                    return Err(invalid(
                        &field("detector"),
                        "give exactly one of `detector` and `regex`",
                    ));
                }
            };
            let scope = match (r.model, r.virtual_key, r.subject) {
                (None, None, None) => Scope::Gateway,
                (Some(m), None, None) => Scope::Model(m),
                (None, Some(v), None) => Scope::VirtualKey(v),
                (None, None, Some(s)) => Scope::Subject(s),
                _ => {
                    return Err(invalid(
                        &field("model"),
                        "give at most one of `model`, `virtual_key` and `subject`",
                    ));
                }
            };
            specs.push(RuleSpec {
                name: r.name,
                detector,
                pattern,
                action: action(&field("action"), &r.action)?,
                scope,
            });
        }
        dlp::RuleSet::compile(specs.clone()).map_err(|e| invalid("dlp", e.to_string()))?;
        Ok(specs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(toml_text: &str) -> Result<Vec<RuleSpec>, String> {
        let raw: RawDlp = toml::from_str(toml_text).map_err(|e| e.to_string())?;
        raw.build().map_err(|e| e.to_string())
    }

    #[test]
    fn builtin_and_custom_rules_are_declared() {
        let rules = build(
            r#"
            builtin = "redact"
            [[rules]]
            name = "codes"
            regex = "PRJ-[0-9]{4}"
            action = "block"
            model = "gpt"
            "#,
        )
        .unwrap_or_default();
        assert_eq!(rules.len(), 7);
        assert!(rules.iter().take(6).all(|r| r.action == Action::Redact));
        assert_eq!(rules[6].scope, Scope::Model("gpt".into()));
        assert!(build("").unwrap_or_default().is_empty());
    }

    #[test]
    fn bad_rules_name_the_field_or_rule() {
        for (text, needle) in [
            ("builtin = \"drop\"", "dlp.builtin"),
            (
                "[[rules]]\nname = \"x\"\nregex = \"(\"\naction = \"flag\"",
                "rule x: invalid regular expression",
            ),
            (
                "[[rules]]\nname = \"x\"\ndetector = \"card\"\nregex = \"a\"\naction = \"flag\"",
                "dlp.rules[0].detector",
            ),
            (
                "[[rules]]\nname = \"x\"\ndetector = \"card\"\naction = \"flag\"\nmodel = \"m\"\nsubject = \"s\"",
                "dlp.rules[0].model",
            ),
            (
                "[[rules]]\nname = \"x\"\nregex = \"a\"\naction = \"flag\"\nbogus = 1",
                "bogus",
            ),
        ] {
            let e = build(text).unwrap_err();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }
}
