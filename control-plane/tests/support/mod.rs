//! Test doubles shared by the control plane's integration tests.

pub mod azure_double;
