//! The gRPC edge: tonic services that authenticate, convert proto ↔ domain types and call
//! [`crate::ControlPlane`]. Nothing below this module sees a proto type.

pub mod admin;
pub mod audit;
pub mod delivery;
pub mod health;
pub mod limits;
pub mod snapshot_wire;
pub mod sync;
