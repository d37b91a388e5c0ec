//! Fuzz targets over the code that reads untrusted input: credential parsing and JWT
//! verification ([`credential`], [`jwt`]), request JSON handling ([`request`]), translation
//! both ways ([`translate`]), server-sent events ([`sse`]), the audit detail parser
//! ([`audit_detail`]) and the `enc:v1`/`enc:v2` codec ([`cipher`]).
//!
//! Each target is one `fn(&[u8])`, written once over [`arbitrary::Unstructured`]: it must
//! not panic on any input, and it checks the properties of what it exercises (a value
//! round-trips, a tampered token or ciphertext never yields other claims or plaintext, a
//! stream parses the same whatever its chunking). A panic is a finding. Three drivers call
//! the same functions:
//! - stable `cargo test -p warden-fuzzing` replays the checked-in corpus
//!   (`fuzzing/corpus/<target>/`) and runs a bounded property pass of random and mutated
//!   inputs from a seeded generator (`tests/fuzz.rs`; `WARDEN_FUZZ_CASES`,
//!   `WARDEN_FUZZ_SECONDS`, `WARDEN_FUZZ_SEED` make it longer or different);
//! - `cargo fuzz run <target>` in `fuzz/` where a nightly toolchain exists (libFuzzer,
//!   coverage-guided), with the same corpus directories as seeds.

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a fuzz target reports a broken property by panicking: that is its whole output"
)]

pub mod audit_detail;
pub mod cipher;
pub mod credential;
pub mod json;
pub mod jwt;
pub mod request;
pub mod sse;
pub mod translate;

/// One fuzz target: its name (also its corpus directory and its `cargo fuzz` binary) and
/// the function that checks one input.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]),
}

/// Every target, in the order the drivers run them.
pub const TARGETS: &[Target] = &[
    Target {
        name: "credential",
        run: credential::target,
    },
    Target {
        name: "jwt",
        run: jwt::target,
    },
    Target {
        name: "request",
        run: request::target,
    },
    Target {
        name: "translate_request",
        run: translate::request_target,
    },
    Target {
        name: "translate_response",
        run: translate::response_target,
    },
    Target {
        name: "sse",
        run: sse::target,
    },
    Target {
        name: "audit_detail",
        run: audit_detail::target,
    },
    Target {
        name: "cipher",
        run: cipher::target,
    },
];

/// The target named `name`.
pub fn target(name: &str) -> Option<Target> {
    TARGETS.iter().copied().find(|t| t.name == name)
}
