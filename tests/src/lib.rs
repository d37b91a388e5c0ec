//! The shared end-to-end harness: [`cluster::TestCluster`] starts a real Warden (a
//! `warden-cp` process, `warden-dp` processes, `wardenctl`) on loopback in front of
//! [`mock::MockUpstream`], a mock provider speaking the OpenAI wire format. The tests
//! themselves are in `tests/e2e/`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test support code"
)]

pub mod cluster;
pub mod dev;
pub mod egress_proxy;
pub mod faults;
pub mod mock;
pub mod otlp;
pub mod pki;
