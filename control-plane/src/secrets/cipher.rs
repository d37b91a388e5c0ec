//! The `enc:v1`/`enc:v2` codec of values stored at rest lives in [`warden_core::cipher`]
//! (so that its fuzz target builds without the cloud SDKs); this path keeps the control
//! plane's uses as they were.

pub use warden_core::cipher::*;
