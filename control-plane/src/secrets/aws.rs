//! AWS Secrets Manager secret store, over the official SDK (hyper 1 + rustls + aws-lc).
//!
//! Names are `name-or-arn[#field]` (`aws-sm://name-or-arn#field`): without `#field` the
//! whole `SecretString`; with it, that key of the JSON object the secret holds.
//! `get_versioned` returns the `VersionId`. `put` stores a new version with
//! `PutSecretValue` (for `#field`, the field is merged into the current JSON object) and
//! creates the secret when it does not exist; `delete` deletes it without a recovery window.
//!
//! Credentials come from the SDK's default provider chain (environment, profile, web
//! identity, ECS, IMDS) unless [`AwsOptions::credentials`] is given (tests); region and
//! endpoint can be overridden. Every call has an operation timeout (default 5 s).

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::config::{Credentials, Region};
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::Value;

use super::reference::{check_aws_id, split_field};
use super::{DEFAULT_TIMEOUT, SecretError, SecretStore};

/// Connection options; built from [`super::config::SecretBackendConfig::Aws`].
#[derive(Clone)]
pub struct AwsOptions {
    /// Region; when absent, the SDK's region chain (`AWS_REGION`, profile, IMDS).
    pub region: Option<String>,
    /// Endpoint override (a VPC endpoint, or a local test server).
    pub endpoint: Option<String>,
    /// Static credentials instead of the default chain (tests).
    pub credentials: Option<Credentials>,
    /// Timeout of every operation, retries included.
    pub timeout: Duration,
}

impl Default for AwsOptions {
    fn default() -> Self {
        Self {
            region: None,
            endpoint: None,
            credentials: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

impl std::fmt::Debug for AwsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsOptions")
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("static_credentials", &self.credentials.is_some())
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// AWS Secrets Manager as a [`SecretStore`].
#[derive(Clone)]
pub struct AwsSecretStore {
    client: Client,
    region: Option<String>,
    endpoint: Option<String>,
    timeout: Duration,
}

impl std::fmt::Debug for AwsSecretStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsSecretStore")
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl AwsSecretStore {
    /// Loads the SDK configuration (no request is made until the first call).
    pub async fn connect(options: AwsOptions) -> Result<Self, SecretError> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(options.timeout)
                .operation_timeout(options.timeout)
                .build(),
        );
        if let Some(region) = &options.region {
            if region.is_empty()
                || !region
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-')
            {
                return Err(SecretError::config("region", "is not an AWS region name"));
            }
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(endpoint) = &options.endpoint {
            let url = reqwest::Url::parse(endpoint)
                .map_err(|_| SecretError::config("endpoint", "not a URL"))?;
            if url.scheme() != "https"
                && !(url.scheme() == "http" && super::vault::is_loopback(&url))
            {
                return Err(SecretError::config(
                    "endpoint",
                    "must use https:// (http:// is allowed only to loopback)",
                ));
            }
            loader = loader.endpoint_url(endpoint.clone());
        }
        if let Some(credentials) = options.credentials.clone() {
            loader = loader.credentials_provider(credentials);
        }
        let config = loader.load().await;
        if config.region().is_none() {
            return Err(SecretError::config(
                "region",
                "no region configured and none found in the environment",
            ));
        }
        Ok(Self {
            client: Client::new(&config),
            region: config.region().map(|r| r.to_string()),
            endpoint: options.endpoint,
            timeout: options.timeout,
        })
    }

    fn parse_name<'a>(&self, name: &'a str) -> Result<(&'a str, Option<String>), SecretError> {
        let reference = self.reference(name);
        let (id, field) = split_field(name, &reference)?;
        check_aws_id(id).map_err(|reason| SecretError::BadReference {
            reference: reference.clone(),
            reason,
        })?;
        Ok((id, field))
    }

    /// The raw `SecretString` and `VersionId` of `id`.
    async fn read(&self, id: &str, reference: &str) -> Result<(SecretString, String), SecretError> {
        let out = self
            .bounded(
                reference,
                self.client.get_secret_value().secret_id(id).send(),
            )
            .await?;
        let value =
            out.secret_string()
                .map(SecretString::from)
                .ok_or_else(|| SecretError::Backend {
                    reference: reference.to_owned(),
                    reason: "secret holds binary data, not a string".into(),
                })?;
        let version = out.version_id().unwrap_or_default().to_owned();
        Ok((value, version))
    }

    /// Awaits an SDK call under the store's timeout (the SDK has its own; this one also
    /// covers credential resolution), mapping its error for `reference`.
    async fn bounded<T, E>(
        &self,
        reference: &str,
        call: impl Future<Output = Result<T, SdkError<E>>>,
    ) -> Result<T, SecretError>
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        match tokio::time::timeout(self.timeout + Duration::from_millis(500), call).await {
            Ok(result) => result.map_err(|e| map_error(&e, reference)),
            Err(_) => Err(SecretError::Unavailable {
                reference: reference.to_owned(),
                reason: format!(
                    "timed out after {}",
                    humantime::format_duration(self.timeout)
                ),
            }),
        }
    }
}

