//! Warden's wire contract: the generated code for `warden.admin.v1` (for `wardenctl`) and
//! `warden.sync.v1` (between the control plane and data-plane nodes).
//!
//! Start with the `.proto` files in `proto/warden/`: they are the documentation of the
//! contract. This crate adds only what both sides need to agree on besides the messages:
//! the metadata key credentials travel in, and the closed [`ErrorCode`] set.

pub mod admin {
    pub mod v1 {
        #![allow(clippy::all, clippy::pedantic, missing_docs)]
        tonic::include_proto!("warden.admin.v1");
    }
}

pub mod sync {
    pub mod v1 {
        #![allow(clippy::all, clippy::pedantic, missing_docs)]
        tonic::include_proto!("warden.sync.v1");
    }
}

pub mod audit {
    pub mod v1 {
        #![allow(clippy::all, clippy::pedantic, missing_docs)]
        tonic::include_proto!("warden.audit.v1");
    }
}

mod error_code;
pub use error_code::ErrorCode;

/// Metadata key that carries a credential on every gRPC call (`Bearer <credential>`).
pub const AUTHORIZATION: &str = "authorization";

/// Reads the bearer credential from request metadata, if present and well-formed.
pub fn bearer<T>(request: &tonic::Request<T>) -> Option<&str> {
    let value = request.metadata().get(AUTHORIZATION)?.to_str().ok()?;
    value.strip_prefix("Bearer ").map(str::trim)
}
