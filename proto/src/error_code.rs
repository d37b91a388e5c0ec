//! One closed set of error codes, mapped to both gRPC and HTTP statuses, so that the
//! control plane, the nodes and the CLI classify failures the same way.

/// The classes of failure Warden reports across any boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The request is malformed or names something invalid.
    InvalidArgument,
    /// No credential, or one that does not verify.
    Unauthenticated,
    /// A valid credential without the right to do this.
    PermissionDenied,
    /// The named thing does not exist.
    NotFound,
    /// The named thing exists already.
    AlreadyExists,
    /// A limit was hit.
    RateLimited,
    /// A dependency (upstream, store, control plane) is not reachable right now.
    Unavailable,
    /// A bug or an unexpected state; details are logged, never returned.
    Internal,
}

impl ErrorCode {
    /// The gRPC status code for this class.
    pub fn grpc(self) -> tonic::Code {
        match self {
            Self::InvalidArgument => tonic::Code::InvalidArgument,
            Self::Unauthenticated => tonic::Code::Unauthenticated,
            Self::PermissionDenied => tonic::Code::PermissionDenied,
            Self::NotFound => tonic::Code::NotFound,
            Self::AlreadyExists => tonic::Code::AlreadyExists,
            Self::RateLimited => tonic::Code::ResourceExhausted,
            Self::Unavailable => tonic::Code::Unavailable,
            Self::Internal => tonic::Code::Internal,
        }
    }

    /// The HTTP status for this class.
    pub fn http(self) -> http::StatusCode {
        match self {
            Self::InvalidArgument => http::StatusCode::BAD_REQUEST,
            Self::Unauthenticated => http::StatusCode::UNAUTHORIZED,
            Self::PermissionDenied => http::StatusCode::FORBIDDEN,
            Self::NotFound => http::StatusCode::NOT_FOUND,
            Self::AlreadyExists => http::StatusCode::CONFLICT,
            Self::RateLimited => http::StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable => http::StatusCode::BAD_GATEWAY,
            Self::Internal => http::StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A gRPC status of this class with a message that is safe to show.
    pub fn status(self, message: impl Into<String>) -> tonic::Status {
        tonic::Status::new(self.grpc(), message)
    }

    /// Low-cardinality label for metrics and logs.
    pub fn metric_label(self) -> &'static str {
        match self {
            Self::InvalidArgument => "invalid_argument",
            Self::Unauthenticated => "unauthenticated",
            Self::PermissionDenied => "permission_denied",
            Self::NotFound => "not_found",
            Self::AlreadyExists => "already_exists",
            Self::RateLimited => "rate_limited",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ErrorCode;

    #[test]
    fn maps_auth_failures_to_401_and_403() {
        assert_eq!(ErrorCode::Unauthenticated.http().as_u16(), 401);
        assert_eq!(ErrorCode::PermissionDenied.http().as_u16(), 403);
        assert_eq!(
            ErrorCode::RateLimited.grpc(),
            tonic::Code::ResourceExhausted
        );
    }
}
