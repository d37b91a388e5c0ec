//! The node's egress policy: which addresses its upstream client may connect to, so that a
//! provider key only ever travels to a provider. The policy comes from the node's own flags
//! (`--egress-allow`, `--egress-allow-private`, `--egress-allow-loopback`), never from the
//! control plane: an Admin API holder chooses a provider's `base_url`, and the policy must
//! constrain them too.
//!
//! Three checks, each before anything connects:
//! - [`EgressPolicy::check_target`], before an attempt: the URL's host (and port) must be on
//!   the allow-list when there is one, and a literal IP address is judged as below;
//! - [`EgressResolver`], the upstream client's DNS resolver: every address a name resolves
//!   to is judged ([`classify`]) — one refused address refuses the name, so DNS rebinding
//!   to a metadata address is refused too;
//! - with an egress proxy (which resolves names itself), the same resolution is made first,
//!   best effort, in [`EgressPolicy::preflight`].
//!
//! Link-local and cloud-metadata addresses are always refused; private and loopback ones
//! unless the allow-list names the host or the matching `--egress-allow-*` flag is set.
//! A refusal reaches the client as a 502 `egress_denied` ([`denial_of`] finds it in a
//! client error), and the provider key was never sent.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use secrecy::{ExposeSecret as _, SecretString};
pub use warden_core::address_class::{AddressClass, classify};

/// Why the policy refused an upstream. Shown in the node's log (never to the client, whom
/// the addresses of the node's network do not concern).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("`{0}` is not an http(s) URL with a host")]
    NotHttp(String),
    #[error("{host} is not on the egress allow-list (--egress-allow)")]
    NotAllowed { host: String },
    #[error("{host} resolves to {ip}, a link-local or cloud-metadata address (always refused)")]
    Forbidden { host: String, ip: IpAddr },
    #[error(
        "{host} resolves to {ip}, a private address (refused unless --egress-allow names the host, or --egress-allow-private)"
    )]
    Private { host: String, ip: IpAddr },
    #[error(
        "{host} resolves to {ip}, a loopback address (refused unless --egress-allow names the host, or --egress-allow-loopback)"
    )]
    Loopback { host: String, ip: IpAddr },
}

impl Denied {
    /// A short label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::NotHttp(_) => "not_http",
            Self::NotAllowed { .. } => "not_allowed",
            Self::Forbidden { .. } => "link_local_or_metadata",
            Self::Private { .. } => "private",
            Self::Loopback { .. } => "loopback",
        }
    }
}

/// The host part of an allow-list entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    /// One name, lower case, without a trailing dot.
    Name(String),
    /// `*.example.com`: any name ending in `.example.com` (not `example.com` itself).
    Suffix(String),
    Ip(IpAddr),
}

/// One `--egress-allow` entry: `HOST`, `HOST:PORT`, `*.DOMAIN[:PORT]`, `IP`, `[IPV6]:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowEntry {
    host: HostPattern,
    port: Option<u16>,
}

impl std::str::FromStr for AllowEntry {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        let text = raw.trim().to_ascii_lowercase();
        let bad = || format!("`{raw}` is not HOST, HOST:PORT, *.DOMAIN or [IPV6]:PORT");
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (ip, after) = rest.split_once(']').ok_or_else(bad)?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or_else(bad)?),
            };
            (ip.to_owned(), port.map(str::to_owned))
        } else if text.parse::<Ipv6Addr>().is_ok() {
            (text.clone(), None)
        } else {
            match text.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), Some(p.to_owned())),
                None => (text.clone(), None),
            }
        };
        let port = match port {
            Some(p) => Some(p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(bad)?),
            None => None,
        };
        let host = host.trim_end_matches('.');
        let host = if let Ok(ip) = host.parse::<IpAddr>() {
            HostPattern::Ip(ip)
        } else {
            let (name, wildcard) = match host.strip_prefix("*.") {
                Some(rest) => (rest, true),
                None => (host, false),
            };
            let valid = !name.is_empty()
                && name.len() <= 253
                && name.split('.').all(|l| {
                    !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                });
            if !valid {
                return Err(bad());
            }
            if wildcard {
                HostPattern::Suffix(format!(".{name}"))
            } else {
                HostPattern::Name(name.to_owned())
            }
        };
        Ok(Self { host, port })
    }
}

