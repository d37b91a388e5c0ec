use super::*;
use crate::credential::{self, Kind};
use secrecy::ExposeSecret as _;

fn rule(name: &str, detector: Detector, action: Action) -> RuleSpec {
    RuleSpec {
        name: name.into(),
        detector,
        pattern: String::new(),
        action,
        scope: Scope::Gateway,
    }
}

fn custom(name: &str, pattern: &str, action: Action) -> RuleSpec {
    RuleSpec {
        pattern: pattern.into(),
        ..rule(name, Detector::Regex, action)
    }
}

fn builtins(action: Action) -> RuleSet {
    RuleSet::compile(
        Detector::BUILTIN
            .iter()
            .map(|d| rule(d.as_str(), *d, action))
            .collect(),
    )
    .unwrap()
}

/// Findings of the built-ins (flag) over one text.
fn found(text: &str) -> Vec<String> {
    let set = builtins(Action::Flag);
    let mut scan = Scan::new(&set, set.select("m", "vkey:x"));
    assert!(scan.text(text).is_none(), "flag never rewrites");
    scan.into_findings()
        .rules
        .into_iter()
        .map(|(n, _, c)| format!("{n}:{c}"))
        .collect()
}

#[test]
fn luhn_accepts_valid_and_refuses_invalid_numbers() {
    assert!(detector::luhn(b"4111111111111111"));
    assert!(detector::luhn(b"79927398713"));
    assert!(!detector::luhn(b"4111111111111112"));
    assert!(!detector::luhn(b"79927398710"));
}

#[test]
fn card_numbers_are_found_when_luhn_valid_in_any_grouping() {
    assert_eq!(found("pay with 4111111111111111 please"), ["card:1"]);
    assert_eq!(found("card 4111 1111 1111 1111, exp 12/29"), ["card:1"]);
    assert_eq!(found("amex 3782-822463-10005."), ["card:1"]);
    // 19 digits.
    assert_eq!(found("6011000990139424 and 4222222222222"), ["card:2"]);
    // Followed by more digits (a year, an SSN).
    assert_eq!(found("4111 1111 1111 1111 2029"), ["card:1"]);
    assert_eq!(found("4111111111111111 123-45-6789"), ["card:1", "ssn:1"]);
    // Not Luhn-valid, too short, too long, all zeros, or inside a longer number.
    assert!(found("4111111111111112").is_empty());
    assert!(found("order 411111111111").is_empty());
    assert!(found("id 41111111111111111111111").is_empty());
    assert!(found("0000000000000000").is_empty());
    assert!(found("x4111111111111111").is_empty());
}

#[test]
fn ssns_are_found_except_in_ranges_never_issued() {
    assert_eq!(found("ssn 123-45-6789."), ["ssn:1"]);
    assert_eq!(found("ssn 123 45 6789"), ["ssn:1"]);
    for never in [
        "000-12-3456",
        "666-12-3456",
        "900-12-3456",
        "999-12-3456",
        "123-00-4567",
        "123-45-0000",
        "078-05-1120",
        "219-09-9999",
        "1123-45-6789",
        "123456789",
    ] {
        assert!(found(never).is_empty(), "{never}");
    }
}

#[test]
fn provider_key_shapes_are_told_apart() {
    assert_eq!(
        found("key sk-proj-abcdefghijklmnopqrstuvwx0123"),
        ["openai_key:1"]
    );
    assert_eq!(
        found("key=sk-ant-api03-abcdefghijklmnopqrstuvwxyz"),
        ["anthropic_key:1"]
    );
    assert_eq!(found("AKIAIOSFODNN7EXAMPLE"), ["aws_access_key:1"]);
    assert_eq!(found("ASIAIOSFODNN7EXAMPLE,"), ["aws_access_key:1"]);
    assert!(found("sk-short").is_empty());
    assert!(found("task-abcdefghijklmnopqrstuvwxyz").is_empty());
    assert!(found("AKIAIOSFODNN7EXAMPLE1").is_empty());
    assert!(found("akiaiosfodnn7example").is_empty());
}

#[test]
fn warden_credentials_need_their_checksum() {
    for kind in [Kind::VirtualKey, Kind::Admin, Kind::Node] {
        let c = credential::generate(kind);
        let text = format!("use {} now", c.expose_secret());
        assert_eq!(found(&text), ["warden_credential:1"], "{kind:?}");
        // One character changed: the checksum no longer matches.
        let mut bad = c.expose_secret().to_owned();
        let last = if bad.ends_with('A') { "B" } else { "A" };
        bad.replace_range(bad.len() - 1.., last);
        assert!(found(&bad).is_empty());
    }
    assert!(found(&format!("wk_{}", "a".repeat(48))).is_empty());
}

