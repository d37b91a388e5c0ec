//! Azure Key Vault secret store over the Key Vault REST API (reqwest + rustls), without the
//! Azure SDK crates.
//!
//! Names are `secret-name[/version]` in the store's vault
//! (`azure-kv://vault-name/secret-name[/version]`). Requests:
//! `GET /secrets/{name}[/{version}]?api-version=7.5`, `PUT /secrets/{name}` with
//! `{"value": …}` (a new version), `DELETE /secrets/{name}` (a soft delete: the secret stays
//! recoverable for the vault's retention period, and until it is purged or recovered its
//! name cannot be set again — `409 Conflict`; Warden does not purge). The version id is the
//! last segment of the `id` URL in the answer.
//!
//! Authentication is a bearer token for the scope `https://vault.azure.net/.default` from a
//! [`TokenSource`]: [`ClientCredentials`] (Entra ID client-credentials flow against a
//! configurable authority), [`ManagedIdentity`] (the instance metadata endpoint), or
//! [`StaticToken`] (tests). Tokens are cached until a minute before they expire. A `401`
//! with a `WWW-Authenticate: Bearer …` challenge drops the cached token, fetches a fresh one
//! and retries once; the challenge's `authorization`/`resource` parameters are not trusted
//! to pick a different authority or audience (they are logged when they differ) — the
//! configuration decides where tokens come from and for what.
//!
//! Only `https://` is used, except to a loopback address when
//! [`AzureOptions::allow_insecure_loopback_for_tests`] is set (the managed-identity
//! endpoint is plain http by design). Every call has a timeout (default 5 s), answers are
//! read up to 1 MiB, and redirects are not followed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use zeroize::Zeroizing;

use super::reference::{check_azure_secret_name, check_azure_vault_name, check_azure_version};
use super::{DEFAULT_TIMEOUT, SecretError, SecretStore};

/// Key Vault REST API version sent with every request.
pub const API_VERSION: &str = "7.5";
/// The token scope for Key Vault in the public cloud.
pub const KEY_VAULT_SCOPE: &str = "https://vault.azure.net/.default";
/// The public-cloud Entra ID authority.
pub const DEFAULT_AUTHORITY_HOST: &str = "https://login.microsoftonline.com";
/// The instance metadata service's token endpoint (managed identity).
pub const IMDS_TOKEN_ENDPOINT: &str = "http://169.254.169.254/metadata/identity/oauth2/token";
/// A cached token is replaced this long before it expires.
const TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// Largest answer read from Key Vault or a token endpoint.
const MAX_BODY: usize = 1 << 20;

/// A bearer token and when it stops being valid.
#[derive(Clone)]
pub struct AccessToken {
    pub token: SecretString,
    pub expires_at: Instant,
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessToken")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// Why a token could not be had.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The token endpoint could not be reached or failed (retrying may help).
    #[error("token endpoint unavailable: {0}")]
    Unavailable(String),
    /// The token endpoint refused the credential.
    #[error("token request refused: {0}")]
    Refused(String),
}

/// Where bearer tokens for Key Vault come from.
#[async_trait::async_trait]
pub trait TokenSource: Send + Sync + std::fmt::Debug {
    /// A fresh token for `scope` (`https://vault.azure.net/.default`).
    async fn fetch(&self, scope: &str) -> Result<AccessToken, TokenError>;
}

/// A fixed token, for tests and short-lived tools.
pub struct StaticToken(pub SecretString);

impl std::fmt::Debug for StaticToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StaticToken(..)")
    }
}

#[async_trait::async_trait]
impl TokenSource for StaticToken {
    async fn fetch(&self, _scope: &str) -> Result<AccessToken, TokenError> {
        Ok(AccessToken {
            token: self.0.clone(),
            expires_at: Instant::now() + Duration::from_secs(365 * 24 * 3600),
        })
    }
}