impl AllowEntry {
    /// Whether the entry names `host` (a name in lower case without a trailing dot, or an
    /// address), whatever the port.
    fn names(&self, host: &Host) -> bool {
        match (&self.host, host) {
            (HostPattern::Name(n), Host::Name(h)) => n == h,
            (HostPattern::Suffix(s), Host::Name(h)) => h.ends_with(s.as_str()),
            (HostPattern::Ip(a), Host::Ip(b)) => a == b,
            _ => false,
        }
    }
}

/// A host as the policy compares it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Host {
    Name(String),
    Ip(IpAddr),
}

impl Host {
    fn of_name(name: &str) -> Self {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        match name.parse::<IpAddr>() {
            Ok(ip) => Self::Ip(ip),
            Err(_) => Self::Name(name),
        }
    }
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Name(n) => f.write_str(n),
            Self::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// The node's egress policy (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct EgressPolicy {
    /// `--egress-allow`: empty allows any host whose addresses are public.
    pub allow: Vec<AllowEntry>,
    /// `--egress-allow-private`: private addresses of any host.
    pub allow_private: bool,
    /// `--egress-allow-loopback`: loopback addresses of any host (`wardenctl dev`, tests).
    pub allow_loopback: bool,
    /// The egress proxy's host, chosen by the operator: it may be private or loopback.
    pub proxy_host: Option<String>,
    /// TEST ONLY (`--egress-test-resolve`, hidden): `.invalid` names answered from this
    /// map instead of DNS, so tests never send a packet off loopback.
    pub test_resolve: HashMap<String, Vec<IpAddr>>,
}

impl EgressPolicy {
    /// Whether the allow-list (or the proxy setting) names `host`.
    fn names(&self, host: &Host) -> bool {
        self.allow.iter().any(|e| e.names(host))
            || self
                .proxy_host
                .as_deref()
                .is_some_and(|p| Host::of_name(p) == *host)
    }

    /// Checks `url` before anything is sent: an http(s) URL whose host (and port) the
    /// allow-list names, when there is one; a literal address is judged at once (no
    /// resolution will follow).
    pub fn check_target(&self, url: &reqwest::Url) -> Result<(), Denied> {
        let not_http = || Denied::NotHttp(format!("{}://…", url.scheme()));
        if !matches!(url.scheme(), "http" | "https") {
            return Err(not_http());
        }
        let host = target_host(url).ok_or_else(not_http)?;
        let port = url.port_or_known_default();
        if !self.allow.is_empty()
            && !self
                .allow
                .iter()
                .any(|e| e.names(&host) && (e.port.is_none() || e.port == port))
        {
            return Err(Denied::NotAllowed {
                host: host.to_string(),
            });
        }
        if let Host::Ip(ip) = host {
            self.check_addresses(&ip.to_string(), &[ip])?;
        }
        Ok(())
    }

