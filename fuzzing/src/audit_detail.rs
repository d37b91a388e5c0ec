//! The audit detail (`key=value` pairs): any text parses (free text becomes `message`),
//! and pairs written by [`Detail`] parse back exactly.

use std::collections::BTreeMap;

use arbitrary::Unstructured;
use warden_core::audit_detail::{Detail, parse};

pub fn target(data: &[u8]) {
    let _ = parse(&String::from_utf8_lossy(data));

    let mut u = Unstructured::new(data);
    let mut expected = BTreeMap::new();
    let mut detail = Detail::new();
    while let (Ok(key), Ok(value)) = (u.arbitrary::<String>(), u.arbitrary::<String>()) {
        let key: String = key
            .chars()
            .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        if key.is_empty() || expected.contains_key(&key) {
            if u.is_empty() {
                break;
            }
            continue;
        }
        detail.push(&key, &value);
        expected.insert(key, value);
        if u.is_empty() {
            break;
        }
    }
    let built = detail.build();
    assert_eq!(parse(&built), expected, "{built:?} did not parse back");
}
