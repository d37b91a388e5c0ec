//! Secret references: where a secret lives, written in configuration instead of its value.
//!
//! | reference | meaning |
//! |---|---|
//! | `vault://mount/path#field` | Vault KV v2 secret `path` in `mount`; `field` of its data (default: the backend's configured field, `value`) |
//! | `aws-sm://name-or-arn#field` | AWS Secrets Manager; without `#field` the whole `SecretString`, with it that key of the JSON object |
//! | `azure-kv://vault-name/secret-name[/version]` | Azure Key Vault secret, latest version unless one is named |
//! | `file://name` | the encrypted file store |
//! | `env://VAR` | environment variable `VAR`: plaintext, or an `enc:…` value encrypted under the master key with the **variable name** (`VAR`, without `env://`) bound as associated data |
//!
//! Parsing is strict (a character set per part, no empty segments, no `.`/`..`) so a
//! reference cannot smuggle a different URL path into a backend request. Error messages
//! quote the reference only once it has a known scheme: a value pasted where a reference
//! belongs (`sk-…`) is never echoed back.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use secrecy::SecretString;

use super::cipher::{MasterKey, is_encrypted};
use super::{SecretError, SecretStore};

/// The backend kind a reference points into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    Vault,
    AwsSm,
    AzureKv,
    File,
    Env,
}

impl Scheme {
    /// The scheme as written before `://`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Vault => "vault",
            Self::AwsSm => "aws-sm",
            Self::AzureKv => "azure-kv",
            Self::File => "file",
            Self::Env => "env",
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed, validated secret reference. `Display` writes the canonical form, which
/// parses back to the same value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SecretReference {
    Vault {
        mount: String,
        path: String,
        field: Option<String>,
    },
    AwsSm {
        /// A secret name or a full ARN.
        secret_id: String,
        field: Option<String>,
    },
    AzureKv {
        vault: String,
        name: String,
        version: Option<String>,
    },
    File {
        name: String,
    },
    Env {
        var: String,
    },
}

impl SecretReference {
    /// Parses and validates a reference.
    pub fn parse(text: &str) -> Result<Self, SecretError> {
        let Some((scheme, rest)) = text.split_once("://") else {
            return Err(bad(
                &redacted(text),
                "expected scheme://… (vault, aws-sm, azure-kv, file or env)",
            ));
        };
        let fail = |reason: &str| bad(text, reason);
        match scheme {
            "vault" => {
                let (location, field) = split_field(rest, text)?;
                let (mount, path) = location
                    .split_once('/')
                    .ok_or_else(|| fail("expected vault://mount/path#field"))?;
                check_segment(mount, is_path_char).map_err(|r| fail(&format!("mount {r}")))?;
                check_path(path, is_path_char).map_err(|r| fail(&format!("path {r}")))?;
                Ok(Self::Vault {
                    mount: mount.to_owned(),
                    path: path.to_owned(),
                    field,
                })
            }
            "aws-sm" => {
                let (secret_id, field) = split_field(rest, text)?;
                check_aws_id(secret_id).map_err(|r| fail(&r))?;
                Ok(Self::AwsSm {
                    secret_id: secret_id.to_owned(),
                    field,
                })
            }
            "azure-kv" => {
                let mut parts = rest.split('/');
                let (Some(vault), Some(name)) = (parts.next(), parts.next()) else {
                    return Err(fail("expected azure-kv://vault-name/secret-name[/version]"));
                };
                let version = parts.next();
                if parts.next().is_some() {
                    return Err(fail("expected azure-kv://vault-name/secret-name[/version]"));
                }
                check_azure_vault_name(vault).map_err(|r| fail(&r))?;
                check_azure_secret_name(name).map_err(|r| fail(&r))?;
                if let Some(v) = version {
                    check_azure_version(v).map_err(|r| fail(&r))?;
                }
                Ok(Self::AzureKv {
                    vault: vault.to_owned(),
                    name: name.to_owned(),
                    version: version.map(str::to_owned),
                })
            }
            "file" => {
                check_path(rest, is_file_char).map_err(|r| fail(&format!("name {r}")))?;
                Ok(Self::File {
                    name: rest.to_owned(),
                })
            }
            "env" => {
                check_env_var(rest).map_err(|r| fail(&r))?;
                Ok(Self::Env {
                    var: rest.to_owned(),
                })
            }
            _ => Err(bad(
                &redacted(text),
                "unknown scheme (expected vault, aws-sm, azure-kv, file or env)",
            )),
        }
    }