    /// Judges every address `host` resolved to: one refused address refuses the host.
    pub fn check_addresses(&self, host: &str, addresses: &[IpAddr]) -> Result<(), Denied> {
        let named = self.names(&Host::of_name(host));
        for &ip in addresses {
            let host = host.to_owned();
            match classify(ip) {
                AddressClass::Forbidden => return Err(Denied::Forbidden { host, ip }),
                AddressClass::Loopback if !(named || self.allow_loopback) => {
                    return Err(Denied::Loopback { host, ip });
                }
                AddressClass::Private if !(named || self.allow_private) => {
                    return Err(Denied::Private { host, ip });
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The addresses of `host`: from the test map for a name it holds, else from DNS.
    pub async fn lookup(&self, host: &str) -> std::io::Result<Vec<IpAddr>> {
        let key = host.trim_end_matches('.').to_ascii_lowercase();
        if let Some(addresses) = self.test_resolve.get(&key) {
            return Ok(addresses.clone());
        }
        Ok(tokio::net::lookup_host((host, 0))
            .await?
            .map(|a| a.ip())
            .collect())
    }

    /// Everything that can be checked before an attempt: [`Self::check_target`] and, with
    /// a proxy (which resolves names itself), the addresses the name has here, best effort
    /// (a name this node cannot resolve is the proxy's to judge).
    pub async fn preflight(&self, url: &reqwest::Url) -> Result<(), Denied> {
        self.check_target(url)?;
        if self.proxy_host.is_some()
            && let Some(Host::Name(name)) = target_host(url)
            && let Ok(addresses) = self.lookup(&name).await
        {
            self.check_addresses(&name, &addresses)?;
        }
        Ok(())
    }
}

/// An HTTP(S) proxy every upstream request goes through (`--egress-proxy`); without one,
/// the node connects directly and ignores `HTTPS_PROXY` and the like.
#[derive(Debug, Clone)]
pub struct EgressProxy {
    /// `http://host:port` or `https://host:port`, without credentials.
    pub url: String,
    /// `user:password` for `Proxy-Authorization: Basic`, from
    /// `--egress-proxy-credentials-file` or `WARDEN_EGRESS_PROXY_CREDENTIALS`.
    pub credentials: Option<SecretString>,
}

/// The egress settings of a node: the policy and the proxy.
#[derive(Debug, Clone, Default)]
pub struct EgressSettings {
    pub policy: EgressPolicy,
    pub proxy: Option<EgressProxy>,
}

impl EgressSettings {
    /// `builder` with the policy's resolver and the proxy (or none, and no proxy from the
    /// environment either).
    pub fn apply(
        &self,
        builder: reqwest::ClientBuilder,
    ) -> Result<reqwest::ClientBuilder, reqwest::Error> {
        let builder = builder.dns_resolver(EgressResolver::new(Arc::new(self.policy.clone())));
        let Some(proxy) = &self.proxy else {
            return Ok(builder.no_proxy());
        };
        let mut p = reqwest::Proxy::all(proxy.url.as_str())?;
        if let Some(credentials) = &proxy.credentials {
            use base64::Engine as _;
            let encoded = base64::engine::general_purpose::STANDARD
                .encode(credentials.expose_secret().as_bytes());
            if let Ok(mut value) = http::HeaderValue::from_str(&format!("Basic {encoded}")) {
                value.set_sensitive(true);
                p = p.custom_http_auth(value);
            }
        }
        Ok(builder.proxy(p))
    }
}

/// The host of `url` (the url crate has already read every IPv4 spelling, e.g.
/// `2852039166`, as dotted decimal, and writes IPv6 in brackets).
fn target_host(url: &reqwest::Url) -> Option<Host> {
    let host = url.host_str()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    Some(Host::of_name(host))
}

/// Parses one `--egress-test-resolve NAME=IP` (TEST ONLY): the name must end in
/// `.invalid`, which no real DNS answers, so the flag can never redirect a real provider.
pub fn parse_test_resolve(raw: &str) -> Result<(String, IpAddr), String> {
    let (name, ip) = raw
        .split_once('=')
        .ok_or_else(|| format!("`{raw}` is not NAME=IP"))?;
    let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
    if !name.ends_with(".invalid") {
        return Err(format!(
            "`{name}`: only .invalid names may be mapped (test only)"
        ));
    }
    let ip = ip
        .trim()
        .parse::<IpAddr>()
        .map_err(|_| format!("`{raw}` is not NAME=IP"))?;
    Ok((name, ip))
}

/// The upstream client's DNS resolver: resolves, then refuses a name any of whose
/// addresses the policy refuses (the error is a [`Denied`], found by [`denial_of`]).
#[derive(Debug, Clone)]
pub struct EgressResolver {
    policy: Arc<EgressPolicy>,
}

impl EgressResolver {
    pub fn new(policy: Arc<EgressPolicy>) -> Self {
        Self { policy }
    }
}

impl reqwest::dns::Resolve for EgressResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = Arc::clone(&self.policy);
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addresses = policy.lookup(&host).await?;
            policy.check_addresses(&host, &addresses)?;
            let addrs: reqwest::dns::Addrs = Box::new(
                addresses
                    .into_iter()
                    .map(|ip| SocketAddr::new(ip, 0))
                    .collect::<Vec<_>>()
                    .into_iter(),
            );
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(addrs)
        })
    }
}

