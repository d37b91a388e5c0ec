//! The client's address: the TCP peer, or — when the peer is one of the node's trusted
//! proxies (`--trusted-proxies`) — the address that proxy forwarded in the header the
//! operator named (`--client-ip-header`: `X-Forwarded-For`, the default, or RFC 7239
//! `Forwarded`). Only one header is read: a proxy that manages one passes the other
//! through from the client, who could then write it.
//!
//! The chain is read from the right, skipping addresses that are themselves trusted
//! proxies; the first other address is the client ([`resolve`]). An entry that is not an
//! address (garbage, `unknown`, an obfuscated `_id`) where the client should be makes the
//! node fall back to the peer: a forwarded value is used only when it is clearly an
//! address. From a peer that is not a trusted proxy, the headers are ignored.
//!
//! The resolved address is what the IP allow-lists check, what the audit records as
//! `client_ip` and what the failed-login throttle counts.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use warden_core::access::{self, IpNet};

/// Which header carries the forwarded chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ForwardedHeader {
    #[default]
    XForwardedFor,
    Forwarded,
}

impl ForwardedHeader {
    /// `x-forwarded-for` or `forwarded`.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "x-forwarded-for" => Some(Self::XForwardedFor),
            "forwarded" => Some(Self::Forwarded),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::XForwardedFor => "x-forwarded-for",
            Self::Forwarded => "forwarded",
        }
    }
}

/// The node's trusted proxies. Empty (the default): forwarding headers are never read.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    pub networks: Vec<IpNet>,
    pub header: ForwardedHeader,
}

impl TrustedProxies {
    fn trusts(&self, ip: IpAddr) -> bool {
        access::contains(&self.networks, ip)
    }
}

/// The client address of a request from TCP peer `peer` with `headers`.
pub fn resolve(trusted: &TrustedProxies, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
    let peer = access::canonical(peer);
    if trusted.networks.is_empty() || !trusted.trusts(peer) {
        return peer;
    }
    let mut values = headers.get_all(trusted.header.name()).iter().peekable();
    if values.peek().is_none() {
        return peer;
    }
    // Several header lines are one list, in order (RFC 9110 §5.3).
    let mut chain = Vec::new();
    for value in values {
        let Ok(text) = value.to_str() else {
            return peer;
        };
        let entries = match trusted.header {
            ForwardedHeader::XForwardedFor => text.split(',').map(xff_entry).collect::<Vec<_>>(),
            ForwardedHeader::Forwarded => match forwarded_entries(text) {
                Some(entries) => entries,
                None => return peer,
            },
        };
        chain.extend(entries);
    }
    let mut leftmost = None;
    for entry in chain.iter().rev() {
        match entry {
            Some(ip) if trusted.trusts(*ip) => leftmost = Some(*ip),
            Some(ip) => return *ip,
            // Not an address where the client (or a proxy of ours) should be.
            None => return peer,
        }
    }
    // Every hop is a trusted proxy: the farthest one is the client as far as known.
    leftmost.unwrap_or(peer)
}

/// One `X-Forwarded-For` entry: `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1` or
/// `[2001:db8::1]:4711`.
fn xff_entry(raw: &str) -> Option<IpAddr> {
    node_address(raw.trim())
}

/// An address as a forwarding header writes a node: bare, with a port, or bracketed.
fn node_address(raw: &str) -> Option<IpAddr> {
    if raw.is_empty() {
        return None;
    }
    if let Ok(ip) = raw.parse::<IpAddr>() {
        return Some(access::canonical(ip));
    }
    if let Ok(sa) = raw.parse::<SocketAddr>() {
        return Some(access::canonical(sa.ip()));
    }
    raw.strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|r| r.parse::<std::net::Ipv6Addr>().ok())
        .map(|ip| access::canonical(IpAddr::V6(ip)))
}

/// The `for=` node of each element of an RFC 7239 `Forwarded` value, in order: `Some(ip)`
/// for an address, `None` for `unknown`, an obfuscated identifier or a missing `for`.
/// `None` overall for a value that does not parse.
fn forwarded_entries(text: &str) -> Option<Vec<Option<IpAddr>>> {
    let mut out = Vec::new();
    for element in split_unquoted(text, ',')? {
        let mut node = None;
        for pair in split_unquoted(element, ';')? {
            let pair = pair.trim();
            if pair.is_empty() {
                continue;
            }
            let (key, value) = pair.split_once('=')?;
            if key.trim().eq_ignore_ascii_case("for") {
                let value = value.trim();
                let value = match value.strip_prefix('"') {
                    Some(quoted) => quoted.strip_suffix('"')?,
                    None => value,
                };
                node = node_address(value);
            }
        }
        out.push(node);
    }
    Some(out)
}

