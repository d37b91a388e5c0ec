//! Which secret references Warden agrees to read. A provider key's value is sent to the
//! provider's `base_url`, which an admin chooses: a reference must therefore never reach a
//! secret Warden itself depends on.
//!
//! - **Warden's own secrets** (names under `warden/`: JWT signing keys, the credential
//!   pepper, the audit checkpoint key) are refused in every backend, from every source.
//! - **`env://`** is accepted only from the config file, and never for `WARDEN_*`, `AWS_*`,
//!   `AZURE_*`, `VAULT_*` or a variable a backend's `*_env` field names.
//! - **Through the Admin API** a reference must point into a configured backend and either
//!   be a name Warden wrote itself (`warden-pk-…` in the primary backend) or start with one
//!   of `[secrets] allowed_ref_prefixes`.

use super::SecretError;
use super::reference::SecretReference;

/// Environment variables that hold Warden's own settings and backend credentials.
pub const RESERVED_ENV_PREFIXES: &[&str] = &["WARDEN_", "AWS_", "AZURE_", "VAULT_"];

/// The rule names used in refusals (and so in audit rows).
pub const RULE_OWN_SECRET: &str =
    "names under warden/ are Warden's own secrets and cannot be used as provider keys";
pub const RULE_RESERVED_ENV: &str = "WARDEN_*, AWS_*, AZURE_* and VAULT_* variables and the variables named by a backend's *_env field hold Warden's own credentials";
pub const RULE_ENV_ADMIN: &str =
    "env:// references are accepted only in the config file, not through the Admin API";
pub const RULE_NOT_ALLOWED: &str = "not under [secrets] allowed_ref_prefixes (nor a warden-pk- name Warden wrote): add its prefix to the control plane's config";

fn first_segment_is_warden(path: &str) -> bool {
    path.split('/')
        .next()
        .is_some_and(|s| s.eq_ignore_ascii_case("warden"))
}

/// Why `reference` is refused from any source, if it is: a name of Warden's own secrets,
/// or a variable holding Warden's credentials (`credential_vars`: the variables the
/// backends' `*_env` fields name).
pub fn refusal(reference: &SecretReference, credential_vars: &[String]) -> Option<&'static str> {
    let own = match reference {
        SecretReference::File { name } => first_segment_is_warden(name),
        SecretReference::Vault { path, .. } => first_segment_is_warden(path),
        SecretReference::AwsSm { secret_id, .. } => {
            // An ARN names the secret after `:secret:`.
            let name = secret_id
                .strip_prefix("arn:")
                .and_then(|rest| rest.splitn(6, ':').nth(5))
                .unwrap_or(secret_id);
            first_segment_is_warden(name)
        }
        SecretReference::AzureKv { name, .. } => name.eq_ignore_ascii_case("warden"),
        SecretReference::Env { var } => {
            let upper = var.to_ascii_uppercase();
            if RESERVED_ENV_PREFIXES.iter().any(|p| upper.starts_with(p))
                || credential_vars.iter().any(|v| v == var)
            {
                return Some(RULE_RESERVED_ENV);
            }
            false
        }
    };
    own.then_some(RULE_OWN_SECRET)
}

/// The error for a refused reference. The reference is safe to show (it is a location).
pub fn refused(reference: &SecretReference, rule: &'static str) -> SecretError {
    SecretError::Refused {
        reference: reference.to_string(),
        rule,
    }
}

/// Checks a prefix of `[secrets] allowed_ref_prefixes`: a known scheme other than `env`,
/// with something after `://`.
pub fn check_prefix(prefix: &str) -> Result<(), String> {
    let Some((scheme, rest)) = prefix.split_once("://") else {
        return Err(format!(
            "`{prefix}`: expected vault://…, aws-sm://…, azure-kv://… or file://…"
        ));
    };
    match scheme {
        "vault" | "aws-sm" | "azure-kv" | "file" => {}
        "env" => return Err(format!("`{prefix}`: {RULE_ENV_ADMIN}")),
        _ => {
            return Err(format!(
                "`{prefix}`: expected vault://…, aws-sm://…, azure-kv://… or file://…"
            ));
        }
    }
    if rest.is_empty() {
        return Err(format!(
            "`{prefix}`: name a path or name prefix after {scheme}://, not a whole backend"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(text: &str) -> Option<&'static str> {
        refusal(
            &SecretReference::parse(text).unwrap(),
            &["E2E_VAULT_TOKEN".to_owned()],
        )
    }

    #[test]
    fn wardens_own_names_are_refused_in_every_backend() {
        for text in [
            "file://warden/credential-pepper",
            "file://warden/jwt/k123",
            "file://Warden/audit/checkpoint-key",
            "vault://secret/warden/jwt/k1#value",
            "vault://other/warden/credential-pepper",
            "aws-sm://warden/credential-pepper",
            "aws-sm://arn:aws:secretsmanager:us-east-1:123456789012:secret:warden/jwt/k1",
            "azure-kv://my-vault/warden",
        ] {
            assert_eq!(rule(text), Some(RULE_OWN_SECRET), "{text}");
        }
        for text in [
            "env://WARDEN_MASTER_KEY",
            "env://warden_master_key",
            "env://AWS_SECRET_ACCESS_KEY",
            "env://AZURE_CLIENT_SECRET",
            "env://VAULT_TOKEN",
            "env://E2E_VAULT_TOKEN",
        ] {
            assert_eq!(rule(text), Some(RULE_RESERVED_ENV), "{text}");
        }
        for text in [
            "file://warden-pk-openai-key_1",
            "file://providers/wardenish",
            "vault://secret/llm/warden#value",
            "aws-sm://llm/openai#api_key",
            "azure-kv://my-vault/warden-pk-x",
            "env://OPENAI_API_KEY",
        ] {
            assert_eq!(rule(text), None, "{text}");
        }
    }

    #[test]
    fn prefixes_are_checked() {
        assert!(check_prefix("vault://secret/llm/").is_ok());
        assert!(check_prefix("aws-sm://llm/").is_ok());
        assert!(
            check_prefix("env://OPENAI")
                .unwrap_err()
                .contains("config file")
        );
        assert!(check_prefix("vault://").is_err());
        assert!(check_prefix("secret/llm").is_err());
    }
}