/// The policy's refusal inside a client error, if that is why it failed.
pub fn denial_of<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a Denied> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(denied) = e.downcast_ref::<Denied>() {
            return Some(denied);
        }
        current = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn allow_list_entries_parse_and_match() {
        let policy = EgressPolicy {
            allow: [
                "api.openai.com",
                "*.openai.azure.com:443",
                "10.0.0.5",
                "[fd12::1]:8443",
            ]
            .iter()
            .map(|e| e.parse().unwrap())
            .collect(),
            ..EgressPolicy::default()
        };
        let url = |u: &str| reqwest::Url::parse(u).unwrap();
        assert!(
            policy
                .check_target(&url("https://API.openai.com./v1"))
                .is_ok()
        );
        assert!(
            policy
                .check_target(&url("https://x.openai.azure.com/v1"))
                .is_ok()
        );
        assert!(
            policy
                .check_target(&url("https://x.openai.azure.com:444/v1"))
                .is_err()
        );
        assert!(
            policy
                .check_target(&url("https://openai.azure.com/v1"))
                .is_err()
        );
        assert!(
            policy
                .check_target(&url("https://evil.example/v1"))
                .is_err()
        );
        // Named: a private literal is allowed; its port must match when given.
        assert!(policy.check_target(&url("http://10.0.0.5:9000/v1")).is_ok());
        assert!(
            policy
                .check_target(&url("https://[fd12::1]:8443/v1"))
                .is_ok()
        );
        assert!(policy.check_target(&url("https://[fd12::1]/v1")).is_err());
        for bad in ["", "a b", "host:0", "host:x", "[::1", "*."] {
            assert!(bad.parse::<AllowEntry>().is_err(), "{bad}");
        }
    }

    #[test]
    fn literal_and_resolved_addresses_are_judged() {
        let open = EgressPolicy::default();
        let url = |u: &str| reqwest::Url::parse(u).unwrap();
        // The url crate reads every IPv4 spelling: 2852039166 is 169.254.169.254.
        for refused in [
            "https://169.254.169.254/v1",
            "https://2852039166/v1",
            "https://0xA9FEA9FE/v1",
            "https://[::ffff:a9fe:a9fe]/v1",
            "http://127.0.0.1:9/v1",
            "https://10.0.0.1/v1",
            "ftp://api.example.com/",
        ] {
            assert!(open.check_target(&url(refused)).is_err(), "{refused}");
        }
        assert!(open.check_target(&url("https://1.1.1.1/v1")).is_ok());
        // Rebinding: one metadata address among public ones refuses the name.
        assert!(matches!(
            open.check_addresses("a.example", &[ip("1.1.1.1"), ip("169.254.169.254")]),
            Err(Denied::Forbidden { .. })
        ));
        let dev = EgressPolicy {
            allow_loopback: true,
            ..EgressPolicy::default()
        };
        assert!(dev.check_addresses("localhost", &[ip("127.0.0.1")]).is_ok());
        assert!(dev.check_addresses("x", &[ip("10.0.0.1")]).is_err());
        assert!(dev.check_addresses("x", &[ip("169.254.169.254")]).is_err());
        let named = EgressPolicy {
            allow: vec!["localhost".parse().unwrap()],
            ..EgressPolicy::default()
        };
        assert!(
            named
                .check_addresses("localhost", &[ip("127.0.0.1")])
                .is_ok()
        );
        assert!(named.check_addresses("other", &[ip("127.0.0.1")]).is_err());
    }

    #[test]
    fn test_resolve_takes_only_invalid_names() {
        assert_eq!(
            parse_test_resolve("Meta.test.invalid=169.254.169.254").unwrap(),
            ("meta.test.invalid".to_owned(), ip("169.254.169.254"))
        );
        assert!(parse_test_resolve("api.openai.com=127.0.0.1").is_err());
        assert!(parse_test_resolve("x.invalid").is_err());
    }
}
