//! The gRPC edge: tonic services that authenticate, convert proto ↔ domain types and call
//! [`crate::ControlPlane`]. Nothing below this module sees a proto type.

pub mod admin;
pub mod audit;
pub mod delivery;
pub mod health;
pub mod limits;
pub mod snapshot_wire;
pub mod sync;

/// The span of one gRPC call, up to its response's head (exported with `[tracing]`,
/// disabled otherwise): `rpc.service` and `rpc.method` from the path when the path is one
/// of Warden's or the health service's, `other` for anything else (a client chooses the
/// path). Nothing of the request's metadata or message.
pub fn span(request: &tonic::codegen::http::Request<()>) -> tracing::Span {
    let (service, method) = rpc_names(request.uri().path());
    tracing::info_span!(
        target: warden_core::otlp::TARGET,
        "grpc",
        otel.name = %format_args!("{service}/{method}"),
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
    )
}

/// `(service, method)` of a gRPC path `/package.Service/Method`, or `("other", "other")`.
fn rpc_names(path: &str) -> (&str, &str) {
    let named = path
        .strip_prefix('/')
        .and_then(|p| p.split_once('/'))
        .filter(|(service, method)| {
            (service.starts_with("warden.") || *service == "grpc.health.v1.Health")
                && service.len() <= 64
                && method.len() <= 64
                && !method.is_empty()
                && service
                    .chars()
                    .chain(method.chars())
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_')
        });
    named.unwrap_or(("other", "other"))
}

#[cfg(test)]
mod span_tests {
    use super::rpc_names;

    #[test]
    fn only_known_services_name_their_spans() {
        assert_eq!(
            rpc_names("/warden.admin.v1.Admin/IssueToken"),
            ("warden.admin.v1.Admin", "IssueToken")
        );
        assert_eq!(
            rpc_names("/grpc.health.v1.Health/Check"),
            ("grpc.health.v1.Health", "Check")
        );
        for path in [
            "/evil.Service/X",
            "/warden.x/",
            "/",
            "",
            "/warden.a/b/c",
            "/warden.a/é",
        ] {
            assert_eq!(rpc_names(path), ("other", "other"), "{path}");
        }
    }
}
