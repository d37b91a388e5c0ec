//! Whether a credential sent to a URL would cross a network in clear. `warden-dp` (its
//! `wn_` node credential) and `wardenctl` (its `wa_` admin credential) refuse an `http://`
//! control plane whose host is not a loopback address unless told `--allow-plaintext`; this
//! module is the one place that decides what "loopback" means: `localhost`, 127.0.0.0/8 and
//! `::1` (also as an IPv4-mapped address). Only the text of the address is looked at: no
//! name is resolved, so a refused address never causes a DNS query.

use std::net::IpAddr;

/// How a credential travels to a URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `https://`: encrypted.
    Tls,
    /// Not `https://`, to a loopback host: stays on this machine.
    PlainLoopback,
    /// Not `https://`, to any other host: readable on the network.
    PlainRemote,
}

impl Transport {
    /// How a credential sent to `url` travels.
    pub fn of(url: &str) -> Self {
        let (scheme, rest) = url.trim().split_once("://").unwrap_or(("", url.trim()));
        if scheme.eq_ignore_ascii_case("https") {
            return Self::Tls;
        }
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        if is_loopback_host(authority_host(authority)) {
            Self::PlainLoopback
        } else {
            Self::PlainRemote
        }
    }
}

/// The host of an authority (`user@host:port`, `[::1]:443`, `host`), without brackets.
pub fn authority_host(authority: &str) -> &str {
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if let Some(bracketed) = hostport.strip_prefix('[') {
        return bracketed.split(']').next().unwrap_or("");
    }
    match hostport.split_once(':') {
        // One colon: `host:port`. More: a bare IPv6 address (not valid in a URL, but
        // judged as the address it is).
        Some((host, port)) if !port.contains(':') => host,
        _ => hostport,
    }
}

/// Whether `host` names this machine: `localhost` (any case, trailing dot allowed), an
/// address in 127.0.0.0/8, or `::1` (also `::ffff:127.x.y.z`).
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<IpAddr>()
        .is_ok_and(|ip| ip.to_canonical().is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_loopback_from_the_network() {
        for url in [
            "http://127.0.0.1:50051",
            "http://127.0.0.9:1",
            "http://localhost:50051",
            "http://LOCALHOST./",
            "http://[::1]:50051",
            "http://[::ffff:127.0.0.1]:50051",
            "http://user@127.0.0.1:1/path",
            "127.0.0.1:50051",
        ] {
            assert_eq!(Transport::of(url), Transport::PlainLoopback, "{url}");
        }
        for url in [
            "http://cp.invalid:50051",
            "http://10.0.0.1:50051",
            "http://[::2]:1",
            "http://localhost.evil.invalid:1",
            "http://127.0.0.1.nip.invalid:1",
            "http://127.0.0.1@cp.invalid:1",
            "http://0.0.0.0:1",
            "http://:1",
            "cp.invalid:50051",
        ] {
            assert_eq!(Transport::of(url), Transport::PlainRemote, "{url}");
        }
        assert_eq!(Transport::of("https://cp.invalid:443"), Transport::Tls);
        assert_eq!(Transport::of("HTTPS://cp.invalid"), Transport::Tls);
    }

    #[test]
    fn finds_the_host_of_an_authority() {
        assert_eq!(authority_host("cp.invalid:50051"), "cp.invalid");
        assert_eq!(authority_host("[::1]:50051"), "::1");
        assert_eq!(authority_host("a:b@h:1"), "h");
        assert_eq!(authority_host("h"), "h");
        assert_eq!(authority_host("::1"), "::1");
    }
}
