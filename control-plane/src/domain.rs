//! The control plane's plain domain types: what the store keeps and the services work on.
//! Proto types appear only in `grpc/`.

use std::net::IpAddr;

/// The API a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiFormat {
    OpenAi,
    Anthropic,
    /// The built-in offline provider of `wardenctl dev`.
    Echo,
}

impl ApiFormat {
    /// Parses `openai`, `anthropic` or `echo`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "openai" => Some(Self::OpenAi),
            "anthropic" => Some(Self::Anthropic),
            "echo" => Some(Self::Echo),
            _ => None,
        }
    }

    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OpenAi => "openai",
            Self::Anthropic => "anthropic",
            Self::Echo => "echo",
        }
    }
}

/// Where a provider or model was declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The control plane's config file (re-applied at every start).
    Config,
    /// The Admin API.
    Admin,
    /// Built in (the `echo` provider of dev mode).
    Builtin,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Config => "config",
            Self::Admin => "admin",
            Self::Builtin => "builtin",
        }
    }

    pub fn parse(s: &str) -> Self {
        match s {
            "config" => Self::Config,
            "builtin" => Self::Builtin,
            _ => Self::Admin,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Provider {
    pub name: String,
    pub format: ApiFormat,
    pub base_url: String,
    pub source: Source,
    pub created_at: i64,
    /// Each client brings its own upstream key; the provider has no stored keys.
    pub passthrough: bool,
    /// Top-level request parameters removed before sending to this provider.
    pub drop_params: Vec<String>,
    /// The provider's own CA bundle (PEM, certificates only): nodes verify its TLS with
    /// these roots instead of the public ones.
    pub ca_pem: Option<String>,
}

/// An upstream key's metadata; the value lives in the secret store under `secret_name`.
#[derive(Debug, Clone)]
pub struct ProviderKey {
    pub id: String,
    pub provider: String,
    /// The secret reference (`vault://…`, `file://…`, …) of the key's value.
    pub secret_name: String,
    pub fingerprint: String,
    pub created_at: i64,
    /// Set when quarantined by an admin or rejected by the provider.
    pub disabled_reason: Option<String>,
    pub disabled_at: Option<i64>,
    /// Bumped on re-enable so that nodes start a fresh shared health record.
    pub health_epoch: u64,
}

impl ProviderKey {
    /// The secret reference this key reads (`secret_name` holds it; keys stored before
    /// references existed hold a bare file-store name).
    pub fn parsed_reference(
        &self,
    ) -> Result<crate::secrets::reference::SecretReference, crate::secrets::SecretError> {
        crate::secrets::reference::SecretReference::parse(&crate::secrets::manager::canonical(
            &self.secret_name,
        ))
    }
}

#[derive(Debug, Clone)]
pub struct Model {
    pub alias: String,
    pub provider: String,
    pub upstream_model: String,
    pub source: Source,
    pub created_at: i64,
    /// Aliases tried in order when every key of this model's provider is unavailable.
    pub fallbacks: Vec<String>,
    /// Weight of this (first) deployment among the alias's deployments.
    pub weight: u32,
}

/// A further deployment of a model alias.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    pub alias: String,
    pub provider: String,
    pub upstream_model: String,
    pub weight: u32,
}

/// USD per million tokens of one model.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Price {
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
}

/// What a policy applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PolicyTarget {
    VirtualKey(String),
    Subject(String),
    Model(String),
    Global,
}

impl PolicyTarget {
    /// `(kind, id)` as stored.
    pub fn parts(&self) -> (&'static str, &str) {
        match self {
            Self::VirtualKey(id) => ("vkey", id),
            Self::Subject(s) => ("subject", s),
            Self::Model(m) => ("model", m),
            Self::Global => ("global", ""),
        }
    }

    pub fn from_parts(kind: &str, id: &str) -> Option<Self> {
        match kind {
            "vkey" => Some(Self::VirtualKey(id.to_owned())),
            "subject" => Some(Self::Subject(id.to_owned())),
            "model" => Some(Self::Model(id.to_owned())),
            "global" => Some(Self::Global),
            _ => None,
        }
    }

    /// The scope id nodes use for this target's shared counters.
    pub fn scope_id(&self) -> String {
        use warden_core::shared_keys::scope;
        match self {
            Self::VirtualKey(id) => scope::virtual_key(id),
            Self::Subject(s) => scope::subject(s),
            Self::Model(m) => scope::model(m),
            Self::Global => scope::GLOBAL.to_owned(),
        }
    }
}