/// `text` split at every `sep` outside a quoted string; `None` for an unterminated quote.
fn split_unquoted(text: &str, sep: char) -> Option<Vec<&str>> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                parts.push(&text[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    if quoted {
        return None;
    }
    parts.push(&text[start..]);
    Some(parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn trusted(nets: &[&str], header: ForwardedHeader) -> TrustedProxies {
        TrustedProxies {
            networks: nets
                .iter()
                .map(|n| access::parse_network(n).unwrap())
                .collect(),
            header,
        }
    }

    fn headers(name: &str, values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn untrusted_peers_are_taken_at_their_address() {
        let t = trusted(&["10.0.0.0/8"], ForwardedHeader::XForwardedFor);
        let h = headers("x-forwarded-for", &["203.0.113.9"]);
        assert_eq!(resolve(&t, ip("192.0.2.1"), &h), ip("192.0.2.1"));
        let none = TrustedProxies::default();
        assert_eq!(resolve(&none, ip("10.0.0.1"), &h), ip("10.0.0.1"));
    }

    #[test]
    fn xff_right_most_untrusted_address() {
        let t = trusted(&["10.0.0.0/8", "::1"], ForwardedHeader::XForwardedFor);
        // The client wrote the left part; our proxies appended the rest.
        let h = headers("x-forwarded-for", &["1.1.1.1, 203.0.113.9, 10.0.0.2"]);
        assert_eq!(resolve(&t, ip("10.0.0.1"), &h), ip("203.0.113.9"));
        // Several header lines are one list.
        let h = headers("x-forwarded-for", &["1.1.1.1", "203.0.113.9", "10.0.0.2"]);
        assert_eq!(resolve(&t, ip("10.0.0.1"), &h), ip("203.0.113.9"));
        // Ports and brackets.
        let h = headers("x-forwarded-for", &["[2001:db8::7]:4711"]);
        assert_eq!(resolve(&t, ip("::1"), &h), ip("2001:db8::7"));
        let h = headers("x-forwarded-for", &["203.0.113.9:5555"]);
        assert_eq!(resolve(&t, ip("::ffff:10.0.0.1"), &h), ip("203.0.113.9"));
        let h = headers("x-forwarded-for", &["2001:db8::8"]);
        assert_eq!(resolve(&t, ip("10.0.0.1"), &h), ip("2001:db8::8"));
        // Only trusted hops: the farthest.
        let h = headers("x-forwarded-for", &["10.0.0.9, 10.0.0.2"]);
        assert_eq!(resolve(&t, ip("10.0.0.1"), &h), ip("10.0.0.9"));
        // No header: the peer.
        assert_eq!(
            resolve(&t, ip("10.0.0.1"), &HeaderMap::new()),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn xff_garbage_falls_back_to_the_peer() {
        let t = trusted(&["10.0.0.0/8"], ForwardedHeader::XForwardedFor);
        for bad in [
            "not-an-ip",
            "203.0.113.9, ",
            "",
            "1.2.3.4.5",
            "203.0.113.9;x",
        ] {
            let h = headers("x-forwarded-for", &[bad]);
            assert_eq!(resolve(&t, ip("10.0.0.1"), &h), ip("10.0.0.1"), "{bad:?}");
        }
        // Garbage left of the client does not matter.
        let h = headers("x-forwarded-for", &["garbage, 203.0.113.9"]);
        assert_eq!(resolve(&t, ip("10.0.0.1"), &h), ip("203.0.113.9"));
    }

    #[test]
    fn forwarded_elements() {
        let t = trusted(&["10.0.0.0/8"], ForwardedHeader::Forwarded);
        let h = headers(
            "forwarded",
            &["for=192.0.2.60;proto=http;by=203.0.113.43, For=\"[2001:db8:cafe::17]:4711\""],
        );
        assert_eq!(resolve(&t, ip("10.0.0.1"), &h), ip("2001:db8:cafe::17"));
        let h = headers("forwarded", &["for=192.0.2.60", "for=10.0.0.5;by=10.0.0.1"]);
        assert_eq!(resolve(&t, ip("10.0.0.1"), &h), ip("192.0.2.60"));
        let h = headers("forwarded", &["for=\"192.0.2.61:8080\""]);
        assert_eq!(resolve(&t, ip("10.0.0.1"), &h), ip("192.0.2.61"));
        // Obfuscated or unknown where the client should be: the peer.
        for hidden in ["for=_hidden", "for=unknown", "proto=https", "for=\"_x,y\""] {
            let h = headers("forwarded", &[hidden]);
            assert_eq!(resolve(&t, ip("10.0.0.1"), &h), ip("10.0.0.1"), "{hidden}");
        }
        // Malformed: the peer.
        for bad in ["for=\"192.0.2.60", "for", "for=[2001:db8::1"] {
            let h = headers("forwarded", &[bad]);
            assert_eq!(resolve(&t, ip("10.0.0.1"), &h), ip("10.0.0.1"), "{bad}");
        }
        // An X-Forwarded-For is not read when Forwarded is the configured header.
        let h = headers("x-forwarded-for", &["192.0.2.60"]);
        assert_eq!(resolve(&t, ip("10.0.0.1"), &h), ip("10.0.0.1"));
    }

    #[test]
    fn header_names() {
        assert_eq!(
            ForwardedHeader::parse("X-Forwarded-For"),
            Some(ForwardedHeader::XForwardedFor)
        );
        assert_eq!(
            ForwardedHeader::parse("forwarded"),
            Some(ForwardedHeader::Forwarded)
        );
        assert_eq!(ForwardedHeader::parse("x-real-ip"), None);
    }
}
