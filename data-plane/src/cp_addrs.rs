//! The control plane's addresses (`--cp-addr a,b,c`): parsed and checked once at start-up
//! ([`parse`]), then turned into the concrete places to dial at each connect round
//! ([`resolve`]): an address whose host is an IP is dialled as is; a host name is resolved
//! again at every round and each of its records is tried, while TLS still checks the
//! certificate against the name (and requests carry it as their authority).

use std::net::{IpAddr, SocketAddr};

use tonic::transport::Uri;

/// Most control-plane addresses a node takes.
pub const MAX_ADDRS: usize = 16;

/// Why `--cp-addr` is not a usable list; the message names the address at fault.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AddrError {
    #[error("--cp-addr is empty: give one control plane URL or a comma-separated list")]
    Empty,
    #[error("--cp-addr takes at most {MAX_ADDRS} addresses, not {0}")]
    TooMany(usize),
    #[error("--cp-addr has an empty entry in {0:?} (two commas, or a trailing comma)")]
    EmptyEntry(String),
    #[error("--cp-addr {0:?} is not a URL such as https://cp.example:50051: {1}")]
    Invalid(String, String),
    #[error("--cp-addr {0:?} must start with http:// or https://")]
    Scheme(String),
    #[error("--cp-addr {0:?} has no host")]
    NoHost(String),
    #[error("--cp-addr {0:?} must not carry a path, query or user name")]
    Extra(String),
    #[error("--cp-addr lists {0:?} twice")]
    Duplicate(String),
}

/// `--cp-addr`: one URL or several, comma-separated, each `http://` or `https://` with a
/// host (an IP or a name) and an optional port, and nothing else. The list keeps its order.
pub fn parse(raw: &str) -> Result<Vec<String>, AddrError> {
    if raw.trim().is_empty() {
        return Err(AddrError::Empty);
    }
    let entries: Vec<&str> = raw.split(',').map(str::trim).collect();
    if entries.len() > MAX_ADDRS {
        return Err(AddrError::TooMany(entries.len()));
    }
    let mut out: Vec<String> = Vec::with_capacity(entries.len());
    for entry in entries {
        if entry.is_empty() {
            return Err(AddrError::EmptyEntry(raw.to_owned()));
        }
        let addr = entry.trim_end_matches('/').to_owned();
        let uri: Uri = addr
            .parse()
            .map_err(|e: tonic::codegen::http::uri::InvalidUri| {
                AddrError::Invalid(addr.clone(), e.to_string())
            })?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err(AddrError::Scheme(addr));
        }
        let Some(authority) = uri.authority() else {
            return Err(AddrError::NoHost(addr));
        };
        if authority.host().is_empty() {
            return Err(AddrError::NoHost(addr));
        }
        if authority.as_str().contains('@') || uri.path_and_query().is_some_and(|p| p != "/") {
            return Err(AddrError::Extra(addr));
        }
        if out.contains(&addr) {
            return Err(AddrError::Duplicate(addr));
        }
        out.push(addr);
    }
    Ok(out)
}

/// One place to dial in a connect round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Position of the configured address it comes from (the metric's index).
    pub index: usize,
    /// The URL dialled: the configured one, or with the host replaced by one resolved IP.
    pub url: String,
    /// The configured URL when `url` is one of its name's records: the authority of the
    /// requests, and (with the host) the name the certificate is checked against.
    pub origin: Option<String>,
    /// The configured host name when it was resolved.
    pub name: Option<String>,
}

/// The configured addresses as places to dial, in order: IP hosts as they are, each name
/// resolved now into one target per record (a name that does not resolve is logged and
/// skipped this round).
pub async fn resolve(addrs: &[String]) -> Vec<Target> {
    let mut out = Vec::new();
    for (index, addr) in addrs.iter().enumerate() {
        match name_of(addr) {
            None => out.push(Target {
                index,
                url: addr.clone(),
                origin: None,
                name: None,
            }),
            Some((scheme, host, port)) => {
                match tokio::net::lookup_host((host.as_str(), port)).await {
                    Ok(records) => {
                        let mut seen: Vec<SocketAddr> = Vec::new();
                        for record in records {
                            if seen.contains(&record) {
                                continue;
                            }
                            seen.push(record);
                            out.push(Target {
                                index,
                                url: format!("{scheme}://{record}"),
                                origin: Some(addr.clone()),
                                name: Some(host.clone()),
                            });
                        }
                    }
                    Err(e) => {
                        tracing::warn!(cp = %addr, error = %e, "control plane address does not resolve");
                    }
                }
            }
        }
    }
    out
}