impl std::fmt::Display for PolicyTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Global => f.write_str("global"),
            other => {
                let (kind, id) = other.parts();
                write!(f, "{kind}:{id}")
            }
        }
    }
}

/// Limits of one target; zero means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    pub rpm: u64,
    pub tpm: u64,
    pub max_parallel: u32,
    pub max_budget_micros: u64,
    pub budget_period_secs: u64,
    /// Ceiling on the completion tokens one request may ask for.
    pub max_tokens: u64,
}

impl Limits {
    pub fn is_unlimited(&self) -> bool {
        self.rpm == 0
            && self.tpm == 0
            && self.max_parallel == 0
            && self.max_budget_micros == 0
            && self.max_tokens == 0
    }
}

/// A stored policy.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyRecord {
    pub target: PolicyTarget,
    pub limits: Limits,
    pub source: Source,
    pub updated_at: i64,
}

/// Who may use a credential, or the gateway, from where (issue 14). Empty lists: no
/// restriction. On the global target `allowed_origins` are the CORS origins and the
/// `cors_*` fields the rest of CORS; on a virtual key or subject only the two lists count.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccessPolicy {
    pub allowed_ips: Vec<String>,
    pub allowed_origins: Vec<String>,
    pub cors_methods: Vec<String>,
    pub cors_headers: Vec<String>,
    pub cors_expose_headers: Vec<String>,
    pub cors_max_age_seconds: u32,
    pub cors_allow_credentials: bool,
}

impl AccessPolicy {
    /// Whether nothing is set (the row is deleted).
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }

    /// Whether the CORS origins include the explicit wildcard `*`.
    pub fn any_origin(&self) -> bool {
        self.allowed_origins
            .iter()
            .any(|o| o == warden_core::access::ANY_ORIGIN)
    }

    /// Checks and normalizes the lists for `target`: CIDRs, origins, CORS only on the
    /// global target, never a wildcard origin with credentials.
    pub fn validated(mut self, target: &PolicyTarget) -> Result<Self, String> {
        use warden_core::access;
        if matches!(target, PolicyTarget::Model(_)) {
            return Err(
                "access lists apply to a virtual key, a subject or global, not a model".into(),
            );
        }
        self.allowed_ips = access::parse_networks(&self.allowed_ips)?
            .iter()
            .map(ToString::to_string)
            .collect();
        self.allowed_origins = access::normalize_origins(&self.allowed_origins)?;
        let cors_set = !self.cors_methods.is_empty()
            || !self.cors_headers.is_empty()
            || !self.cors_expose_headers.is_empty()
            || self.cors_max_age_seconds > 0
            || self.cors_allow_credentials;
        if cors_set && target != &PolicyTarget::Global {
            return Err(
                "CORS methods, headers, max-age and credentials are gateway (global) settings"
                    .into(),
            );
        }
        if cors_set && self.allowed_origins.is_empty() {
            return Err("CORS settings need at least one allowed origin".into());
        }
        if self.cors_allow_credentials && self.any_origin() {
            return Err(
                "CORS credentials cannot be allowed for the wildcard origin `*`; list the origins"
                    .into(),
            );
        }
        let token = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
        };
        self.cors_methods = self
            .cors_methods
            .iter()
            .map(|m| m.trim().to_ascii_uppercase())
            .collect();
        for list in [&mut self.cors_headers, &mut self.cors_expose_headers] {
            *list = list.iter().map(|h| h.trim().to_ascii_lowercase()).collect();
        }
        if let Some(bad) = self
            .cors_methods
            .iter()
            .chain(&self.cors_headers)
            .chain(&self.cors_expose_headers)
            .find(|v| !token(v.as_str()))
        {
            return Err(format!("{bad:?} is not an HTTP method or header name"));
        }
        if self.cors_max_age_seconds > 86_400 {
            return Err("CORS max-age is at most 86400 seconds (one day)".into());
        }
        Ok(self)
    }
}

/// A stored access policy.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessRecord {
    pub target: PolicyTarget,
    pub access: AccessPolicy,
    pub source: Source,
    pub updated_at: i64,
}

/// Default budget period: 30 days.
pub const DEFAULT_BUDGET_PERIOD_SECS: u64 = 30 * 24 * 3600;

/// A JWT signing key's metadata; the private part lives in the secret store.
#[derive(Debug, Clone)]
pub struct SigningKey {
    pub kid: String,
    pub algorithm: String,
    pub secret_name: String,
    pub created_at: i64,
}