    /// The backend kind.
    pub fn scheme(&self) -> Scheme {
        match self {
            Self::Vault { .. } => Scheme::Vault,
            Self::AwsSm { .. } => Scheme::AwsSm,
            Self::AzureKv { .. } => Scheme::AzureKv,
            Self::File { .. } => Scheme::File,
            Self::Env { .. } => Scheme::Env,
        }
    }

    /// The name under which the store of this scheme addresses the secret: everything after
    /// `scheme://`, except that Vault names are relative to a mount (`path#field`) and Azure
    /// names relative to a vault (`secret-name[/version]`); see
    /// [`super::config::SecretResolver`] for references into another mount or vault.
    pub fn store_name(&self) -> String {
        match self {
            Self::Vault { path, field, .. } => with_field(path, field.as_deref()),
            Self::AwsSm { secret_id, field } => with_field(secret_id, field.as_deref()),
            Self::AzureKv { name, version, .. } => match version {
                Some(v) => format!("{name}/{v}"),
                None => name.clone(),
            },
            Self::File { name } => name.clone(),
            Self::Env { var } => var.clone(),
        }
    }
}

impl FromStr for SecretReference {
    type Err = SecretError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for SecretReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Vault { mount, .. } => write!(f, "vault://{mount}/{}", self.store_name()),
            Self::AzureKv { vault, .. } => write!(f, "azure-kv://{vault}/{}", self.store_name()),
            other => write!(f, "{}://{}", other.scheme(), other.store_name()),
        }
    }
}

fn with_field(location: &str, field: Option<&str>) -> String {
    match field {
        Some(f) => format!("{location}#{f}"),
        None => location.to_owned(),
    }
}

fn bad(reference: &str, reason: &str) -> SecretError {
    SecretError::BadReference {
        reference: reference.to_owned(),
        reason: reason.to_owned(),
    }
}

/// Stands in for text that is not recognisably a reference (it may be a pasted value).
fn redacted(text: &str) -> String {
    format!("<{} characters, not shown>", text.chars().count())
}

/// Splits `location#field`; the field, when present, must be non-empty.
pub(crate) fn split_field<'a>(
    rest: &'a str,
    text: &str,
) -> Result<(&'a str, Option<String>), SecretError> {
    match rest.split_once('#') {
        None => Ok((rest, None)),
        Some((location, field)) => {
            if field.is_empty() || field.len() > 256 {
                return Err(bad(text, "field after # must be 1-256 characters"));
            }
            if !field.chars().all(is_field_char) {
                return Err(bad(
                    text,
                    "field may contain only letters, digits and - _ . @ + = / :",
                ));
            }
            Ok((location, Some(field.to_owned())))
        }
    }
}

fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@' | '+' | '=')
}

fn is_file_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@' | '+' | '=' | ':')
}

fn is_field_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@' | '+' | '=' | '/' | ':')
}

fn check_segment(segment: &str, allowed: fn(char) -> bool) -> Result<(), String> {
    if segment.is_empty() {
        return Err("has an empty segment".into());
    }
    if segment == "." || segment == ".." {
        return Err("may not contain . or .. segments".into());
    }
    if !segment.chars().all(allowed) {
        return Err("may contain only letters, digits and - _ . @ + =".into());
    }
    Ok(())
}

/// A `/`-separated path of at most 512 characters whose segments pass [`check_segment`].
pub(crate) fn check_path(path: &str, allowed: fn(char) -> bool) -> Result<(), String> {
    if path.is_empty() {
        return Err("is empty".into());
    }
    if path.len() > 512 {
        return Err("is longer than 512 characters".into());
    }
    path.split('/').try_for_each(|s| check_segment(s, allowed))
}