#[test]
fn custom_regexes_match_and_bad_ones_are_refused_naming_the_rule() {
    let set = RuleSet::compile(vec![custom("project", r"PRJ-[0-9]{4}", Action::Redact)]).unwrap();
    let mut scan = Scan::new(&set, set.select("m", ""));
    assert_eq!(
        scan.text("see PRJ-1234 and PRJ-9").as_deref(),
        Some("see [REDACTED:project] and PRJ-9")
    );
    for (spec, needle) in [
        (
            custom("broken", "PRJ-(", Action::Flag),
            "rule broken: invalid regular",
        ),
        (
            custom("empty", "a*", Action::Flag),
            "rule empty: the pattern matches the empty",
        ),
        (
            custom("none", "", Action::Flag),
            "rule none: a regex rule needs a pattern",
        ),
        (
            custom("huge", "[a-z]{1000}{1000}", Action::Flag),
            "rule huge: invalid regular",
        ),
        (
            custom("long", &"a".repeat(MAX_PATTERN_LEN + 1), Action::Flag),
            "rule long: pattern longer",
        ),
        (
            RuleSpec {
                pattern: "x".into(),
                ..rule("card", Detector::Card, Action::Flag)
            },
            "takes no pattern",
        ),
        (rule("Bad Name", Detector::Card, Action::Flag), "rule name"),
        (
            RuleSpec {
                scope: Scope::Model(String::new()),
                ..rule("m", Detector::Card, Action::Flag)
            },
            "scope",
        ),
    ] {
        let e = check(&spec).unwrap_err().to_string();
        assert!(e.contains(needle), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }
    let twice = RuleSet::compile(vec![
        rule("a", Detector::Card, Action::Flag),
        rule("a", Detector::Ssn, Action::Flag),
    ]);
    assert!(matches!(twice, Err(DlpError::Duplicate(_))));
}

#[test]
fn one_pass_finds_every_rule_and_redacts_by_position() {
    let set = RuleSet::compile(vec![
        rule("card", Detector::Card, Action::Redact),
        rule("ssn", Detector::Ssn, Action::Flag),
        rule("aws", Detector::AwsAccessKey, Action::Redact),
        custom("secret-word", "hunter2", Action::Block),
    ])
    .unwrap();
    let mut scan = Scan::new(&set, set.select("m", ""));
    let out = scan
        .text("a 4111 1111 1111 1111 b 123-45-6789 c AKIAIOSFODNN7EXAMPLE d 4111111111111111")
        .unwrap();
    assert_eq!(
        out,
        "a [REDACTED:card] b 123-45-6789 c [REDACTED:aws] d [REDACTED:card]"
    );
    assert!(scan.text("nothing here").is_none());
    assert!(scan.findings().blocked_by().is_none());
    assert!(scan.text("my password is hunter2").is_none());
    assert_eq!(scan.findings().blocked_by(), Some("secret-word"));
    assert_eq!(
        scan.findings().summary(),
        "card:redact:2,ssn:flag:1,aws:redact:1,secret-word:block:1"
    );
}

#[test]
fn overlapping_matches_are_redacted_once() {
    let set = RuleSet::compile(vec![
        rule("openai", Detector::OpenAiKey, Action::Redact),
        custom("sk", "sk-[a-z]+", Action::Redact),
    ])
    .unwrap();
    let mut scan = Scan::new(&set, set.select("m", ""));
    assert_eq!(
        scan.text("k=sk-abcdefghijklmnopqrstuvwxyz0123 end")
            .as_deref(),
        Some("k=[REDACTED:openai] end")
    );
}

#[test]
fn rules_apply_by_scope() {
    let scoped = |scope| RuleSpec {
        scope,
        ..rule("r", Detector::Card, Action::Flag)
    };
    let set = RuleSet::compile(vec![
        scoped(Scope::Gateway),
        RuleSpec {
            name: "m".into(),
            ..scoped(Scope::Model("gpt".into()))
        },
        RuleSpec {
            name: "v".into(),
            ..scoped(Scope::VirtualKey("vk_1".into()))
        },
        RuleSpec {
            name: "s".into(),
            ..scoped(Scope::Subject("svc".into()))
        },
    ])
    .unwrap();
    assert_eq!(set.select("other", "sub:x"), [0]);
    assert_eq!(set.select("gpt", "vkey:vk_1"), [0, 1, 2]);
    assert_eq!(set.select("x", "sub:svc"), [0, 3]);
    assert!(RuleSet::default().select("gpt", "sub:svc").is_empty());
    assert_eq!(
        Scope::from_parts("subject", "svc"),
        Some(Scope::Subject("svc".into()))
    );
    assert_eq!(Scope::from_parts("model", ""), None);
}

#[test]
fn a_stream_scan_finds_matches_split_across_deltas_once() {
    let set = builtins(Action::Block);
    let mut s = StreamScan::new(set.select("m", ""));
    for delta in [
        "your card is 4111 11",
        "11 1111 1",
        "111 and the key AKIAIOSF",
        "ODNN7EXAMPLE.",
    ] {
        s.push(&set, delta);
    }
    // A long text between matches moves the window on.
    s.push(&set, &"lorem ipsum ".repeat(100));
    s.push(&set, "again 4111111111111111");
    assert_eq!(s.findings().counts(), "card:2,aws_access_key:1");
    assert!(
        s.findings().blocked_by().is_none(),
        "answers are only flagged"
    );
    // Multi-byte text at the window's edge.
    let mut s = StreamScan::new(set.select("m", ""));
    s.push(&set, &"é".repeat(300));
    s.push(&set, " 123-45-6789");
    assert_eq!(s.findings().counts(), "ssn:1");
}

#[test]
fn no_finding_ever_holds_matched_text() {
    let set = builtins(Action::Redact);
    let mut scan = Scan::new(&set, set.select("m", ""));
    let out = scan.text("4111111111111111 123-45-6789").unwrap();
    assert!(!out.contains("4111"));
    let f = format!("{:?} {}", scan.findings(), scan.findings().summary());
    assert!(!f.contains("4111") && !f.contains("6789"), "{f}");
}
