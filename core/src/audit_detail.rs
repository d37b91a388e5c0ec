//! The `detail` of an audit event: `key=value` pairs separated by spaces, one schema for
//! both planes. Values with a space, `"`, `=` or `\` (or empty ones) are quoted, with `"` and
//! `\` escaped, so [`parse`] gives back exactly what [`Detail`] wrote; exports (JSON, OCSF,
//! CEF, syslog) and the `AuditStream` API hand the pairs out as structured attributes.
//!
//! Keys in use (a key is present only when it applies):
//!
//! | key | meaning |
//! |---|---|
//! | `request_id` | the node's `x-request-id` |
//! | `endpoint` | API path (`/v1/chat/completions`, …) |
//! | `client_ip` | caller address (masked to /24 or /48 when configured) |
//! | `user_agent` | caller's `User-Agent` (truncated to 200 characters) |
//! | `credential` | the credential used, obfuscated (`vk_1234****cdef`, `tok-…`) |
//! | `provider`, `model_served`, `fallback` | where the request went |
//! | `upstream_key_fp` | fingerprint of the upstream key used (never the key) |
//! | `tokens_in`, `tokens_out`, `cost_usd` | usage as billed |
//! | `latency_ms`, `status` | timing and HTTP status |
//! | `error`, `reason` | why something failed |
//! | `subject`, `scopes`, `models`, `ttl_s`, `expires_at`, `kid` | what `token.issue` granted |
//! | `name`, `owner`, `role` | the name (and owner, role) of a created credential |
//! | `rpc` | the Admin RPC of an `admin.read` row |
//!
//! Free text from before this schema parses as `message`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Builds a detail string pair by pair.
#[derive(Debug, Default, Clone)]
pub struct Detail(String);

impl Detail {
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty detail with room for `bytes` (a request's detail is some 300 bytes).
    pub fn with_capacity(bytes: usize) -> Self {
        Self(String::with_capacity(bytes))
    }

    /// Appends `key=value` (quoted when needed). Keys are `[a-z0-9_]`.
    #[must_use]
    pub fn with(mut self, key: &str, value: impl std::fmt::Display) -> Self {
        self.push(key, value);
        self
    }

    /// Appends `key=value` when `value` is `Some`.
    #[must_use]
    pub fn with_opt<T: std::fmt::Display>(self, key: &str, value: Option<T>) -> Self {
        match value {
            Some(v) => self.with(key, v),
            None => self,
        }
    }

    pub fn push(&mut self, key: &str, value: impl std::fmt::Display) {
        debug_assert!(
            !key.is_empty()
                && key
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        );
        if !self.0.is_empty() {
            self.0.push(' ');
        }
        self.0.push_str(key);
        self.0.push('=');
        // Written in place; taken out and quoted only when it needs quoting.
        let start = self.0.len();
        let _ = write!(self.0, "{value}");
        let plain = self.0.len() > start
            && !self.0[start..]
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '=' | '\\'));
        if plain {
            return;
        }
        let value = self.0.split_off(start);
        self.0.push('"');
        for c in value.chars() {
            match c {
                '"' => self.0.push_str("\\\""),
                '\\' => self.0.push_str("\\\\"),
                '\n' => self.0.push_str("\\n"),
                '\r' => self.0.push_str("\\r"),
                c if c.is_control() => {
                    let _ = write!(self.0, "\\u{{{:x}}}", u32::from(c));
                }
                c => self.0.push(c),
            }
        }
        self.0.push('"');
    }

    pub fn build(self) -> String {
        self.0
    }
}

/// Parses a detail string into its pairs. Text that is not `key=value` pairs (older free
/// text) comes back as one `message` attribute.
pub fn parse(detail: &str) -> BTreeMap<String, String> {
    parse_pairs(detail).unwrap_or_else(|| {
        let mut map = BTreeMap::new();
        if !detail.trim().is_empty() {
            map.insert("message".to_owned(), detail.to_owned());
        }
        map
    })
}