pub(crate) fn check_vault_path(path: &str) -> Result<(), String> {
    check_path(path, is_path_char)
}

/// Secrets Manager names: 1-512 of `A-Za-z0-9/_+=.@-`; or an ARN
/// `arn:PARTITION:secretsmanager:REGION:ACCOUNT:secret:NAME`.
pub(crate) fn check_aws_id(id: &str) -> Result<(), String> {
    let name = if let Some(rest) = id.strip_prefix("arn:") {
        let parts: Vec<&str> = rest.splitn(6, ':').collect();
        let ok = parts.len() == 6
            && !parts[0].is_empty()
            && parts[1] == "secretsmanager"
            && !parts[2].is_empty()
            && parts[3].len() == 12
            && parts[3].chars().all(|c| c.is_ascii_digit())
            && parts[4] == "secret";
        if !ok {
            return Err(
                "ARN must be arn:PARTITION:secretsmanager:REGION:ACCOUNT:secret:NAME".into(),
            );
        }
        if !parts[0..3]
            .iter()
            .all(|p| p.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        {
            return Err("ARN partition and region may contain only letters, digits and -".into());
        }
        parts[5]
    } else {
        id
    };
    if name.is_empty() || name.len() > 512 {
        return Err("secret name must be 1-512 characters".into());
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '+' | '=' | '.' | '@' | '-'))
    {
        return Err("secret name may contain only letters, digits and / _ + = . @ -".into());
    }
    Ok(())
}

/// Key Vault names: 3-24 characters, letters, digits and `-`, starting with a letter, not
/// ending with `-`, no `--`.
pub(crate) fn check_azure_vault_name(vault: &str) -> Result<(), String> {
    let ok = (3..=24).contains(&vault.len())
        && vault.starts_with(|c: char| c.is_ascii_alphabetic())
        && !vault.ends_with('-')
        && !vault.contains("--")
        && vault.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(
            "vault name must be 3-24 letters, digits and single hyphens, starting with a letter"
                .into(),
        )
    }
}

/// Key Vault secret names: 1-127 letters, digits and `-`.
pub(crate) fn check_azure_secret_name(name: &str) -> Result<(), String> {
    if (1..=127).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        Ok(())
    } else {
        Err("secret name must be 1-127 letters, digits and hyphens".into())
    }
}

/// Key Vault versions: 32 hex digits.
pub(crate) fn check_azure_version(version: &str) -> Result<(), String> {
    if version.len() == 32 && version.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err("version must be 32 hexadecimal digits".into())
    }
}

fn check_env_var(var: &str) -> Result<(), String> {
    let ok = var.len() <= 256
        && var.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err("variable name must be letters, digits and _, not starting with a digit".into())
    }
}

/// Reads `env://VAR` from `env`. A value starting with `enc:v2:` (or `enc:v1:`) is
/// decrypted with `master`, the variable name (`VAR`) bound as associated data — `warden-cp encrypt-value
/// --name VAR` makes one; anything else is taken as the plaintext value.
pub fn resolve_env(
    var: &str,
    env: &HashMap<String, String>,
    master: Option<&MasterKey>,
) -> Result<SecretString, SecretError> {
    let reference = format!("env://{var}");
    let value = env
        .get(var)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| SecretError::NotFound {
            reference: reference.clone(),
        })?;
    if !is_encrypted(value) {
        return Ok(SecretString::from(value.clone()));
    }
    let Some(master) = master else {
        return Err(SecretError::Decrypt { reference });
    };
    let plain = master
        .decrypt(var, value)
        .map_err(|e| SecretError::from_cipher(reference.clone(), e))?;
    let text = std::str::from_utf8(&plain).map_err(|_| SecretError::Decrypt { reference })?;
    Ok(SecretString::from(text))
}

/// `env://VAR` as a read-only [`SecretStore`] over an environment captured at start-up
/// (names are variable names). Writes and deletes are refused: the environment is not a
/// place Warden writes to.
pub struct EnvSecretStore {
    env: HashMap<String, String>,
    master: Option<Arc<MasterKey>>,
}

