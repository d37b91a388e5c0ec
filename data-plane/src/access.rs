//! Who may call the node from where, compiled from a snapshot: the gateway's client policy
//! ([`ClientPolicy`]: the global IP allow-list and CORS) and a credential's own lists
//! ([`CredentialAccess`]: the networks and browser origins a virtual key or a JWT subject
//! may be used from). The request path checks them with hash-free list scans over a few
//! entries; a node without any of these settings checks one empty `Vec` and one `None`.

use std::net::IpAddr;

use warden_core::access::{self, ANY_ORIGIN, IpNet};
use warden_proto::sync::v1 as pb;

/// The request headers a browser may send when the gateway's CORS names none.
pub const DEFAULT_CORS_HEADERS: &[&str] = &[
    "authorization",
    "content-type",
    "x-api-key",
    "anthropic-version",
    "anthropic-beta",
];
/// The methods allowed when the gateway's CORS names none.
pub const DEFAULT_CORS_METHODS: &[&str] = &["GET", "POST"];

/// The gateway's client policy.
#[derive(Debug, Clone, Default)]
pub struct ClientPolicy {
    /// Empty: every address.
    pub allowed_ips: Vec<IpNet>,
    /// `None`: CORS off.
    pub cors: Option<Cors>,
}

/// The gateway's CORS settings.
#[derive(Debug, Clone)]
pub struct Cors {
    /// Lowercase origins; never `*` (see `any_origin`).
    pub origins: Vec<String>,
    /// Every origin: set explicitly with `*`.
    pub any_origin: bool,
    /// Uppercase methods.
    pub methods: Vec<String>,
    /// Lowercase header names.
    pub headers: Vec<String>,
    /// `Access-Control-Allow-Methods` and `-Headers` as sent.
    pub methods_value: String,
    pub headers_value: String,
    pub expose_headers_value: String,
    pub max_age_seconds: u32,
    /// Never together with `any_origin` (the control plane refuses it; the node drops it).
    pub allow_credentials: bool,
}

impl Cors {
    /// Whether `origin` (as sent) may read the gateway's answers.
    pub fn allows_origin(&self, origin: &str) -> bool {
        self.any_origin || self.origins.iter().any(|o| o.eq_ignore_ascii_case(origin))
    }

    /// Whether a preflight's `Access-Control-Request-Method` is allowed.
    pub fn allows_method(&self, method: &str) -> bool {
        self.methods
            .iter()
            .any(|m| m.eq_ignore_ascii_case(method.trim()))
    }

    /// Whether every header of a preflight's `Access-Control-Request-Headers` is allowed.
    pub fn allows_headers(&self, requested: &str) -> bool {
        requested
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .all(|h| self.headers.iter().any(|a| a.eq_ignore_ascii_case(h)))
    }

    /// The `Access-Control-Allow-Origin` value for an allowed `origin`: `*` for the
    /// wildcard (never with credentials), else the origin itself.
    pub fn allow_origin_value<'a>(&self, origin: &'a str) -> &'a str {
        if self.any_origin && !self.allow_credentials {
            ANY_ORIGIN
        } else {
            origin
        }
    }
}

/// A credential's own lists (a virtual key's, or a JWT subject's). Empty lists: no
/// restriction beyond the gateway's.
#[derive(Debug, Clone, Default)]
pub struct CredentialAccess {
    pub allowed_ips: Vec<IpNet>,
    /// Lowercase origins; `*` means any.
    pub allowed_origins: Vec<String>,
}

impl CredentialAccess {
    /// The lists of a snapshot entry; `None` when both are empty.
    pub fn compile(ips: &[String], origins: &[String]) -> Result<Option<Self>, String> {
        if ips.is_empty() && origins.is_empty() {
            return Ok(None);
        }
        Ok(Some(Self {
            allowed_ips: access::parse_networks(ips)?,
            allowed_origins: access::normalize_origins(origins)?,
        }))
    }

    /// Whether a request from `client` may use the credential (no address known: only
    /// when the list is empty).
    pub fn allows_ip(&self, client: Option<IpAddr>) -> bool {
        self.allowed_ips.is_empty()
            || client.is_some_and(|ip| access::contains(&self.allowed_ips, ip))
    }

    /// Whether a request with browser `origin` may use the credential. A request without
    /// `Origin` (not from a browser page) is not held to the list.
    pub fn allows_origin(&self, origin: Option<&str>) -> bool {
        match origin {
            None => true,
            Some(_) if self.allowed_origins.is_empty() => true,
            Some(origin) => self
                .allowed_origins
                .iter()
                .any(|o| o == ANY_ORIGIN || o.eq_ignore_ascii_case(origin)),
        }
    }
}

impl ClientPolicy {
    /// The gateway's client policy from a snapshot (absent: no restriction, CORS off).
    pub fn compile(p: Option<pb::ClientPolicy>) -> Result<Self, String> {
        let Some(p) = p else {
            return Ok(Self::default());
        };
        let allowed_ips = access::parse_networks(&p.allowed_ips)?;
        let cors = match p.cors {
            Some(c) if !c.origins.is_empty() => Some(compile_cors(c)?),
            _ => None,
        };
        Ok(Self { allowed_ips, cors })
    }

