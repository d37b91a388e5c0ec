//! The syntax of client access lists, shared by the control plane (which refuses a bad
//! entry when it is set) and the node (which compiles the lists of a snapshot): source
//! networks as CIDRs ([`parse_network`]: `10.0.0.0/8`, `2001:db8::/32`, or one address) and
//! browser origins ([`normalize_origin`]: `scheme://host[:port]`, or the explicit `*`).

use std::net::IpAddr;

pub use ipnet::IpNet;

/// The wildcard origin: every origin. Only when set explicitly, and audited.
pub const ANY_ORIGIN: &str = "*";

/// A source network: a CIDR, or one address (as its /32 or /128). The host bits of a CIDR
/// are cleared (`10.1.2.3/8` is `10.0.0.0/8`).
pub fn parse_network(raw: &str) -> Result<IpNet, String> {
    let raw = raw.trim();
    if let Ok(net) = raw.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    let bad = || format!("{raw:?} is not an IP address or CIDR (e.g. 10.0.0.0/8, 2001:db8::/32)");
    let ip = raw.parse::<IpAddr>().map_err(|_| bad())?;
    let bits = if ip.is_ipv4() { 32 } else { 128 };
    IpNet::new(ip, bits).map_err(|_| bad())
}

/// Every network of `raw`, or the first entry that is not one.
pub fn parse_networks(raw: &[String]) -> Result<Vec<IpNet>, String> {
    raw.iter().map(|r| parse_network(r)).collect()
}

/// Whether `ip` is in any of `networks`. An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`,
/// as a dual-stack listener reports IPv4 peers) is matched as the IPv4 address it is.
pub fn contains(networks: &[IpNet], ip: IpAddr) -> bool {
    let ip = canonical(ip);
    networks.iter().any(|n| n.contains(&ip))
}

/// `ip`, with an IPv4-mapped IPv6 address turned into its IPv4 address.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// A browser origin in the form browsers send it (`https://app.example.com`,
/// `http://localhost:5173`): scheme `http` or `https`, a host, an optional port, no path,
/// query, user info or trailing slash; lowercased. `*` stays `*`.
pub fn normalize_origin(raw: &str) -> Result<String, String> {
    let raw = raw.trim();
    if raw == ANY_ORIGIN {
        return Ok(raw.to_owned());
    }
    let bad = || {
        format!(
            "{raw:?} is not an origin: scheme://host[:port] with no path, e.g. https://app.example.com"
        )
    };
    let lower = raw.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"))
        .ok_or_else(bad)?;
    let host = match rest.rsplit_once(':') {
        // `[::1]:8080`, `host:8080`; a bracketed IPv6 host without a port has ':' inside.
        Some((host, port)) if !port.contains(']') => {
            if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            host
        }
        _ => rest,
    };
    let host_ok = if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        inner.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    };
    if !host_ok {
        return Err(bad());
    }
    Ok(lower)
}

/// Every origin of `raw`, normalized, or the first entry that is not one.
pub fn normalize_origins(raw: &[String]) -> Result<Vec<String>, String> {
    raw.iter().map(|r| normalize_origin(r)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_parse() {
        assert_eq!(
            parse_network("10.1.2.3/8").unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(
            parse_network(" 127.0.0.2 ").unwrap().to_string(),
            "127.0.0.2/32"
        );
        assert_eq!(parse_network("::1").unwrap().to_string(), "::1/128");
        assert_eq!(
            parse_network("2001:db8::1/32").unwrap().to_string(),
            "2001:db8::/32"
        );
        for bad in [
            "",
            "10.0.0.0/33",
            "host.example",
            "10.0.0.0/",
            "[::1]",
            "::1/129",
        ] {
            assert!(parse_network(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn membership_sees_mapped_ipv4() {
        let nets = parse_networks(&["10.0.0.0/8".into(), "::1".into()]).unwrap();
        assert!(contains(&nets, "10.9.9.9".parse().unwrap()));
        assert!(contains(&nets, "::ffff:10.9.9.9".parse().unwrap()));
        assert!(contains(&nets, "::1".parse().unwrap()));
        assert!(!contains(&nets, "11.0.0.1".parse().unwrap()));
        assert!(!contains(&nets, "::2".parse().unwrap()));
        assert!(!contains(&[], "10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn origins_normalize() {
        assert_eq!(
            normalize_origin("HTTPS://App.Example.com").unwrap(),
            "https://app.example.com"
        );
        assert_eq!(
            normalize_origin("http://localhost:5173").unwrap(),
            "http://localhost:5173"
        );
        assert_eq!(
            normalize_origin("http://[::1]:8080").unwrap(),
            "http://[::1]:8080"
        );
        assert_eq!(normalize_origin("http://[::1]").unwrap(), "http://[::1]");
        assert_eq!(normalize_origin("*").unwrap(), "*");
        for bad in [
            "app.example.com",
            "https://app.example.com/",
            "https://app.example.com/path",
            "ftp://x",
            "https://",
            "https://a:b@c",
            "https://x:99999999",
            "https://*.example.com",
            "null",
        ] {
            assert!(normalize_origin(bad).is_err(), "{bad}");
        }
    }
}
