//! Data loss prevention on request (and response) text: rules that find payment card
//! numbers, US social security numbers, provider and Warden credentials, or what a custom
//! regular expression matches, and `block`, `redact` or `flag` the request. Both planes
//! compile rules here — the control plane to refuse a bad rule when it is set, the node
//! once per snapshot — so a rule means the same thing on both.
//!
//! Where to start: [`RuleSpec`] (what an operator sets), [`RuleSet::compile`], then
//! [`Scan`] (one request) and [`StreamScan`] (a streamed answer). The detectors and their
//! validators are in [`detector`].
//!
//! **One pass over the text for all rules.** A [`regex::RegexSet`] of every rule's pattern
//! runs over a text once and says which patterns occur at all; only those rules' own regexes
//! are then run for positions, and the validators (Luhn, SSN ranges, credential checksum)
//! look at each candidate. Text with no candidate costs the one set pass.
//!
//! The matched text never leaves this module: findings are rule names and counts.

pub mod detector;

use std::fmt::Write as _;

use regex::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};

pub use detector::Detector;

/// Longest custom pattern accepted, in bytes.
pub const MAX_PATTERN_LEN: usize = 1024;
/// Most rules in force at once.
pub const MAX_RULES: usize = 256;
/// Compiled-size ceiling of one custom regular expression (the `regex` crate's size limit).
const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Compiled-size ceiling of the set of all patterns.
const SET_SIZE_LIMIT: usize = 32 << 20;

/// What a rule does when it matches a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Refuse the request (400, naming the rule, never the match).
    Block,
    /// Replace the match with `[REDACTED:<rule>]` before forwarding.
    Redact,
    /// Audit only.
    Flag,
}

impl Action {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "block" => Some(Self::Block),
            "redact" => Some(Self::Redact),
            "flag" => Some(Self::Flag),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Block => "block",
            Self::Redact => "redact",
            Self::Flag => "flag",
        }
    }
}

/// Which requests a rule applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Every request.
    Gateway,
    /// Requests for one model alias (as the client named it).
    Model(String),
    /// Requests made with one virtual key (its id, `vk_…`).
    VirtualKey(String),
    /// Requests made with a JWT of one subject.
    Subject(String),
}

impl Scope {
    /// `gateway`, `model:<alias>`, `vkey:<id>` or `sub:<subject>`.
    pub fn key(&self) -> String {
        match self {
            Self::Gateway => "gateway".to_owned(),
            Self::Model(m) => format!("model:{m}"),
            Self::VirtualKey(id) => format!("vkey:{id}"),
            Self::Subject(s) => format!("sub:{s}"),
        }
    }

    /// The kind and id as stored (`gateway`/``, `model`/alias, `vkey`/id, `subject`/sub).
    pub fn parts(&self) -> (&'static str, &str) {
        match self {
            Self::Gateway => ("gateway", ""),
            Self::Model(m) => ("model", m),
            Self::VirtualKey(id) => ("vkey", id),
            Self::Subject(s) => ("subject", s),
        }
    }

    /// The inverse of [`Scope::parts`].
    pub fn from_parts(kind: &str, id: &str) -> Option<Self> {
        match (kind, id) {
            ("gateway", "") => Some(Self::Gateway),
            ("model", m) if !m.is_empty() => Some(Self::Model(m.to_owned())),
            ("vkey", v) if !v.is_empty() => Some(Self::VirtualKey(v.to_owned())),
            ("subject", s) if !s.is_empty() => Some(Self::Subject(s.to_owned())),
            _ => None,
        }
    }
}

/// One rule as an operator sets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSpec {
    /// `[a-z0-9_-]`, 1 to 64 characters; shown in `[REDACTED:<name>]`, errors and audit.
    pub name: String,
    pub detector: Detector,
    /// The regular expression of a [`Detector::Regex`] rule; empty for built-ins.
    pub pattern: String,
    pub action: Action,
    pub scope: Scope,
}

