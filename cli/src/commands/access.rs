//! The access flags of `policy set` and `vkey create`: the IP allow-list and browser
//! origins of a virtual key, a JWT subject or the gateway, and — on the gateway (`policy
//! set --global`) — the rest of CORS ([`AccessArgs`]); and how `policy get` shows them
//! ([`access_fields`], [`access_json`]).

use clap::Args;
use serde_json::{Value, json};
use warden_proto::admin::v1 as pb;

use crate::output::Fields;

/// Who may use the target from where. Given any of these, the target's lists are replaced
/// as a whole (a list left out is emptied); its limits are left as they are unless limit
/// flags are given too.
#[derive(Debug, Clone, Default, Args)]
#[group(id = "access_flags", multiple = true)]
pub struct AccessArgs {
    /// Allow requests only from these networks: CIDRs or addresses, IPv4 or IPv6
    /// (repeat, or comma-separate) [default: any address].
    #[arg(long = "allow-ip", value_name = "CIDR", value_delimiter = ',')]
    pub allow_ip: Vec<String>,
    /// Browser origins (`https://app.example.com`): on the gateway (`--global`), the
    /// origins CORS lets call the API (`*` = every origin, a dangerous setting that is
    /// audited); on a virtual key or subject, the only origins its requests may carry
    /// [default: CORS off / any origin].
    #[arg(
        long = "allow-origin",
        visible_alias = "cors-origin",
        value_name = "ORIGIN",
        value_delimiter = ','
    )]
    pub allow_origin: Vec<String>,
    /// CORS methods a page may use (`--global` only) [default: GET, POST].
    #[arg(long = "cors-method", value_name = "METHOD", value_delimiter = ',')]
    pub cors_method: Vec<String>,
    /// CORS request headers a page may send (`--global` only) [default: authorization,
    /// content-type, x-api-key, anthropic-version, anthropic-beta].
    #[arg(long = "cors-header", value_name = "HEADER", value_delimiter = ',')]
    pub cors_header: Vec<String>,
    /// Response headers a page may read besides the CORS-safelisted ones (`--global` only),
    /// e.g. `x-request-id,x-ratelimit-remaining-requests`.
    #[arg(
        long = "cors-expose-header",
        value_name = "HEADER",
        value_delimiter = ','
    )]
    pub cors_expose_header: Vec<String>,
    /// How long browsers may cache a preflight answer, in seconds, at most 86400
    /// (`--global` only) [default: not sent].
    #[arg(long = "cors-max-age", value_name = "SECONDS")]
    pub cors_max_age: Option<u32>,
    /// Let pages send cookies and HTTP auth (`Access-Control-Allow-Credentials: true`;
    /// `--global` only; refused with the `*` origin).
    #[arg(long = "cors-allow-credentials")]
    pub cors_allow_credentials: bool,
    /// Remove every IP and origin list (and CORS) of the target.
    #[arg(long = "clear-access", conflicts_with_all = ["allow_ip", "allow_origin", "cors_method", "cors_header", "cors_expose_header", "cors_max_age", "cors_allow_credentials"])]
    pub clear_access: bool,
}

impl AccessArgs {
    /// The access policy to send, when any access flag was given.
    pub fn to_optional_access(&self) -> Option<pb::AccessPolicy> {
        let given = self.clear_access
            || !self.allow_ip.is_empty()
            || !self.allow_origin.is_empty()
            || !self.cors_method.is_empty()
            || !self.cors_header.is_empty()
            || !self.cors_expose_header.is_empty()
            || self.cors_max_age.is_some()
            || self.cors_allow_credentials;
        given.then(|| pb::AccessPolicy {
            allowed_ips: self.allow_ip.clone(),
            allowed_origins: self.allow_origin.clone(),
            cors_methods: self.cors_method.clone(),
            cors_headers: self.cors_header.clone(),
            cors_expose_headers: self.cors_expose_header.clone(),
            cors_max_age_seconds: self.cors_max_age.unwrap_or(0),
            cors_allow_credentials: self.cors_allow_credentials,
        })
    }
}

/// The access lines of `policy get`: only what is set.
pub fn access_fields(fields: &mut Fields, access: Option<&pb::AccessPolicy>) {
    let Some(a) = access else {
        return;
    };
    if !a.allowed_ips.is_empty() {
        fields.push("allowed ips", a.allowed_ips.join(", "));
    }
    if !a.allowed_origins.is_empty() {
        fields.push("allowed origins", a.allowed_origins.join(", "));
    }
    if !a.cors_methods.is_empty() {
        fields.push("cors methods", a.cors_methods.join(", "));
    }
    if !a.cors_headers.is_empty() {
        fields.push("cors headers", a.cors_headers.join(", "));
    }
    if !a.cors_expose_headers.is_empty() {
        fields.push("cors expose", a.cors_expose_headers.join(", "));
    }
    if a.cors_max_age_seconds > 0 {
        fields.push("cors max age", format!("{}s", a.cors_max_age_seconds));
    }
    if a.cors_allow_credentials {
        fields.push("cors credentials", "allowed".to_owned());
    }
}

/// The JSON view of an access policy, with the proto's field names.
pub fn access_json(access: Option<&pb::AccessPolicy>) -> Value {
    let a = access.cloned().unwrap_or_default();
    json!({
        "allowed_ips": a.allowed_ips, "allowed_origins": a.allowed_origins,
        "cors_methods": a.cors_methods, "cors_headers": a.cors_headers,
        "cors_expose_headers": a.cors_expose_headers,
        "cors_max_age_seconds": a.cors_max_age_seconds,
        "cors_allow_credentials": a.cors_allow_credentials,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::probe;

    fn access(args: &[&str]) -> Result<Option<pb::AccessPolicy>, clap::Error> {
        probe::flags::<AccessArgs>(args).map(|a| a.to_optional_access())
    }

    #[test]
    fn sends_access_only_when_a_flag_is_given() {
        assert_eq!(access(&[]).unwrap(), None);
        let a = access(&[
            "--allow-ip",
            "10.0.0.0/8,::1",
            "--cors-origin",
            "https://a.example",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(a.allowed_ips, ["10.0.0.0/8", "::1"]);
        assert_eq!(a.allowed_origins, ["https://a.example"]);
        let a = access(&["--clear-access"]).unwrap().unwrap();
        assert_eq!(a, pb::AccessPolicy::default());
        assert!(access(&["--clear-access", "--allow-ip", "::1"]).is_err());
        let a = access(&["--allow-origin", "*", "--cors-max-age", "600"])
            .unwrap()
            .unwrap();
        assert_eq!(
            (a.allowed_origins[0].as_str(), a.cors_max_age_seconds),
            ("*", 600)
        );
    }
}