/// The Entra ID client-credentials flow: `POST {authority}/{tenant}/oauth2/v2.0/token`.
pub struct ClientCredentials {
    http: reqwest::Client,
    token_url: String,
    client_id: String,
    client_secret: SecretString,
}

impl std::fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl ClientCredentials {
    /// `authority_host` is `https://login.microsoftonline.com` in the public cloud. `http`
    /// carries the timeout and trusted roots (see [`http_client`]).
    pub fn new(
        http: reqwest::Client,
        authority_host: &str,
        tenant_id: &str,
        client_id: impl Into<String>,
        client_secret: SecretString,
    ) -> Result<Self, SecretError> {
        if tenant_id.is_empty()
            || !tenant_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'))
        {
            return Err(SecretError::config(
                "tenant_id",
                "must be a tenant id or domain",
            ));
        }
        let authority = authority_host.trim_end_matches('/');
        reqwest::Url::parse(authority)
            .map_err(|_| SecretError::config("authority_host", "not a URL"))?;
        Ok(Self {
            http,
            token_url: format!("{authority}/{tenant_id}/oauth2/v2.0/token"),
            client_id: client_id.into(),
            client_secret,
        })
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    /// Seconds; Entra ID sends a number, the metadata service a string.
    expires_in: Option<serde_json::Value>,
}

impl TokenResponse {
    fn into_token(self) -> AccessToken {
        let secs = match &self.expires_in {
            Some(serde_json::Value::Number(n)) => n.as_u64(),
            Some(serde_json::Value::String(s)) => s.parse().ok(),
            _ => None,
        }
        .unwrap_or(300);
        AccessToken {
            token: SecretString::from(self.access_token),
            expires_at: Instant::now() + Duration::from_secs(secs),
        }
    }
}

/// Sends a token request and reads the token out of the answer.
async fn token_request(request: reqwest::RequestBuilder) -> Result<AccessToken, TokenError> {
    let response = request
        .send()
        .await
        .map_err(|e| TokenError::Unavailable(transport_reason(&e)))?;
    let status = response.status();
    let body = read_body(response)
        .await
        .map_err(|_| TokenError::Unavailable("answer could not be read".into()))?;
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        return Err(TokenError::Unavailable(format!(
            "status {}",
            status.as_u16()
        )));
    }
    if !status.is_success() {
        return Err(TokenError::Refused(format!("status {}", status.as_u16())));
    }
    serde_json::from_slice::<TokenResponse>(&body)
        .map(TokenResponse::into_token)
        .map_err(|_| TokenError::Unavailable("answer is not a token response".into()))
}

#[async_trait::async_trait]
impl TokenSource for ClientCredentials {
    async fn fetch(&self, scope: &str) -> Result<AccessToken, TokenError> {
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.client_secret.expose_secret()),
            ("scope", scope),
        ];
        token_request(self.http.post(&self.token_url).form(&form)).await
    }
}

/// Managed identity through the instance metadata service (`Metadata: true`).
pub struct ManagedIdentity {
    http: reqwest::Client,
    endpoint: String,
    client_id: Option<String>,
}

impl std::fmt::Debug for ManagedIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagedIdentity")
            .field("endpoint", &self.endpoint)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl ManagedIdentity {
    /// The system-assigned identity, or a user-assigned one by `client_id`, from `endpoint`
    /// ([`IMDS_TOKEN_ENDPOINT`] except in tests).
    pub fn new(
        http: reqwest::Client,
        endpoint: impl Into<String>,
        client_id: Option<String>,
    ) -> Self {
        Self {
            http,
            endpoint: endpoint.into(),
            client_id,
        }
    }
}

#[async_trait::async_trait]
impl TokenSource for ManagedIdentity {
    async fn fetch(&self, scope: &str) -> Result<AccessToken, TokenError> {
        let resource = scope.strip_suffix("/.default").unwrap_or(scope);
        let mut query = vec![("api-version", "2018-02-01"), ("resource", resource)];
        if let Some(id) = &self.client_id {
            query.push(("client_id", id.as_str()));
        }
        let mut url = reqwest::Url::parse(&self.endpoint).map_err(|_| {
            TokenError::Unavailable("managed identity endpoint is not a URL".into())
        })?;
        url.query_pairs_mut().extend_pairs(query);
        token_request(self.http.get(url).header("Metadata", "true")).await
    }
}

