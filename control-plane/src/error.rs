//! The control plane's service error: one enum at the boundary between the domain and the
//! gRPC edge, mapped to the shared [`ErrorCode`]. Messages are safe to show.

use warden_proto::ErrorCode;

use crate::secrets::SecretError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("missing or invalid credential")]
    Unauthenticated,
    #[error("{0}")]
    PermissionDenied(String),
    #[error("state store: {0}")]
    Store(#[from] StoreError),
    #[error("secret store: {0}")]
    Secret(#[from] SecretError),
    /// A quota was exceeded; retry later.
    #[error("{0}")]
    RateLimited(String),
    /// A dependency (a secret backend) cannot serve right now.
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ServiceError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::InvalidArgument(_) => ErrorCode::InvalidArgument,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::AlreadyExists(_) => ErrorCode::AlreadyExists,
            Self::Unauthenticated => ErrorCode::Unauthenticated,
            Self::PermissionDenied(_) => ErrorCode::PermissionDenied,
            Self::Unavailable(_) => ErrorCode::Unavailable,
            Self::RateLimited(_) => ErrorCode::RateLimited,
            // Secret errors name the reference, never a value: safe to return, and the
            // admin needs them to fix a reference or a backend's access policy.
            Self::Secret(e) => match e {
                SecretError::NotFound { .. } => ErrorCode::NotFound,
                SecretError::BadReference { .. } => ErrorCode::InvalidArgument,
                SecretError::PermissionDenied { .. } | SecretError::Refused { .. } => {
                    ErrorCode::PermissionDenied
                }
                SecretError::Unavailable { .. } | SecretError::Backend { .. } => {
                    ErrorCode::Unavailable
                }
                _ => ErrorCode::Internal,
            },
            Self::Store(_) | Self::Internal(_) => ErrorCode::Internal,
        }
    }

    /// The gRPC status: internal details are logged, not returned.
    pub fn to_status(&self) -> tonic::Status {
        match self.code() {
            ErrorCode::Internal => {
                tracing::error!(error = %self, "request failed");
                ErrorCode::Internal.status("internal error (see control-plane logs)")
            }
            code => code.status(self.to_string()),
        }
    }
}

impl From<ServiceError> for tonic::Status {
    fn from(e: ServiceError) -> Self {
        e.to_status()
    }
}