/// Maps an SDK error from its kind and error code only; messages from the service are
/// dropped.
fn map_error<E: ProvideErrorMetadata>(e: &SdkError<E>, reference: &str) -> SecretError {
    let reference = reference.to_owned();
    match e {
        SdkError::TimeoutError(_) => SecretError::Unavailable {
            reference,
            reason: "timed out".into(),
        },
        SdkError::DispatchFailure(_) => SecretError::Unavailable {
            reference,
            reason: "could not reach secrets manager".into(),
        },
        SdkError::ResponseError(_) => SecretError::Unavailable {
            reference,
            reason: "unreadable response from secrets manager".into(),
        },
        SdkError::ServiceError(ctx) => {
            let status = ctx.raw().status().as_u16();
            match ctx.err().code() {
                Some("ResourceNotFoundException") => SecretError::NotFound { reference },
                Some(
                    "AccessDeniedException"
                    | "UnrecognizedClientException"
                    | "InvalidSignatureException"
                    | "ExpiredTokenException",
                ) => SecretError::PermissionDenied { reference },
                Some(code) if status >= 500 || code == "ThrottlingException" => {
                    SecretError::Unavailable {
                        reference,
                        reason: format!("secrets manager answered {code}"),
                    }
                }
                Some(code) => SecretError::Backend {
                    reference,
                    reason: format!("secrets manager answered {code}"),
                },
                None if status == 403 => SecretError::PermissionDenied { reference },
                None if status >= 500 => SecretError::Unavailable {
                    reference,
                    reason: format!("secrets manager answered status {status}"),
                },
                None => SecretError::Backend {
                    reference,
                    reason: format!("secrets manager answered status {status}"),
                },
            }
        }
        // ConstructionFailure: no credentials, bad region/endpoint, …
        _ => SecretError::Unavailable {
            reference,
            reason: "request could not be built (credentials or region missing?)".into(),
        },
    }
}

/// The string at `field` of the JSON object in `whole`.
fn select_field(
    whole: &SecretString,
    field: &str,
    reference: &str,
) -> Result<SecretString, SecretError> {
    let not_object = || SecretError::Backend {
        reference: reference.to_owned(),
        reason: "secret is not a JSON object, so it has no fields".into(),
    };
    let parsed: Value = serde_json::from_str(whole.expose_secret()).map_err(|_| not_object())?;
    match parsed.get(field) {
        Some(Value::String(s)) => Ok(SecretString::from(s.as_str())),
        Some(_) => Err(SecretError::Backend {
            reference: reference.to_owned(),
            reason: format!("field `{field}` is not a string"),
        }),
        None if parsed.is_object() => Err(SecretError::NotFound {
            reference: reference.to_owned(),
        }),
        None => Err(not_object()),
    }
}