/// Caches one token per store and refreshes it shortly before expiry or on demand.
struct TokenCache {
    source: Arc<dyn TokenSource>,
    scope: String,
    /// The cached token and a generation counter. The async mutex makes one refresh serve
    /// every waiting request; it is held across the (timed-out) fetch by design.
    slot: tokio::sync::Mutex<(Option<AccessToken>, u64)>,
    timeout: Duration,
}

impl TokenCache {
    /// The cached token, or a fresh one, with its generation.
    async fn get(&self, reference: &str) -> Result<(SecretString, u64), SecretError> {
        let mut slot = self.slot.lock().await;
        if let Some(token) = &slot.0
            && token.expires_at > Instant::now() + TOKEN_REFRESH_MARGIN
        {
            return Ok((token.token.clone(), slot.1));
        }
        let fetched = tokio::time::timeout(self.timeout, self.source.fetch(&self.scope))
            .await
            .map_err(|_| SecretError::Unavailable {
                reference: reference.to_owned(),
                reason: "token endpoint timed out".into(),
            })?
            .map_err(|e| match e {
                TokenError::Unavailable(reason) => SecretError::Unavailable {
                    reference: reference.to_owned(),
                    reason: format!("token endpoint unavailable: {reason}"),
                },
                TokenError::Refused(_) => SecretError::PermissionDenied {
                    reference: reference.to_owned(),
                },
            })?;
        slot.1 += 1;
        let token = fetched.token.clone();
        slot.0 = Some(fetched);
        Ok((token, slot.1))
    }

    /// Drops the cached token if it is still the one of `generation`.
    async fn invalidate(&self, generation: u64) {
        let mut slot = self.slot.lock().await;
        if slot.1 == generation {
            slot.0 = None;
        }
    }
}

/// Builds the HTTP client the store and the token sources use: rustls with the system
/// roots plus `ca_pem` (a PEM bundle) when given, the timeout, no redirects, and
/// `https://` only unless `allow_http` (loopback tests, the metadata endpoint).
pub fn http_client(
    ca_pem: Option<&[u8]>,
    timeout: Duration,
    allow_http: bool,
) -> Result<reqwest::Client, SecretError> {
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .https_only(!allow_http);
    if let Some(pem) = ca_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|_| SecretError::config("ca_file", "is not a PEM certificate bundle"))?;
        if certs.is_empty() {
            return Err(SecretError::config("ca_file", "holds no certificate"));
        }
        builder = builder.tls_certs_merge(certs);
    }
    builder
        .build()
        .map_err(|_| SecretError::config("ca_file", "could not build the https client"))
}

/// Connection options; built from [`super::config::SecretBackendConfig::Azure`].
pub struct AzureOptions {
    /// `https://{vault}.vault.azure.net`.
    pub vault_url: String,
    /// The vault name `azure-kv://` references use; derived from the URL's first host
    /// label when `None`.
    pub vault_name: Option<String>,
    pub tokens: Arc<dyn TokenSource>,
    /// The client for Key Vault requests ([`http_client`]).
    pub http: reqwest::Client,
    /// Token scope; [`KEY_VAULT_SCOPE`] by default.
    pub scope: String,
    pub timeout: Duration,
    /// Allow `http://` to a loopback address (tests only).
    pub allow_insecure_loopback_for_tests: bool,
}