/// Why a rule (or a set of rules) cannot be compiled. Never carries text a rule matched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DlpError {
    #[error("rule name {0:?} must be 1 to 64 characters of a-z, 0-9, _ and -")]
    InvalidName(String),
    #[error("rule {0}: a regex rule needs a pattern")]
    MissingPattern(String),
    #[error("rule {0}: a built-in detector takes no pattern")]
    UnexpectedPattern(String),
    #[error("rule {rule}: pattern longer than {MAX_PATTERN_LEN} bytes")]
    PatternTooLong { rule: String },
    #[error("rule {rule}: invalid regular expression: {reason}")]
    InvalidRegex { rule: String, reason: String },
    #[error("rule {0}: the pattern matches the empty string")]
    MatchesEmpty(String),
    #[error("rule {0}: the scope needs a non-empty id of at most 256 characters")]
    InvalidScope(String),
    #[error("rule {0} is defined twice")]
    Duplicate(String),
    #[error("more than {MAX_RULES} rules")]
    TooMany,
    #[error("the rules together are too large to compile ({0})")]
    TooLarge(String),
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// The regular expression of one rule, checked alone (the control plane calls this when a
/// rule is set, so a bad rule is refused before it reaches a node).
pub fn check(spec: &RuleSpec) -> Result<(), DlpError> {
    compile_one(spec).map(|_| ())
}

fn compile_one(spec: &RuleSpec) -> Result<Regex, DlpError> {
    if !valid_name(&spec.name) {
        return Err(DlpError::InvalidName(spec.name.chars().take(80).collect()));
    }
    let (_, id) = spec.scope.parts();
    if spec.scope != Scope::Gateway && (id.trim().is_empty() || id.len() > 256) {
        return Err(DlpError::InvalidScope(spec.name.clone()));
    }
    let pattern = match spec.detector.builtin_pattern() {
        Some(p) => {
            if !spec.pattern.is_empty() {
                return Err(DlpError::UnexpectedPattern(spec.name.clone()));
            }
            p
        }
        None => {
            if spec.pattern.is_empty() {
                return Err(DlpError::MissingPattern(spec.name.clone()));
            }
            if spec.pattern.len() > MAX_PATTERN_LEN {
                return Err(DlpError::PatternTooLong {
                    rule: spec.name.clone(),
                });
            }
            spec.pattern.as_str()
        }
    };
    let regex = RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| DlpError::InvalidRegex {
            rule: spec.name.clone(),
            reason: regex_reason(&e),
        })?;
    if regex.is_match("") {
        return Err(DlpError::MatchesEmpty(spec.name.clone()));
    }
    Ok(regex)
}

/// A regex error in one line (the crate's own message spans several, with a caret
/// diagram).
fn regex_reason(e: &regex::Error) -> String {
    match e {
        regex::Error::CompiledTooBig(limit) => {
            format!("compiles to more than {limit} bytes")
        }
        other => other
            .to_string()
            .lines()
            .filter(|l| l.trim_start().starts_with("error:"))
            .map(|l| l.trim().trim_start_matches("error:").trim().to_owned())
            .next()
            .unwrap_or_else(|| "syntax error".to_owned()),
    }
}

struct Compiled {
    spec: RuleSpec,
    /// `gateway`, `model:<alias>`, `vkey:<id>` or `sub:<subject>`.
    scope_key: String,
    regex: Regex,
}

/// Every rule in force, compiled once (per snapshot on a node).
pub struct RuleSet {
    rules: Vec<Compiled>,
    /// Pattern `i` is rule `i`'s.
    set: RegexSet,
}

impl std::fmt::Debug for RuleSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleSet")
            .field("rules", &self.rules.len())
            .finish_non_exhaustive()
    }
}

impl Default for RuleSet {
    fn default() -> Self {
        Self {
            rules: Vec::new(),
            set: RegexSet::empty(),
        }
    }
}