/// A client address or network blocked by an operator (`wardenctl ip block`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpBlockRecord {
    /// The normalised network: `192.0.2.7/32`, `2001:db8::/48`.
    pub cidr: String,
    pub reason: String,
    /// The admin who set it (`admin:<name>`, as audited).
    pub created_by: String,
    pub created_at: i64,
    /// Unix seconds; `None`: until unblocked.
    pub expires_at: Option<i64>,
}

/// An automatic block a node set after failed logins, as seen in Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutomaticIpBlock {
    /// The address (an IPv6 block is its /64's network address).
    pub addr: String,
    /// Unix seconds.
    pub expires_at: i64,
}

/// An issued JWT (the token itself is never stored).
#[derive(Debug, Clone)]
pub struct TokenRecord {
    pub jti: String,
    pub subject: String,
    pub scopes: Vec<String>,
    pub models: Vec<String>,
    pub kid: String,
    pub issued_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
}

/// Which client credentials a suspension refuses (`wardenctl credentials suspend`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SuspensionTarget {
    /// Every JWT whose `sub` is exactly this.
    Subject(String),
    /// Every JWT whose `sub` starts with this, and every virtual key whose id (`vk_…`) or
    /// owner starts with it.
    Prefix(String),
}

impl SuspensionTarget {
    /// `subject` or `prefix`, as stored.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Subject(_) => "subject",
            Self::Prefix(_) => "prefix",
        }
    }

    pub fn value(&self) -> &str {
        match self {
            Self::Subject(v) | Self::Prefix(v) => v,
        }
    }

    pub fn parse(kind: &str, value: String) -> Option<Self> {
        match kind {
            "subject" => Some(Self::Subject(value)),
            "prefix" => Some(Self::Prefix(value)),
            _ => None,
        }
    }
}

impl std::fmt::Display for SuspensionTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.kind(), self.value())
    }
}

/// A suspension in force, until `wardenctl credentials resume`.
#[derive(Debug, Clone)]
pub struct Suspension {
    pub target: SuspensionTarget,
    pub reason: String,
    pub created_by: String,
    pub created_at: i64,
}

/// The gateway-wide lockdown while it is on (`wardenctl lockdown`).
#[derive(Debug, Clone)]
pub struct Lockdown {
    pub reason: String,
    pub created_by: String,
    pub created_at: i64,
}

/// A virtual key (stored as its HMAC only).
#[derive(Debug, Clone)]
pub struct VirtualKeyRecord {
    pub id: String,
    pub hash: String,
    pub name: String,
    pub owner: String,
    pub scopes: Vec<String>,
    pub models: Vec<String>,
    pub created_at: i64,
    /// 0 = never.
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
    /// During a rotation's grace period: the replaced secret's hash and when it stops.
    pub previous_hash: Option<String>,
    pub previous_expires_at: i64,
}

/// Which table an opaque credential lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialTable {
    Admin,
    Node,
}

/// An admin or node credential (stored as its HMAC only).
#[derive(Debug, Clone)]
pub struct CredentialRecord {
    pub id: String,
    pub hash: String,
    pub name: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
    /// An admin credential's [`Role`] by name; `node` for a node credential.
    pub role: String,
    /// Unix seconds after which it is refused; `None` = never.
    pub expires_at: Option<i64>,
    /// SHA-256 (hex) of the SubjectPublicKeyInfo of the client certificate it is bound to:
    /// accepted only over a connection presenting a certificate of that key. `None`: unbound.
    pub cert_spki_sha256: Option<String>,
}

/// What an admin credential may do (the Admin API's table of RPCs names the role each RPC
/// needs). A JWT with the `admin` scope is `Admin`; one with `audit`, `Auditor` where the
/// audit log is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Everything.
    Admin,
    /// Models, deployments, policies (and usage) and client credentials without the
    /// `admin` or `audit` scope; no provider keys, node or admin credentials, audit log.
    Operator,
    /// Reads the audit log only.
    Auditor,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Operator => "operator",
            Self::Auditor => "auditor",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "admin" => Some(Self::Admin),
            "operator" => Some(Self::Operator),
            "auditor" => Some(Self::Auditor),
            _ => None,
        }
    }
}

/// A data-plane node as last seen.
#[derive(Debug, Clone)]
pub struct NodeRecord {
    pub node_id: String,
    pub credential_id: String,
    pub acked_version: u64,
    pub last_seen: i64,
    pub software_version: String,
    /// The control-plane replica its watch stream is attached to ('' when none).
    pub replica_id: String,
}

/// One audit row. Never holds a secret or a body.
#[derive(Debug, Clone)]
pub struct AuditRecord {
    pub id: String,
    pub timestamp_ms: i64,
    pub action: String,
    pub actor: String,
    pub subject: String,
    pub result: String,
    pub detail: String,
}