/// `(scheme, host, port)` of `addr` when its host is a name rather than an IP.
fn name_of(addr: &str) -> Option<(String, String, u16)> {
    let uri: Uri = addr.parse().ok()?;
    let host = uri.host()?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.parse::<IpAddr>().is_ok() {
        return None;
    }
    let scheme = uri.scheme_str()?.to_owned();
    let port = uri
        .port_u16()
        .unwrap_or(if scheme == "https" { 443 } else { 80 });
    Some((scheme, host.to_owned(), port))
}

/// Where to start a round: just after `last` (the target the link was attached to, which
/// just failed), so that every other replica is tried before it again; at the first target
/// when there is no such one.
pub fn rotate(targets: Vec<Target>, last: Option<&Target>) -> Vec<Target> {
    let Some(last) = last else { return targets };
    let Some(pos) = targets
        .iter()
        .position(|t| t.index == last.index && t.url == last.url)
        .or_else(|| targets.iter().rposition(|t| t.index == last.index))
    else {
        return targets;
    };
    let mut targets = targets;
    targets.rotate_left(pos + 1);
    targets
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_one_or_several_addresses() {
        assert_eq!(
            parse("http://127.0.0.1:50051").unwrap(),
            vec!["http://127.0.0.1:50051"]
        );
        assert_eq!(
            parse(" https://a.example:1/ , https://b.example:2,http://[::1]:3").unwrap(),
            vec![
                "https://a.example:1",
                "https://b.example:2",
                "http://[::1]:3"
            ]
        );
    }

    #[test]
    fn refuses_bad_lists_naming_the_entry() {
        assert_eq!(parse(" "), Err(AddrError::Empty));
        assert!(matches!(
            parse("http://a:1,,http://b:2"),
            Err(AddrError::EmptyEntry(_))
        ));
        assert!(matches!(
            parse("http://a:1,"),
            Err(AddrError::EmptyEntry(_))
        ));
        assert_eq!(
            parse("http://a:1,ftp://b:2"),
            Err(AddrError::Scheme("ftp://b:2".into()))
        );
        assert_eq!(
            parse("b.example:2"),
            Err(AddrError::Scheme("b.example:2".into()))
        );
        assert_eq!(
            parse("https://u@b:2"),
            Err(AddrError::Extra("https://u@b:2".into()))
        );
        assert_eq!(
            parse("https://b:2/x"),
            Err(AddrError::Extra("https://b:2/x".into()))
        );
        assert_eq!(
            parse("http://a:1,http://a:1/"),
            Err(AddrError::Duplicate("http://a:1".into()))
        );
        assert!(matches!(parse("http://a b:1"), Err(AddrError::Invalid(..))));
        let many = vec!["http://127.0.0.1:1"; MAX_ADDRS + 1].join(",");
        assert_eq!(parse(&many), Err(AddrError::TooMany(MAX_ADDRS + 1)));
        let message = parse("http://a:1,ftp://b:2").unwrap_err().to_string();
        assert!(message.contains("ftp://b:2") && message.contains("--cp-addr"));
    }

    #[tokio::test]
    async fn names_resolve_into_one_target_per_record_and_ips_stay() {
        let addrs = parse("http://127.0.0.1:7,http://localhost:9,http://cp.invalid:1").unwrap();
        let targets = resolve(&addrs).await;
        assert_eq!(targets[0].url, "http://127.0.0.1:7");
        assert_eq!(targets[0].origin, None);
        let named: Vec<_> = targets.iter().filter(|t| t.index == 1).collect();
        assert!(!named.is_empty(), "{targets:?}");
        for t in &named {
            assert_eq!(t.origin.as_deref(), Some("http://localhost:9"));
            assert_eq!(t.name.as_deref(), Some("localhost"));
            let ip: SocketAddr = t.url.trim_start_matches("http://").parse().unwrap();
            assert!(ip.ip().is_loopback() && ip.port() == 9, "{t:?}");
        }
        // A name that does not resolve is skipped, not fatal.
        assert!(targets.iter().all(|t| t.index != 2));
    }

    #[test]
    fn a_round_starts_after_the_replica_that_failed() {
        let t = |index: usize| Target {
            index,
            url: format!("http://127.0.0.1:{index}"),
            origin: None,
            name: None,
        };
        let all = vec![t(0), t(1), t(2)];
        let order = |last: Option<&Target>| -> Vec<usize> {
            rotate(all.clone(), last).iter().map(|t| t.index).collect()
        };
        assert_eq!(order(None), vec![0, 1, 2]);
        assert_eq!(order(Some(&t(1))), vec![2, 0, 1]);
        assert_eq!(order(Some(&t(2))), vec![0, 1, 2]);
        // A name's record that is gone: start after the name's other records.
        let gone = Target {
            url: "http://127.0.0.9:1".into(),
            ..t(0)
        };
        assert_eq!(order(Some(&gone)), vec![1, 2, 0]);
    }
}
