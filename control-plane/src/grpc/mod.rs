//! The gRPC edge: tonic services that authenticate, convert proto ↔ domain types and call
//! [`crate::ControlPlane`]. Nothing below this module sees a proto type.

pub mod admin;
pub mod audit;
pub mod sync;

use crate::domain::ApiFormat;

pub(crate) fn format_to_proto(f: ApiFormat) -> i32 {
    use warden_proto::admin::v1::ApiFormat as P;
    match f {
        ApiFormat::OpenAi => P::Openai as i32,
        ApiFormat::Anthropic => P::Anthropic as i32,
        ApiFormat::Echo => P::Echo as i32,
    }
}