/// Names of providers, models and credentials: 1–64 characters of `[A-Za-z0-9._:/-]`.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err("must be 1 to 64 characters".into());
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '/'))
    {
        return Err("may contain only letters, digits and . _ - : /".into());
    }
    Ok(())
}

/// A provider base URL: `https://…`, or `http://` to a loopback host only.
pub fn validate_base_url(url: &str) -> Result<(), String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| "must be an absolute http(s) URL".to_owned())?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.is_empty() || authority.contains('@') {
        return Err("must name a host (and no credentials)".into());
    }
    let host = if let Some(stripped) = authority.strip_prefix('[') {
        stripped.split(']').next().unwrap_or("")
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    refuse_forbidden_literal(host, authority.starts_with('['))?;
    match scheme {
        "https" => Ok(()),
        "http" => {
            let loopback =
                host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
            if loopback {
                Ok(())
            } else {
                Err("must use https:// (plain http is allowed only to loopback)".into())
            }
        }
        _ => Err("must use https://".into()),
    }
}

/// A base URL's host that is a literal address no node may ever contact (link-local, cloud
/// metadata: [`warden_core::address_class`]) is refused at once; a private or loopback one
/// is accepted, each node's egress policy decides. IPv4 is accepted only as four decimal
/// numbers (URL parsers read `2852039166` or `0xa9fea9fe` as 169.254.169.254).
fn refuse_forbidden_literal(host: &str, bracketed: bool) -> Result<(), String> {
    use warden_core::address_class::{AddressClass, classify};
    let ip = match host.parse::<IpAddr>() {
        Ok(ip) => ip,
        Err(_) if bracketed => return Err(format!("[{host}] is not an IPv6 address")),
        Err(_) => {
            let last = host.trim_end_matches('.').rsplit('.').next().unwrap_or("");
            let numeric = !last.is_empty()
                && (last.chars().all(|c| c.is_ascii_digit())
                    || last
                        .strip_prefix("0x")
                        .or_else(|| last.strip_prefix("0X"))
                        .is_some_and(|h| h.chars().all(|c| c.is_ascii_hexdigit())));
            if numeric {
                return Err(format!(
                    "{host} is not a host name; write an IPv4 address as four decimal numbers"
                ));
            }
            return Ok(());
        }
    };
    if classify(ip) == AddressClass::Forbidden {
        return Err(format!(
            "{ip} is a link-local, cloud-metadata or reserved address: no node sends requests (or provider keys) there"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_rules() {
        assert!(validate_base_url("https://api.openai.com/v1").is_ok());
        assert!(validate_base_url("http://127.0.0.1:9000/v1").is_ok());
        assert!(validate_base_url("http://[::1]:9000/v1").is_ok());
        assert!(validate_base_url("http://localhost/v1").is_ok());
        assert!(validate_base_url("http://api.openai.com/v1").is_err());
        assert!(validate_base_url("http://127.0.0.1.evil.com/v1").is_err());
        assert!(validate_base_url("https://user:pw@host/v1").is_err());
        assert!(validate_base_url("ftp://host").is_err());
        assert!(validate_base_url("api.openai.com").is_err());
        // Link-local and metadata literals, however written; private ones are the node's.
        for refused in [
            "https://169.254.169.254/v1",
            "http://169.254.169.254/v1",
            "https://[fd00:ec2::254]/v1",
            "https://[fe80::1]/v1",
            "https://[::ffff:169.254.169.254]/v1",
            "https://100.100.100.200/v1",
            "https://2852039166/v1",
            "https://0xa9fea9fe/v1",
            "https://169.254.43518/v1",
            "https://0.0.0.0/v1",
        ] {
            assert!(validate_base_url(refused).is_err(), "{refused}");
        }
        assert!(validate_base_url("https://10.0.0.5/v1").is_ok());
        assert!(validate_base_url("https://[fd12::1]:8443/v1").is_ok());
        assert!(validate_base_url("https://llm.example.com./v1").is_ok());
    }

    #[test]
    fn name_rules() {
        assert!(validate_name("gpt-4o").is_ok());
        assert!(validate_name("openai:gpt-4o").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name("a b").is_err());
        assert!(validate_name(&"x".repeat(65)).is_err());
    }
}

/// A stored DLP rule ([`warden_core::dlp`]).
#[derive(Debug, Clone, PartialEq)]
pub struct DlpRuleRecord {
    pub spec: warden_core::dlp::RuleSpec,
    pub source: Source,
    pub updated_at: i64,
}
