//! Test doubles shared by the control plane's integration tests.

#[allow(dead_code, reason = "each test binary uses a part of the double")]
pub mod azure_double;