impl std::fmt::Debug for AzureOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureOptions")
            .field("vault_url", &self.vault_url)
            .field("vault_name", &self.vault_name)
            .field("tokens", &self.tokens)
            .field("scope", &self.scope)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl AzureOptions {
    /// Options with the defaults (public-cloud scope, 5 s timeout, https only).
    pub fn new(
        vault_url: impl Into<String>,
        tokens: Arc<dyn TokenSource>,
        http: reqwest::Client,
    ) -> Self {
        Self {
            vault_url: vault_url.into(),
            vault_name: None,
            tokens,
            http,
            scope: KEY_VAULT_SCOPE.into(),
            timeout: DEFAULT_TIMEOUT,
            allow_insecure_loopback_for_tests: false,
        }
    }
}

/// One Azure Key Vault as a [`SecretStore`].
#[derive(Clone)]
pub struct AzureKeyVaultStore {
    base: reqwest::Url,
    vault_name: String,
    http: reqwest::Client,
    tokens: Arc<TokenCache>,
    timeout: Duration,
}

impl std::fmt::Debug for AzureKeyVaultStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureKeyVaultStore")
            .field("vault_url", &self.base.as_str())
            .field("vault_name", &self.vault_name)
            .field("tokens", &self.tokens.source)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct SecretBundle {
    value: Option<String>,
    id: Option<String>,
}

impl AzureKeyVaultStore {
    /// Checks the options; no request is made until the first call.
    pub fn new(options: AzureOptions) -> Result<Self, SecretError> {
        let mut base = reqwest::Url::parse(options.vault_url.trim_end_matches('/'))
            .map_err(|_| SecretError::config("vault_url", "not a URL"))?;
        let insecure_ok =
            options.allow_insecure_loopback_for_tests && super::vault::is_loopback(&base);
        if base.scheme() != "https" && !(base.scheme() == "http" && insecure_ok) {
            return Err(SecretError::config("vault_url", "must use https://"));
        }
        if base.path() != "/" || base.query().is_some() || !base.username().is_empty() {
            return Err(SecretError::config(
                "vault_url",
                "must be the vault's base URL (https://NAME.vault.azure.net)",
            ));
        }
        base.set_path("");
        let vault_name = match options.vault_name {
            Some(name) => name,
            None => base
                .host_str()
                .and_then(|h| h.split('.').next())
                .unwrap_or_default()
                .to_owned(),
        };
        check_azure_vault_name(&vault_name).map_err(|r| SecretError::config("vault_name", r))?;
        Ok(Self {
            base,
            vault_name,
            http: options.http,
            tokens: Arc::new(TokenCache {
                source: options.tokens,
                scope: options.scope,
                slot: tokio::sync::Mutex::new((None, 0)),
                timeout: options.timeout,
            }),
            timeout: options.timeout,
        })
    }

    /// The vault name `azure-kv://` references use for this store.
    pub fn vault_name(&self) -> &str {
        &self.vault_name
    }

    /// The same credentials against another vault `https://{name}.{suffix}`, where the
    /// suffix is this store's (`vault.azure.net`), for references into a second vault.
    pub fn with_vault(&self, name: &str) -> Result<Self, SecretError> {
        check_azure_vault_name(name).map_err(|r| SecretError::config("vault_name", r))?;
        let host = self.base.host_str().unwrap_or_default();
        let suffix = host
            .split_once('.')
            .map(|(_, s)| s)
            .filter(|s| s.contains('.') && self.base.scheme() == "https")
            .ok_or_else(|| {
                SecretError::config(
                    "vault_url",
                    format!("cannot derive the URL of vault {name} from {host}"),
                )
            })?;
        let mut base = self.base.clone();
        base.set_host(Some(&format!("{name}.{suffix}")))
            .map_err(|_| SecretError::config("vault_name", "not a host name"))?;
        Ok(Self {
            base,
            vault_name: name.to_owned(),
            ..self.clone()
        })
    }