fn parse_pairs(detail: &str) -> Option<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    let mut chars = detail.chars().peekable();
    loop {
        while chars.peek() == Some(&' ') {
            chars.next();
        }
        if chars.peek().is_none() {
            return Some(map);
        }
        let mut key = String::new();
        loop {
            match chars.next()? {
                '=' => break,
                c if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' => key.push(c),
                _ => return None,
            }
        }
        if key.is_empty() {
            return None;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next()? {
                    '"' => break,
                    '\\' => match chars.next()? {
                        'n' => value.push('\n'),
                        'r' => value.push('\r'),
                        'u' => {
                            if chars.next()? != '{' {
                                return None;
                            }
                            let mut hex = String::new();
                            loop {
                                match chars.next()? {
                                    '}' => break,
                                    c => hex.push(c),
                                }
                            }
                            value.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                        }
                        c => value.push(c),
                    },
                    c => value.push(c),
                }
            }
            if !matches!(chars.peek(), None | Some(' ')) {
                return None;
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ' ' {
                    break;
                }
                if matches!(c, '"' | '=') {
                    return None;
                }
                value.push(c);
                chars.next();
            }
        }
        map.insert(key, value);
    }
}

/// A client address as audited: masked to its /24 (IPv4) or /48 (IPv6) network when
/// `mask` is set, so the log shows where a request came from without the exact host.
pub fn client_ip(addr: std::net::IpAddr, mask: bool) -> String {
    use std::net::IpAddr;
    if !mask {
        return addr.to_string();
    }
    match addr {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.0/24")
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return client_ip(IpAddr::V4(v4), true);
            }
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_awkward_values() {
        let d = Detail::new()
            .with("request_id", "req_1")
            .with("user_agent", "python-openai/1.2 (x=\"y\") \\ end")
            .with("empty", "")
            .with("error", "line one\nline two\u{7}")
            .with("unicode", "Zürich ☃")
            .with_opt("absent", None::<&str>)
            .with("tokens_in", 12)
            .build();
        let m = parse(&d);
        assert_eq!(m["request_id"], "req_1");
        assert_eq!(m["user_agent"], "python-openai/1.2 (x=\"y\") \\ end");
        assert_eq!(m["empty"], "");
        assert_eq!(m["error"], "line one\nline two\u{7}");
        assert_eq!(m["unicode"], "Zürich ☃");
        assert_eq!(m["tokens_in"], "12");
        assert!(!m.contains_key("absent"));
        assert!(!d.contains('\n'), "one line: {d}");
    }

    #[test]
    fn control_characters_are_never_written_raw() {
        let d = Detail::new()
            .with("model", "a\u{1b}[2Jb")
            .with("owner", "x\u{9b}y")
            .build();
        assert!(!d.chars().any(char::is_control), "{d:?}");
        let m = parse(&d);
        assert_eq!(m["model"], "a\u{1b}[2Jb");
        assert_eq!(m["owner"], "x\u{9b}y");
    }

    #[test]
    fn free_text_is_a_message() {
        assert_eq!(
            parse("status 401: invalid key")["message"],
            "status 401: invalid key"
        );
        assert_eq!(parse("fingerprint a -> b")["message"], "fingerprint a -> b");
        assert!(parse("").is_empty());
        assert_eq!(parse("a=\"unterminated")["message"], "a=\"unterminated");
    }

    #[test]
    fn masks_client_addresses() {
        let v4: std::net::IpAddr = "203.0.113.77".parse().unwrap();
        assert_eq!(client_ip(v4, false), "203.0.113.77");
        assert_eq!(client_ip(v4, true), "203.0.113.0/24");
        let v6: std::net::IpAddr = "2001:db8:abcd:12::1".parse().unwrap();
        assert_eq!(client_ip(v6, true), "2001:db8:abcd::/48");
        let mapped: std::net::IpAddr = "::ffff:198.51.100.9".parse().unwrap();
        assert_eq!(client_ip(mapped, true), "198.51.100.0/24");
    }
}