impl RuleSet {
    /// Compiles `specs`; the first bad rule fails the whole set.
    pub fn compile(specs: Vec<RuleSpec>) -> Result<Self, DlpError> {
        if specs.len() > MAX_RULES {
            return Err(DlpError::TooMany);
        }
        let mut rules = Vec::with_capacity(specs.len());
        for spec in specs {
            if rules.iter().any(|r: &Compiled| r.spec.name == spec.name) {
                return Err(DlpError::Duplicate(spec.name));
            }
            let regex = compile_one(&spec)?;
            rules.push(Compiled {
                scope_key: spec.scope.key(),
                spec,
                regex,
            });
        }
        let set = RegexSetBuilder::new(rules.iter().map(|r| r.regex.as_str()))
            .size_limit(SET_SIZE_LIMIT)
            .dfa_size_limit(SET_SIZE_LIMIT)
            .build()
            .map_err(|e| DlpError::TooLarge(regex_reason(&e)))?;
        Ok(Self { rules, set })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// The rules, in order.
    pub fn specs(&self) -> impl Iterator<Item = &RuleSpec> {
        self.rules.iter().map(|r| &r.spec)
    }

    /// The indexes of the rules that apply to a request for `model` by `owner`
    /// (`vkey:<id>` or `sub:<subject>`); empty (no allocation) when none does.
    pub fn select(&self, model: &str, owner: &str) -> Vec<usize> {
        if self.rules.is_empty() {
            return Vec::new();
        }
        self.rules
            .iter()
            .enumerate()
            .filter(|(_, r)| match &r.spec.scope {
                Scope::Gateway => true,
                Scope::Model(m) => m == model,
                Scope::VirtualKey(_) | Scope::Subject(_) => r.scope_key == owner,
            })
            .map(|(i, _)| i)
            .collect()
    }

    /// The validated matches of the `selected` rules in `text`, in order of position,
    /// overlaps removed (the earlier, then the longer, match wins). One pass of the set
    /// over the text; the rules' own regexes only where the set found their pattern.
    fn hits(&self, selected: &[usize], text: &str) -> Vec<Hit> {
        let found = self.set.matches(text);
        if !found.matched_any() {
            return Vec::new();
        }
        let mut hits = Vec::new();
        for &i in selected {
            if !found.matched(i) {
                continue;
            }
            let Some(rule) = self.rules.get(i) else {
                continue;
            };
            for m in rule.regex.find_iter(text) {
                if m.start() == m.end() {
                    continue;
                }
                if let Some(len) = rule.spec.detector.validated_len(m.as_str()) {
                    hits.push(Hit {
                        rule: i,
                        start: m.start(),
                        end: m.start() + len,
                    });
                }
            }
        }
        if hits.len() > 1 {
            hits.sort_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
            let mut kept: Vec<Hit> = Vec::with_capacity(hits.len());
            for h in hits {
                if kept.last().is_none_or(|k| h.start >= k.end) {
                    kept.push(h);
                }
            }
            hits = kept;
        }
        hits
    }

    fn name(&self, rule: usize) -> &str {
        self.rules.get(rule).map_or("", |r| r.spec.name.as_str())
    }

    fn action(&self, rule: usize) -> Action {
        self.rules.get(rule).map_or(Action::Flag, |r| r.spec.action)
    }
}

#[derive(Debug, Clone, Copy)]
struct Hit {
    rule: usize,
    start: usize,
    end: usize,
}

/// What the rules found in one request (or answer): per rule, how many matches. Holds no
/// matched text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Findings {
    /// (rule name, action, count), in order of first finding.
    pub rules: Vec<(String, Action, u32)>,
}

impl Findings {
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    fn add(&mut self, name: &str, action: Action) {
        match self.rules.iter_mut().find(|(n, _, _)| n == name) {
            Some((_, _, c)) => *c = c.saturating_add(1),
            None => self.rules.push((name.to_owned(), action, 1)),
        }
    }

    /// The first `block` rule found.
    pub fn blocked_by(&self) -> Option<&str> {
        self.rules
            .iter()
            .find(|(_, a, _)| *a == Action::Block)
            .map(|(n, _, _)| n.as_str())
    }