    /// `secret-name[/version]` → (name, version).
    fn parse_name<'a>(&self, name: &'a str) -> Result<(&'a str, Option<&'a str>), SecretError> {
        let bad = |reason: String| SecretError::BadReference {
            reference: self.reference(name),
            reason,
        };
        let (secret, version) = match name.split_once('/') {
            Some((s, v)) => (s, Some(v)),
            None => (name, None),
        };
        check_azure_secret_name(secret).map_err(bad)?;
        if let Some(v) = version {
            check_azure_version(v).map_err(bad)?;
        }
        Ok((secret, version))
    }

    fn url(&self, segments: &[&str]) -> reqwest::Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.clear().push("secrets").extend(segments);
        }
        url.query_pairs_mut()
            .append_pair("api-version", API_VERSION);
        url
    }

    /// Sends one request with a bearer token; on a 401 bearer challenge drops the token,
    /// fetches a fresh one and tries once more.
    async fn send(
        &self,
        method: Method,
        url: reqwest::Url,
        body: Option<&SecretString>,
        reference: &str,
    ) -> Result<(StatusCode, Zeroizing<Vec<u8>>), SecretError> {
        for attempt in 0..2 {
            let (token, generation) = self.tokens.get(reference).await?;
            let mut request = self
                .http
                .request(method.clone(), url.clone())
                .bearer_auth(token.expose_secret())
                .header(reqwest::header::ACCEPT, "application/json");
            if let Some(value) = body {
                let json = Zeroizing::new(
                    serde_json::json!({ "value": value.expose_secret() }).to_string(),
                );
                request = request
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(json.as_bytes().to_vec());
            }
            let response = match tokio::time::timeout(self.timeout, request.send()).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    return Err(SecretError::Unavailable {
                        reference: reference.to_owned(),
                        reason: transport_reason(&e),
                    });
                }
                Err(_) => return Err(self.timed_out(reference)),
            };
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED && attempt == 0 {
                match bearer_challenge(response.headers()) {
                    Some(challenge) => {
                        if let Some(resource) = challenge.resource_or_scope()
                            && !self
                                .tokens
                                .scope
                                .starts_with(resource.trim_end_matches('/'))
                        {
                            tracing::warn!(
                                vault = %self.vault_name,
                                challenge_resource = %resource,
                                "key vault challenge names another resource; keeping the configured scope"
                            );
                        }
                        self.tokens.invalidate(generation).await;
                        continue;
                    }
                    None => {
                        return Err(SecretError::PermissionDenied {
                            reference: reference.to_owned(),
                        });
                    }
                }
            }
            let body = match tokio::time::timeout(self.timeout, read_body(response)).await {
                Ok(Ok(b)) => b,
                Ok(Err(reason)) => {
                    return Err(SecretError::Unavailable {
                        reference: reference.to_owned(),
                        reason,
                    });
                }
                Err(_) => return Err(self.timed_out(reference)),
            };
            return Ok((status, body));
        }
        Err(SecretError::PermissionDenied {
            reference: reference.to_owned(),
        })
    }

    fn timed_out(&self, reference: &str) -> SecretError {
        SecretError::Unavailable {
            reference: reference.to_owned(),
            reason: format!(
                "timed out after {}",
                humantime::format_duration(self.timeout)
            ),
        }
    }
}

/// Maps a non-success status; the body is never quoted (only Key Vault's error code).
fn status_error(status: StatusCode, body: &[u8], reference: &str) -> SecretError {
    let reference = reference.to_owned();
    match status {
        StatusCode::NOT_FOUND => SecretError::NotFound { reference },
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            SecretError::PermissionDenied { reference }
        }
        s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => {
            SecretError::Unavailable {
                reference,
                reason: format!("key vault answered status {}", s.as_u16()),
            }
        }
        s => SecretError::Backend {
            reference,
            reason: match error_code(body) {
                Some(code) => format!("key vault answered status {} ({code})", s.as_u16()),
                None => format!("key vault answered status {}", s.as_u16()),
            },
        },
    }
}

