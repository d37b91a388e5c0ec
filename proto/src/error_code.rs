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
    /// The service cannot serve right now — it has no configuration yet, or a dependency
    /// it needs (store, Redis, audit log, control plane) is not reachable; retry later.
    Unavailable,
    /// A bug or an unexpected state; details are logged, never returned.
    Internal,
    /// The request is larger than the service accepts.
    PayloadTooLarge,
    /// The operation exists, but not with this method.
    MethodNotAllowed,
    /// The upstream provider failed, could not be reached, or refused the gateway's
    /// credential.
    UpstreamFailed,
    /// The upstream provider did not answer in time.
    UpstreamTimeout,
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
            Self::PayloadTooLarge => tonic::Code::ResourceExhausted,
            Self::MethodNotAllowed => tonic::Code::Unimplemented,
            Self::UpstreamFailed => tonic::Code::Unavailable,
            Self::UpstreamTimeout => tonic::Code::DeadlineExceeded,
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
            Self::Unavailable => http::StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => http::StatusCode::INTERNAL_SERVER_ERROR,
            Self::PayloadTooLarge => http::StatusCode::PAYLOAD_TOO_LARGE,
            Self::MethodNotAllowed => http::StatusCode::METHOD_NOT_ALLOWED,
            Self::UpstreamFailed => http::StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout => http::StatusCode::GATEWAY_TIMEOUT,
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
            Self::PayloadTooLarge => "payload_too_large",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::UpstreamFailed => "upstream_failed",
            Self::UpstreamTimeout => "upstream_timeout",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ErrorCode;

    /// The whole mapping, both ways out: a change here changes what clients see.
    #[test]
    fn every_code_maps_to_one_grpc_code_and_one_http_status() {
        use tonic::Code;
        for (code, grpc, http) in [
            (ErrorCode::InvalidArgument, Code::InvalidArgument, 400),
            (ErrorCode::Unauthenticated, Code::Unauthenticated, 401),
            (ErrorCode::PermissionDenied, Code::PermissionDenied, 403),
            (ErrorCode::NotFound, Code::NotFound, 404),
            (ErrorCode::AlreadyExists, Code::AlreadyExists, 409),
            (ErrorCode::RateLimited, Code::ResourceExhausted, 429),
            (ErrorCode::Unavailable, Code::Unavailable, 503),
            (ErrorCode::Internal, Code::Internal, 500),
            (ErrorCode::PayloadTooLarge, Code::ResourceExhausted, 413),
            (ErrorCode::MethodNotAllowed, Code::Unimplemented, 405),
            (ErrorCode::UpstreamFailed, Code::Unavailable, 502),
            (ErrorCode::UpstreamTimeout, Code::DeadlineExceeded, 504),
        ] {
            assert_eq!(code.grpc(), grpc, "{code:?}");
            assert_eq!(code.http().as_u16(), http, "{code:?}");
            assert_eq!(code.status("x").code(), grpc, "{code:?}");
        }
    }

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
