//! What an IP address is to an egress policy ([`classify`]): never to be contacted
//! (link-local, cloud metadata, …), loopback, private, or public. The control plane refuses
//! a provider `base_url` whose literal address is [`AddressClass::Forbidden`]; the data
//! plane judges every address a provider resolves to (`warden_data_plane::egress`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Cloud metadata and platform addresses outside the link-local range (or inside it, named
/// for the reader): always refused.
const METADATA_V4: [Ipv4Addr; 5] = [
    // AWS, GCP, Azure, OpenStack, Oracle, DigitalOcean
    Ipv4Addr::new(169, 254, 169, 254),
    // AWS ECS task metadata
    Ipv4Addr::new(169, 254, 170, 2),
    // Alibaba Cloud
    Ipv4Addr::new(100, 100, 100, 200),
    // Oracle Cloud (legacy)
    Ipv4Addr::new(192, 0, 0, 192),
    // Azure WireServer (a public address)
    Ipv4Addr::new(168, 63, 129, 16),
];

/// IPv6 cloud metadata addresses (inside fc00::/7, which is otherwise private).
const METADATA_V6: [Ipv6Addr; 2] = [
    // AWS instance metadata over IPv6
    Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254),
    // GCP metadata over IPv6
    Ipv6Addr::new(0xfd20, 0x00ce, 0, 0, 0, 0, 0, 0x0254),
];

/// What an address is to the egress policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    /// Link-local, cloud metadata, unspecified, broadcast, multicast or reserved: never.
    Forbidden,
    /// 127.0.0.0/8, ::1: only when named or with `--egress-allow-loopback`.
    Loopback,
    /// RFC 1918, CGNAT (100.64.0.0/10), benchmarking (198.18.0.0/15), fc00::/7, fec0::/10:
    /// only when named or with `--egress-allow-private`.
    Private,
    /// Anything else.
    Public,
}

/// The class of `ip`; an IPv4 address embedded in IPv6 (mapped, compatible, NAT64) is
/// judged as the IPv4 address it carries.
pub fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    let [a, b, ..] = ip.octets();
    if METADATA_V4.contains(&ip)
        || ip.is_link_local()
        || a == 0
        || ip.is_broadcast()
        || ip.is_multicast()
        || a >= 240
    {
        AddressClass::Forbidden
    } else if ip.is_loopback() {
        AddressClass::Loopback
    } else if ip.is_private() || (a == 100 && (b & 0xc0) == 64) || (a == 198 && (b & 0xfe) == 18) {
        AddressClass::Private
    } else {
        AddressClass::Public
    }
}

fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    let s = ip.segments();
    let embedded = || Ipv4Addr::from((u32::from(s[6]) << 16) | u32::from(s[7]));
    // NAT64 (64:ff9b::/96) and the old IPv4-compatible form (::a.b.c.d).
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0]
        || (s[..6] == [0; 6] && !ip.is_loopback() && !ip.is_unspecified())
    {
        return classify_v4(embedded());
    }
    if METADATA_V6.contains(&ip)
        || (s[0] & 0xffc0) == 0xfe80
        || ip.is_unspecified()
        || ip.is_multicast()
    {
        AddressClass::Forbidden
    } else if ip.is_loopback() {
        AddressClass::Loopback
    } else if (s[0] & 0xfe00) == 0xfc00 || (s[0] & 0xffc0) == 0xfec0 {
        AddressClass::Private
    } else {
        AddressClass::Public
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn addresses_are_classified() {
        for forbidden in [
            "169.254.169.254",
            "169.254.1.1",
            "100.100.100.200",
            "168.63.129.16",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "fe80::1",
            "fd00:ec2::254",
            "fd20:ce::254",
            "::",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "::169.254.169.254",
        ] {
            assert_eq!(
                classify(ip(forbidden)),
                AddressClass::Forbidden,
                "{forbidden}"
            );
        }
        for private in [
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "fd12::1",
            "::ffff:10.0.0.1",
        ] {
            assert_eq!(classify(ip(private)), AddressClass::Private, "{private}");
        }
        for loopback in ["127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1"] {
            assert_eq!(classify(ip(loopback)), AddressClass::Loopback, "{loopback}");
        }
        for public in ["1.1.1.1", "100.128.0.1", "2606:4700::1111"] {
            assert_eq!(classify(ip(public)), AddressClass::Public, "{public}");
        }
    }
}