    /// For the audit detail: `card:redact:2,ssn:flag:1`.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        for (i, (name, action, count)) in self.rules.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{name}:{}:{count}", action.as_str());
        }
        out
    }

    /// For the audit detail of an answer (every rule only flags there): `card:2,ssn:1`.
    pub fn counts(&self) -> String {
        let mut out = String::new();
        for (i, (name, _, count)) in self.rules.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{name}:{count}");
        }
        out
    }
}

/// The scan of one request: the rules that apply to it, and what they found so far.
#[derive(Debug)]
pub struct Scan<'a> {
    rules: &'a RuleSet,
    selected: Vec<usize>,
    findings: Findings,
}

impl<'a> Scan<'a> {
    /// A scan with the `selected` rules of `rules` ([`RuleSet::select`]).
    pub fn new(rules: &'a RuleSet, selected: Vec<usize>) -> Self {
        Self {
            rules,
            selected,
            findings: Findings::default(),
        }
    }

    /// Whether no rule applies (then nothing needs scanning).
    pub fn is_idle(&self) -> bool {
        self.selected.is_empty()
    }

    /// Scans one text part; returns its replacement when a `redact` rule matched in it.
    pub fn text(&mut self, text: &str) -> Option<String> {
        if self.selected.is_empty() {
            return None;
        }
        let hits = self.rules.hits(&self.selected, text);
        if hits.is_empty() {
            return None;
        }
        let mut out: Option<String> = None;
        let mut copied = 0;
        for h in &hits {
            let name = self.rules.name(h.rule);
            let action = self.rules.action(h.rule);
            self.findings.add(name, action);
            if action == Action::Redact {
                let o = out.get_or_insert_with(|| String::with_capacity(text.len()));
                o.push_str(text.get(copied..h.start).unwrap_or_default());
                let _ = write!(o, "[REDACTED:{name}]");
                copied = h.end;
            }
        }
        if let Some(o) = out.as_mut() {
            o.push_str(text.get(copied..).unwrap_or_default());
        }
        out
    }

    pub fn findings(&self) -> &Findings {
        &self.findings
    }

    pub fn into_findings(self) -> Findings {
        self.findings
    }
}

/// How much of a streamed answer's text is kept from one delta to the next, so that a
/// match split across deltas is still found: 256 bytes (longer than every built-in
/// detector's match except provider keys, whose first 20 characters already match).
pub const STREAM_WINDOW: usize = 256;

/// Scans an answer's text as it streams: each delta with the last [`STREAM_WINDOW`] bytes
/// before it; a match is counted once (by where it starts). Every rule only flags here.
#[derive(Debug)]
pub struct StreamScan {
    selected: Vec<usize>,
    /// The tail of the text seen so far.
    carry: String,
    /// Absolute offset of `carry`'s first byte in the whole text.
    carry_at: usize,
    /// Absolute end of the last match counted.
    counted_to: usize,
    findings: Findings,
}

impl StreamScan {
    pub fn new(selected: Vec<usize>) -> Self {
        Self {
            selected,
            carry: String::new(),
            carry_at: 0,
            counted_to: 0,
            findings: Findings::default(),
        }
    }

    /// Scans the next piece of the answer's text.
    pub fn push(&mut self, rules: &RuleSet, delta: &str) {
        if self.selected.is_empty() || delta.is_empty() {
            return;
        }
        self.carry.push_str(delta);
        for h in rules.hits(&self.selected, &self.carry) {
            let start = self.carry_at + h.start;
            if start >= self.counted_to {
                self.findings.add(rules.name(h.rule), Action::Flag);
                self.counted_to = self.carry_at + h.end;
            }
        }
        if self.carry.len() > STREAM_WINDOW {
            let mut cut = self.carry.len() - STREAM_WINDOW;
            while !self.carry.is_char_boundary(cut) {
                cut += 1;
            }
            self.carry.drain(..cut);
            self.carry_at += cut;
        }
    }

    pub fn findings(&self) -> &Findings {
        &self.findings
    }
}

#[cfg(test)]
mod tests;