/// Key Vault's `error.code` when it is a plain identifier.
fn error_code(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let code = v.get("error")?.get("code")?.as_str()?;
    (code.len() <= 64 && code.chars().all(|c| c.is_ascii_alphanumeric())).then(|| code.to_owned())
}

fn transport_reason(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "connection failed".into()
    } else if e.is_builder() {
        "request refused by the client (https required)".into()
    } else {
        "request failed".into()
    }
}

/// Reads an answer of at most [`MAX_BODY`] bytes.
async fn read_body(mut response: reqwest::Response) -> Result<Zeroizing<Vec<u8>>, String> {
    let mut body = Zeroizing::new(Vec::new());
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|_| "answer could not be read".to_owned())?
    {
        if body.len() + chunk.len() > MAX_BODY {
            return Err("answer is larger than 1 MiB".into());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The parameters of a `WWW-Authenticate: Bearer k="v", …` challenge.
#[derive(Debug, Default, PartialEq, Eq)]
struct Challenge {
    authorization: Option<String>,
    resource: Option<String>,
    scope: Option<String>,
}

impl Challenge {
    fn resource_or_scope(&self) -> Option<&str> {
        self.resource.as_deref().or_else(|| {
            self.scope
                .as_deref()
                .map(|s| s.strip_suffix("/.default").unwrap_or(s))
        })
    }
}

fn bearer_challenge(headers: &HeaderMap) -> Option<Challenge> {
    headers
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(parse_bearer_challenge)
}

fn parse_bearer_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, params) = header.split_once(' ').unwrap_or((header, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut challenge = Challenge::default();
    for part in params.split(',') {
        let Some((key, value)) = part.split_once('=') else {
            continue;
        };
        let value = value.trim().trim_matches('"').to_owned();
        match key.trim().to_ascii_lowercase().as_str() {
            "authorization" | "authorization_uri" => challenge.authorization = Some(value),
            "resource" => challenge.resource = Some(value),
            "scope" => challenge.scope = Some(value),
            _ => {}
        }
    }
    Some(challenge)
}

/// The version id at the end of a secret `id` URL (`…/secrets/{name}/{version}`).
fn version_of(id: &str) -> Option<String> {
    let version = id.trim_end_matches('/').rsplit('/').next()?;
    (!version.is_empty() && version.chars().all(|c| c.is_ascii_alphanumeric()))
        .then(|| version.to_owned())
}

#[async_trait::async_trait]
impl SecretStore for AzureKeyVaultStore {
    async fn get(&self, name: &str) -> Result<SecretString, SecretError> {
        self.get_versioned(name).await.map(|(v, _)| v)
    }

    async fn get_versioned(&self, name: &str) -> Result<(SecretString, String), SecretError> {
        let reference = self.reference(name);
        let (secret, version) = self.parse_name(name)?;
        let mut segments = vec![secret];
        segments.extend(version);
        let (status, body) = self
            .send(Method::GET, self.url(&segments), None, &reference)
            .await?;
        if !status.is_success() {
            return Err(status_error(status, &body, &reference));
        }
        let bundle: SecretBundle =
            serde_json::from_slice(&body).map_err(|_| SecretError::Backend {
                reference: reference.clone(),
                reason: "answer is not a secret bundle".into(),
            })?;
        let malformed = || SecretError::Backend {
            reference: reference.clone(),
            reason: "secret bundle lacks value or id".into(),
        };
        let version = bundle
            .id
            .as_deref()
            .and_then(version_of)
            .ok_or_else(malformed)?;
        let value = bundle.value.map(SecretString::from).ok_or_else(malformed)?;
        Ok((value, version))
    }

    async fn put(&self, name: &str, value: &SecretString) -> Result<(), SecretError> {
        let reference = self.reference(name);
        let (secret, version) = self.parse_name(name)?;
        if version.is_some() {
            return Err(SecretError::BadReference {
                reference,
                reason: "a write creates a new version; name the secret without one".into(),
            });
        }
        let (status, body) = self
            .send(Method::PUT, self.url(&[secret]), Some(value), &reference)
            .await?;
        if status.is_success() {
            Ok(())
        } else {
            Err(status_error(status, &body, &reference))
        }
    }

    async fn delete(&self, name: &str) -> Result<(), SecretError> {
        let reference = self.reference(name);
        let (secret, version) = self.parse_name(name)?;
        if version.is_some() {
            return Err(SecretError::BadReference {
                reference,
                reason: "versions cannot be deleted one by one".into(),
            });
        }
        let (status, body) = self
            .send(Method::DELETE, self.url(&[secret]), None, &reference)
            .await?;
        if status.is_success() || status == StatusCode::NOT_FOUND {
            Ok(())
        } else {
            Err(status_error(status, &body, &reference))
        }
    }

    fn reference(&self, name: &str) -> String {
        format!("azure-kv://{}/{name}", self.vault_name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_challenges() {
        let c = parse_bearer_challenge(
            r#"Bearer authorization="https://login.microsoftonline.com/t1", resource="https://vault.azure.net""#,
        )
        .unwrap();
        assert_eq!(
            c.authorization.as_deref(),
            Some("https://login.microsoftonline.com/t1")
        );
        assert_eq!(c.resource_or_scope(), Some("https://vault.azure.net"));
        let c = parse_bearer_challenge(
            r#"Bearer authorization="https://login.microsoftonline.com/t1", scope="https://vault.azure.net/.default""#,
        )
        .unwrap();
        assert_eq!(c.resource_or_scope(), Some("https://vault.azure.net"));
        assert_eq!(parse_bearer_challenge("Basic realm=\"x\""), None);
    }

    #[test]
    fn versions_are_the_last_id_segment() {
        assert_eq!(
            version_of("https://v.vault.azure.net/secrets/n/0123456789abcdef0123456789abcdef")
                .as_deref(),
            Some("0123456789abcdef0123456789abcdef")
        );
        assert_eq!(version_of("https://v/secrets/n/a?b"), None);
    }

    #[test]
    fn error_codes_are_kept_bodies_are_not() {
        let e = status_error(
            StatusCode::BAD_REQUEST,
            br#"{"error":{"code":"BadParameter","message":"sk-canary is bad"}}"#,
            "azure-kv://v/n",
        );
        let shown = e.to_string();
        assert!(
            shown.contains("BadParameter") && !shown.contains("canary"),
            "{shown}"
        );
        assert!(matches!(
            status_error(StatusCode::NOT_FOUND, b"", "r"),
            SecretError::NotFound { .. }
        ));
    }

    fn store(url: &str, insecure: bool) -> Result<AzureKeyVaultStore, SecretError> {
        let http = http_client(None, DEFAULT_TIMEOUT, insecure)?;
        let mut o = AzureOptions::new(
            url,
            Arc::new(StaticToken(SecretString::from("canary-token"))),
            http,
        );
        o.allow_insecure_loopback_for_tests = insecure;
        AzureKeyVaultStore::new(o)
    }

    #[test]
    fn https_only_unless_loopback_tests_allow_it() {
        assert!(store("http://my-vault.vault.azure.net", false).is_err());
        assert!(store("http://my-vault.vault.azure.net", true).is_err());
        assert!(store("http://127.0.0.1:1", false).is_err());
        let s = store("https://my-vault.vault.azure.net/", false).unwrap();
        assert_eq!(s.vault_name(), "my-vault");
        assert_eq!(
            s.url(&["n", "v"]).as_str(),
            "https://my-vault.vault.azure.net/secrets/n/v?api-version=7.5"
        );
        let other = s.with_vault("other-vault").unwrap();
        assert_eq!(
            other.url(&["n"]).as_str(),
            "https://other-vault.vault.azure.net/secrets/n?api-version=7.5"
        );
        assert!(!format!("{s:?}").contains("canary"));
        assert!(store("https://my-vault.vault.azure.net/x", false).is_err());
    }
}
