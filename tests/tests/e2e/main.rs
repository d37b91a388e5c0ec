//! End-to-end tests: real `warden-cp`, `warden-dp` and `wardenctl` processes on loopback in
//! front of the mock provider. One test binary (one link) for the whole suite.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step should fail the test loudly"
)]

mod admin_audit;
mod admin_roles;
mod anthropic;
mod attacks;
mod attacks_http;
mod audit;
mod audit_path;
mod audit_spool;
#[path = "../../../control-plane/tests/support/azure_double.rs"]
#[allow(dead_code, reason = "the e2e suite uses a part of the double")]
mod azure_double;
mod backup_restore;
mod bootstrap;
mod bypass;
mod certs;
mod cli;
mod client_access;
mod compose_topology;
mod control_chars;
mod cp_failover;
mod cp_listener;
mod cp_logins;
mod cp_replicas;
mod cp_store_trust;
mod credential_revocation;
mod deploy_config;
mod dev;
mod dlp;
mod egress;
mod failed_logins;
mod faults;
mod gateway;
mod graceful;
mod healthcheck;
mod https;
mod incident;
mod ip_blocks;
mod key_rejections;
mod limits;
mod listener_limits;
mod log_level;
mod master_key;
mod metrics;
mod mtls;
mod node_findings;
mod node_ingest;
mod otlp;
mod paging;
mod plaintext;
mod provider_ca;
mod readme;
mod resilience;
mod sdk;
mod sealing;
mod secret_refs;
mod secrets;
mod snapshot_scale;
mod store_tls;
mod wire_compat;