impl fmt::Debug for EnvSecretStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnvSecretStore")
            .field("variables", &self.env.len())
            .finish_non_exhaustive()
    }
}

impl EnvSecretStore {
    /// A store reading `env`; `master` decrypts `enc:…` values.
    pub fn new(env: HashMap<String, String>, master: Option<Arc<MasterKey>>) -> Self {
        Self { env, master }
    }
}

#[async_trait::async_trait]
impl SecretStore for EnvSecretStore {
    async fn get(&self, name: &str) -> Result<SecretString, SecretError> {
        check_env_var(name).map_err(|r| bad(&self.reference(name), &r))?;
        resolve_env(name, &self.env, self.master.as_deref())
    }

    async fn put(&self, name: &str, _value: &SecretString) -> Result<(), SecretError> {
        Err(SecretError::Backend {
            reference: self.reference(name),
            reason: "environment secrets are read-only".into(),
        })
    }

    async fn delete(&self, name: &str) -> Result<(), SecretError> {
        Err(SecretError::Backend {
            reference: self.reference(name),
            reason: "environment secrets are read-only".into(),
        })
    }

    fn reference(&self, name: &str) -> String {
        format!("env://{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::{ExposeSecret as _, SecretBox};

    fn parse(s: &str) -> SecretReference {
        SecretReference::parse(s).unwrap()
    }

    fn reason(s: &str) -> String {
        match SecretReference::parse(s) {
            Err(SecretError::BadReference { reference, reason }) => {
                format!("{reference}: {reason}")
            }
            other => panic!("{s}: expected BadReference, got {other:?}"),
        }
    }

    #[test]
    fn parses_every_scheme_and_round_trips() {
        let cases = [
            (
                "vault://secret/llm/openai#api_key",
                SecretReference::Vault {
                    mount: "secret".into(),
                    path: "llm/openai".into(),
                    field: Some("api_key".into()),
                },
            ),
            (
                "vault://kv/a",
                SecretReference::Vault {
                    mount: "kv".into(),
                    path: "a".into(),
                    field: None,
                },
            ),
            (
                "aws-sm://prod/llm/openai",
                SecretReference::AwsSm {
                    secret_id: "prod/llm/openai".into(),
                    field: None,
                },
            ),
            (
                "aws-sm://arn:aws:secretsmanager:eu-west-1:123456789012:secret:llm-AbCdEf#key",
                SecretReference::AwsSm {
                    secret_id: "arn:aws:secretsmanager:eu-west-1:123456789012:secret:llm-AbCdEf"
                        .into(),
                    field: Some("key".into()),
                },
            ),
            (
                "azure-kv://my-vault/openai-key",
                SecretReference::AzureKv {
                    vault: "my-vault".into(),
                    name: "openai-key".into(),
                    version: None,
                },
            ),
            (
                "azure-kv://my-vault/openai-key/0123456789abcdef0123456789abcdef",
                SecretReference::AzureKv {
                    vault: "my-vault".into(),
                    name: "openai-key".into(),
                    version: Some("0123456789abcdef0123456789abcdef".into()),
                },
            ),
            (
                "file://providers/openai/k1",
                SecretReference::File {
                    name: "providers/openai/k1".into(),
                },
            ),
            (
                "env://OPENAI_API_KEY",
                SecretReference::Env {
                    var: "OPENAI_API_KEY".into(),
                },
            ),
        ];
        for (text, want) in cases {
            let got = parse(text);
            assert_eq!(got, want, "{text}");
            assert_eq!(got.to_string(), text);
            assert_eq!(parse(&got.to_string()), got);
        }
        assert_eq!(
            parse("vault://secret/llm/openai#k").store_name(),
            "llm/openai#k"
        );
        assert_eq!(parse("azure-kv://my-vault/n").store_name(), "n");
        assert_eq!(parse("aws-sm://a#b").scheme(), Scheme::AwsSm);
    }

    #[test]
    fn rejects_malformed_references_naming_them() {
        for (text, want) in [
            ("vault://secret", "expected vault://mount/path#field"),
            ("vault://secret/", "path is empty"),
            ("vault://secret/a//b", "path has an empty segment"),
            ("vault://secret/../sys/x", "may not contain . or .."),
            ("vault:///a", "mount has an empty segment"),
            ("vault://secret/a?x=1", "may contain only"),
            ("vault://secret/a#", "field after # must be"),
            ("vault://secret/a#b#c", "field may contain only"),
            ("aws-sm://", "secret name must be 1-512"),
            ("aws-sm://a b", "may contain only"),
            ("aws-sm://arn:aws:s3:::bucket", "ARN must be"),
            ("azure-kv://my-vault", "expected azure-kv://"),
            ("azure-kv://v/n", "vault name must be"),
            ("azure-kv://my-vault/bad_name", "secret name must be"),
            ("azure-kv://my-vault/n/123", "version must be 32"),
            (
                "azure-kv://my-vault/n/0123456789abcdef0123456789abcdef/x",
                "expected azure-kv://",
            ),
            ("file://", "name is empty"),
            ("file://a/../b", "may not contain"),
            ("env://1ABC", "variable name must be"),
            ("env://A-B", "variable name must be"),
        ] {
            let got = reason(text);
            assert!(got.starts_with(text), "{got} does not name {text}");
            assert!(got.contains(want), "{text}: {got} lacks {want}");
        }
    }

    #[test]
    fn text_without_a_known_scheme_is_never_echoed() {
        for text in [
            "sk-canary-0123456789",
            "https://sk-canary@host",
            "sk-canary://x",
        ] {
            let got = reason(text);
            assert!(!got.contains("canary"), "{got}");
            assert!(got.contains("not shown"), "{got}");
        }
    }

    fn master() -> MasterKey {
        let b64 = MasterKey::generate_base64();
        MasterKey::from_base64(&SecretBox::from(b64.as_str())).unwrap()
    }

    #[test]
    fn env_values_may_be_plain_or_encrypted_under_the_variable_name() {
        let k = master();
        let sealed = k.encrypt("OPENAI_API_KEY", b"sk-canary-env").unwrap();
        let env = HashMap::from([
            ("OPENAI_API_KEY".to_owned(), sealed.clone()),
            ("PLAIN".to_owned(), "sk-plain".to_owned()),
            ("MOVED".to_owned(), sealed),
            ("EMPTY".to_owned(), String::new()),
        ]);
        let v = resolve_env("OPENAI_API_KEY", &env, Some(&k)).unwrap();
        assert_eq!(v.expose_secret(), "sk-canary-env");
        assert_eq!(
            resolve_env("PLAIN", &env, None).unwrap().expose_secret(),
            "sk-plain"
        );
        // A ciphertext copied to another variable does not decrypt (name bound as AAD).
        let err = resolve_env("MOVED", &env, Some(&k)).unwrap_err();
        assert!(
            matches!(err, SecretError::Decrypt { ref reference } if reference == "env://MOVED")
        );
        assert!(matches!(
            resolve_env("OPENAI_API_KEY", &env, Some(&master())),
            Err(SecretError::UnknownMasterKey { ref kid, .. }) if kid == k.kid()
        ));
        assert!(matches!(
            resolve_env("OPENAI_API_KEY", &env, None),
            Err(SecretError::Decrypt { .. })
        ));
        for missing in ["NOPE", "EMPTY"] {
            let err = resolve_env(missing, &env, Some(&k)).unwrap_err();
            assert_eq!(err.to_string(), format!("secret env://{missing} not found"));
        }
    }

    #[tokio::test]
    async fn env_store_is_read_only() {
        let env = HashMap::from([("A".to_owned(), "sk-canary".to_owned())]);
        let store = EnvSecretStore::new(env, None);
        let (v, version) = store.get_versioned("A").await.unwrap();
        assert_eq!(v.expose_secret(), "sk-canary");
        assert!(version.starts_with("sha256:"));
        assert!(store.put("A", &SecretString::from("x")).await.is_err());
        assert!(!format!("{store:?}").contains("canary"));
    }
}