#[async_trait::async_trait]
impl SecretStore for AwsSecretStore {
    async fn get(&self, name: &str) -> Result<SecretString, SecretError> {
        self.get_versioned(name).await.map(|(v, _)| v)
    }

    async fn get_versioned(&self, name: &str) -> Result<(SecretString, String), SecretError> {
        let reference = self.reference(name);
        let (id, field) = self.parse_name(name)?;
        let (whole, version) = self.read(id, &reference).await?;
        let value = match field {
            Some(field) => select_field(&whole, &field, &reference)?,
            None => whole,
        };
        Ok((value, version))
    }

    async fn put(&self, name: &str, value: &SecretString) -> Result<(), SecretError> {
        let reference = self.reference(name);
        let (id, field) = self.parse_name(name)?;
        let text = match &field {
            None => SecretString::from(value.expose_secret()),
            Some(field) => {
                let mut object = match self.read(id, &reference).await {
                    Ok((whole, _)) => match serde_json::from_str::<Value>(whole.expose_secret()) {
                        Ok(Value::Object(map)) => map,
                        _ => {
                            return Err(SecretError::Backend {
                                reference,
                                reason: "secret is not a JSON object, so it has no fields".into(),
                            });
                        }
                    },
                    Err(SecretError::NotFound { .. }) => serde_json::Map::new(),
                    Err(e) => return Err(e),
                };
                object.insert(
                    field.clone(),
                    Value::String(value.expose_secret().to_owned()),
                );
                SecretString::from(Value::Object(object).to_string())
            }
        };
        let put = self
            .bounded(
                &reference,
                self.client
                    .put_secret_value()
                    .secret_id(id)
                    .secret_string(text.expose_secret())
                    .send(),
            )
            .await;
        match put {
            Ok(_) => Ok(()),
            Err(SecretError::NotFound { .. }) if !id.starts_with("arn:") => {
                let created = self
                    .bounded(
                        &reference,
                        self.client
                            .create_secret()
                            .name(id)
                            .secret_string(text.expose_secret())
                            .send(),
                    )
                    .await;
                match created {
                    Ok(_) => Ok(()),
                    // Created concurrently by someone else: store ours as the next version.
                    Err(SecretError::Backend { .. }) => self
                        .bounded(
                            &reference,
                            self.client
                                .put_secret_value()
                                .secret_id(id)
                                .secret_string(text.expose_secret())
                                .send(),
                        )
                        .await
                        .map(|_| ()),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    async fn delete(&self, name: &str) -> Result<(), SecretError> {
        let reference = self.reference(name);
        let (id, _) = self.parse_name(name)?;
        let deleted = self
            .bounded(
                &reference,
                self.client
                    .delete_secret()
                    .secret_id(id)
                    .force_delete_without_recovery(true)
                    .send(),
            )
            .await;
        match deleted {
            Ok(_) | Err(SecretError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn reference(&self, name: &str) -> String {
        format!("aws-sm://{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selects_string_fields_of_json_objects() {
        let whole = SecretString::from(r#"{"api_key":"sk-canary","n":1}"#);
        let v = select_field(&whole, "api_key", "aws-sm://x#api_key").unwrap();
        assert_eq!(v.expose_secret(), "sk-canary");
        assert!(matches!(
            select_field(&whole, "missing", "r"),
            Err(SecretError::NotFound { .. })
        ));
        let e = select_field(&whole, "n", "r").unwrap_err();
        assert!(matches!(e, SecretError::Backend { .. }));
        let plain = SecretString::from("sk-canary-plain");
        let e = select_field(&plain, "api_key", "aws-sm://x#api_key").unwrap_err();
        assert!(!e.to_string().contains("canary"), "{e}");
    }

    #[test]
    fn debug_hides_static_credentials() {
        let options = AwsOptions {
            credentials: Some(Credentials::new(
                "AKIDcanary",
                "canary-secret",
                None,
                None,
                "t",
            )),
            ..AwsOptions::default()
        };
        let shown = format!("{options:?}");
        assert!(!shown.contains("canary"), "{shown}");
    }
}