    /// Whether a request from `client` passes the global allow-list (no address known:
    /// only when the list is empty).
    pub fn allows_ip(&self, client: Option<IpAddr>) -> bool {
        self.allowed_ips.is_empty()
            || client.is_some_and(|ip| access::contains(&self.allowed_ips, ip))
    }
}

fn compile_cors(c: pb::Cors) -> Result<Cors, String> {
    let origins = access::normalize_origins(&c.origins)?;
    let any_origin = origins.iter().any(|o| o == ANY_ORIGIN);
    let origins: Vec<String> = origins.into_iter().filter(|o| o != ANY_ORIGIN).collect();
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
    };
    let methods: Vec<String> = if c.methods.is_empty() {
        DEFAULT_CORS_METHODS
            .iter()
            .map(|m| (*m).to_owned())
            .collect()
    } else {
        c.methods
            .iter()
            .map(|m| m.trim().to_ascii_uppercase())
            .collect()
    };
    let headers: Vec<String> = if c.headers.is_empty() {
        DEFAULT_CORS_HEADERS
            .iter()
            .map(|h| (*h).to_owned())
            .collect()
    } else {
        c.headers
            .iter()
            .map(|h| h.trim().to_ascii_lowercase())
            .collect()
    };
    let expose: Vec<String> = c
        .expose_headers
        .iter()
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    if let Some(bad) = methods
        .iter()
        .chain(&headers)
        .chain(&expose)
        .find(|v| !token(v.as_str()))
    {
        return Err(format!("CORS method or header {bad:?} is not a token"));
    }
    if any_origin {
        tracing::warn!(
            target: "warden_dp::access",
            credentials = c.allow_credentials,
            "CORS allows every origin (`*`): any web page may call this gateway with a credential it holds"
        );
    }
    Ok(Cors {
        methods_value: methods.join(", "),
        headers_value: headers.join(", "),
        expose_headers_value: expose.join(", "),
        origins,
        any_origin,
        methods,
        headers,
        max_age_seconds: c.max_age_seconds,
        allow_credentials: c.allow_credentials && !any_origin,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors(origins: &[&str], credentials: bool) -> Cors {
        compile_cors(pb::Cors {
            origins: origins.iter().map(|o| (*o).to_owned()).collect(),
            allow_credentials: credentials,
            ..pb::Cors::default()
        })
        .unwrap()
    }

    #[test]
    fn cors_matches_origins_methods_and_headers() {
        let c = cors(&["https://App.example"], true);
        assert!(c.allows_origin("https://app.example"));
        assert!(!c.allows_origin("https://evil.example"));
        assert!(c.allows_method("POST") && c.allows_method("get"));
        assert!(!c.allows_method("DELETE"));
        assert!(c.allows_headers("Authorization, content-type"));
        assert!(c.allows_headers(""));
        assert!(!c.allows_headers("authorization, x-secret"));
        assert_eq!(
            c.allow_origin_value("https://app.example"),
            "https://app.example"
        );
        assert!(c.allow_credentials);
    }

    #[test]
    fn a_wildcard_never_goes_with_credentials() {
        let c = cors(&["*"], true);
        assert!(c.allows_origin("https://any.example"));
        assert!(!c.allow_credentials);
        assert_eq!(c.allow_origin_value("https://any.example"), "*");
        let c = cors(&["*"], false);
        assert_eq!(c.allow_origin_value("https://any.example"), "*");
    }

    #[test]
    fn credential_lists() {
        let a = CredentialAccess::compile(&["10.0.0.0/8".into()], &["https://a.example".into()])
            .unwrap()
            .unwrap();
        assert!(a.allows_ip(Some("10.1.1.1".parse().unwrap())));
        assert!(!a.allows_ip(Some("127.0.0.1".parse().unwrap())));
        assert!(!a.allows_ip(None));
        assert!(a.allows_origin(None));
        assert!(a.allows_origin(Some("https://A.example")));
        assert!(!a.allows_origin(Some("https://b.example")));
        assert!(CredentialAccess::compile(&[], &[]).unwrap().is_none());
        assert!(CredentialAccess::compile(&["nope".into()], &[]).is_err());
    }

    #[test]
    fn no_policy_is_open() {
        let p = ClientPolicy::compile(None).unwrap();
        assert!(p.allows_ip(None) && p.cors.is_none());
        let p = ClientPolicy::compile(Some(pb::ClientPolicy {
            allowed_ips: vec!["::1".into()],
            cors: Some(pb::Cors::default()),
        }))
        .unwrap();
        assert!(p.cors.is_none(), "no origins: CORS off");
        assert!(p.allows_ip(Some("::1".parse().unwrap())));
        assert!(!p.allows_ip(Some("::2".parse().unwrap())));
    }
}
