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
pub mod sync_delta;
pub use error_code::ErrorCode;

/// Largest gRPC message the control plane accepts and its clients send: admin requests and
/// a node's hello, acks and audit batches (a node sends audit batches of at most 1 MiB).
pub const GRPC_REQUEST_MAX_BYTES: usize = 16 * 1024 * 1024;

/// Largest gRPC message the control plane sends and its clients accept: above all a node's
/// snapshot, which must hold every virtual key. One `VirtualKey` entry encodes to about
/// 0.7 KiB at most in practice: id (2+30) + hash (2+64) + name (2+64) + owner (2+128, its
/// limit) + eight model aliases (8 × (2+32)) + three scopes (3 × (2+8)) + expiry (1+5) +
/// policy (2+6 × (1+5)) + previous hash (2+64) + its expiry (1+5) + framing (3) = 716
/// bytes; 100,000 keys make about 72 MB, so 128 MiB leaves room for the rest of the
/// snapshot (routes, upstream keys, revocations) and longer names.
pub const GRPC_RESPONSE_MAX_BYTES: usize = 128 * 1024 * 1024;

/// Metadata key that carries a credential on every gRPC call (`Bearer <credential>`).
pub const AUTHORIZATION: &str = "authorization";

/// Reads the bearer credential from request metadata, if present and well-formed.
pub fn bearer<T>(request: &tonic::Request<T>) -> Option<&str> {
    let value = request.metadata().get(AUTHORIZATION)?.to_str().ok()?;
    value.strip_prefix("Bearer ").map(str::trim)
}
