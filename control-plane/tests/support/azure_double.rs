//! An in-process Azure Key Vault test double: HTTPS on 127.0.0.1 with a certificate from a
//! throw-away CA (rcgen), following the documented REST protocol closely enough to test a
//! real client against it (there is no Key Vault emulator to run):
//!
//! - every Key Vault request needs `?api-version=` (else `400 BadParameter`);
//! - a request without a valid bearer token gets `401` with
//!   `WWW-Authenticate: Bearer authorization="…/{tenant}", resource="https://vault.azure.net"`;
//! - `GET /secrets/{name}[/]`, `GET /secrets/{name}/{version}`, `PUT /secrets/{name}`
//!   (`{"value": …, "contentType"?, "tags"?}` → a new 32-hex version), a missing secret is
//!   `404 {"error":{"code":"SecretNotFound",…}}`;
//! - `GET /secrets/{name}/versions[?maxresults=N]`: `{"value": [SecretItem…], "nextLink": …}`,
//!   paged (at most 25 a page) with a `$skiptoken` in `nextLink`;
//! - soft delete, as every vault has it now: `DELETE /secrets/{name}` answers a
//!   `DeletedSecretBundle` (`recoveryId`, `deletedDate`, `scheduledPurgeDate`, no value) and
//!   moves the secret to `GET /deletedsecrets/{name}`; until it is purged
//!   (`DELETE /deletedsecrets/{name}` → `204`) its name cannot be set again
//!   (`409 Conflict`, inner code `ObjectIsDeletedButRecoverable`);
//! - tokens come from `POST /{tenant}/oauth2/v2.0/token` (client credentials, form body,
//!   scope `https://vault.azure.net/.default`; MSAL first reads the tenant's
//!   `GET /{tenant}/v2.0/.well-known/openid-configuration`) or the managed-identity endpoint
//!   `GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=…` with
//!   `Metadata: true`; [`AzureDouble::revoke_tokens`] makes every issued token invalid, as
//!   an expired or rotated token would be.
//!
//! Every request is recorded ([`AzureDouble::log`]) so tests can assert on the flow.
//! `tests/azure_sdk_conformance.rs` runs the official Python SDK (`azure-keyvault-secrets`
//! with `azure-identity`) against this double, so a deviation from the real protocol that
//! the SDK notices fails a test.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject as _;
use serde_json::{Map, Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

pub const TENANT: &str = "test-tenant";
pub const CLIENT_ID: &str = "warden-test-client";
pub const CLIENT_SECRET: &str = "client-secret-canary";
pub const RESOURCE: &str = "https://vault.azure.net";
/// How long a deleted secret stays recoverable (Key Vault's default retention).
const RECOVERABLE_DAYS: u64 = 90;
/// The largest page a list returns (Key Vault's `maxresults` limit and default).
const MAX_PAGE: usize = 25;

/// One request as the double saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    /// The raw query string, if any (`api-version=7.5&…`).
    pub query: Option<String>,
    pub user_agent: Option<String>,
    /// Whether the request carried a bearer token at all.
    pub bearer: bool,
    /// Whether it carried a token the double issued and still accepts.
    pub authorized: bool,
    pub status: u16,
}

impl Seen {
    /// The `api-version` query parameter, when sent.
    pub fn api_version(&self) -> Option<&str> {
        self.query
            .as_deref()?
            .split('&')
            .find_map(|pair| pair.strip_prefix("api-version="))
    }
}

/// One version of a secret.
#[derive(Clone)]
struct Version {
    id: String,
    value: String,
    content_type: Option<String>,
    tags: Map<String, Value>,
    created: u64,
}

/// A soft-deleted secret: every version, kept until purged.
struct Deleted {
    versions: Vec<Version>,
    deleted_date: u64,
}

#[derive(Default)]
struct Inner {
    /// name → versions in the order they were set.
    secrets: HashMap<String, Vec<Version>>,
    deleted: HashMap<String, Deleted>,
    tokens: HashSet<String>,
    log: Vec<Seen>,
    counter: u64,
}

type Shared = Arc<Mutex<Inner>>;

/// A running double; stops when dropped.
pub struct AzureDouble {
    pub addr: SocketAddr,
    /// PEM of the CA that signed the server certificate.
    pub ca_pem: String,
    state: Shared,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for AzureDouble {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl AzureDouble {
    /// Starts the double on a random loopback port.
    pub async fn start() -> Self {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "warden test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let leaf_params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        let leaf = leaf_params.signed_by(&leaf_key, &ca).unwrap();

        let certs = vec![leaf.der().clone()];
        let key = PrivateKeyDer::from_pem_slice(leaf_key.serialize_pem().as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();

        let state: Shared = Arc::default();
        let app = Router::new()
            .route("/{tenant}/oauth2/v2.0/token", post(client_credentials))
            .route(
                "/{tenant}/v2.0/.well-known/openid-configuration",
                get(openid_configuration),
            )
            .route("/metadata/identity/oauth2/token", get(managed_identity))
            .route(
                "/secrets/{name}",
                get(get_secret).put(put_secret).delete(delete_secret),
            )
            .route("/secrets/{name}/", get(get_secret))
            .route("/secrets/{name}/versions", get(list_versions))
            .route("/secrets/{name}/{version}", get(get_version))
            .route(
                "/deletedsecrets/{name}",
                get(get_deleted).delete(purge_deleted),
            )
            .with_state(Arc::clone(&state));
        let listener = TlsListener { tcp, acceptor };
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            addr,
            ca_pem: ca.pem(),
            state,
            server,
        }
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Issues a valid token directly (for a static-token client).
    pub fn issue_token(&self) -> String {
        issue(&self.state)
    }

    /// Invalidates every token issued so far.
    pub fn revoke_tokens(&self) {
        self.state.lock().unwrap().tokens.clear();
    }

    /// Every request so far.
    pub fn log(&self) -> Vec<Seen> {
        self.state.lock().unwrap().log.clone()
    }

    /// Stores a value directly (as another writer would), returning its version.
    pub fn set(&self, name: &str, value: &str) -> String {
        let mut inner = self.state.lock().unwrap();
        assert!(
            !inner.deleted.contains_key(name),
            "{name} is deleted and not purged: Key Vault refuses to set it"
        );
        let version = new_version(&mut inner, value.to_owned(), None, Map::new());
        let id = version.id.clone();
        inner
            .secrets
            .entry(name.to_owned())
            .or_default()
            .push(version);
        id
    }

    /// Whether `name` is soft-deleted (deleted and not yet purged).
    pub fn is_deleted(&self, name: &str) -> bool {
        self.state.lock().unwrap().deleted.contains_key(name)
    }
}

struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            // A client that does not trust the CA fails here; keep serving the others.
            if let Ok(Ok(tls)) =
                tokio::time::timeout(Duration::from_secs(5), self.acceptor.accept(tcp)).await
            {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A fresh 32-hex id (Key Vault's version format).
fn next_id(inner: &mut Inner) -> String {
    inner.counter += 1;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{:016x}{:016x}", nanos as u64, inner.counter)
}

fn new_version(
    inner: &mut Inner,
    value: String,
    content_type: Option<String>,
    tags: Map<String, Value>,
) -> Version {
    Version {
        id: next_id(inner),
        value,
        content_type,
        tags,
        created: now(),
    }
}

fn issue(state: &Shared) -> String {
    let mut inner = state.lock().unwrap();
    let token = format!("tok-{}", next_id(&mut inner));
    inner.tokens.insert(token.clone());
    token
}

fn record(
    state: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    authorized: bool,
    status: StatusCode,
) {
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("Bearer "));
    state.lock().unwrap().log.push(Seen {
        method: method.to_string(),
        path: uri.path().to_owned(),
        query: uri.query().map(str::to_owned),
        user_agent,
        bearer,
        authorized,
        status: status.as_u16(),
    });
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body.to_string(),
    )
        .into_response()
}

fn kv_error(status: StatusCode, code: &str, message: &str) -> Response {
    json_response(status, json!({"error": {"code": code, "message": message}}))
}

fn secret_not_found(name: &str) -> Response {
    kv_error(
        StatusCode::NOT_FOUND,
        "SecretNotFound",
        &format!("A secret with (name/id) {name} was not found in this key vault."),
    )
}

/// Checks api-version and the bearer token; `Err` is the answer to send.
fn gate(
    state: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Result<(), Box<Response>> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let authorized = token.is_some_and(|t| state.lock().unwrap().tokens.contains(t));
    if query.get("api-version").is_none_or(String::is_empty) {
        record(
            state,
            method,
            uri,
            headers,
            authorized,
            StatusCode::BAD_REQUEST,
        );
        return Err(Box::new(kv_error(
            StatusCode::BAD_REQUEST,
            "BadParameter",
            "The 'api-version' query parameter is missing",
        )));
    }
    if !authorized {
        record(state, method, uri, headers, false, StatusCode::UNAUTHORIZED);
        let mut response = kv_error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "AKV10000: Request is missing a Bearer or PoP token.",
        );
        let challenge = format!(
            "Bearer authorization=\"https://login.microsoftonline.com/{TENANT}\", resource=\"{RESOURCE}\""
        );
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_str(&challenge).unwrap(),
        );
        return Err(Box::new(response));
    }
    Ok(())
}

/// `{"enabled", "created", "updated", "recoveryLevel", "recoverableDays"}` of a version.
fn attributes(version: &Version) -> Value {
    json!({"enabled": true, "created": version.created, "updated": version.created,
           "recoveryLevel": "Recoverable+Purgeable", "recoverableDays": RECOVERABLE_DAYS})
}

/// A `SecretItem` (list entry): the id, attributes, tags and content type, never the value.
fn item(host: &str, name: &str, version: &Version) -> Value {
    let mut item = json!({
        "id": format!("https://{host}/secrets/{name}/{}", version.id),
        "attributes": attributes(version),
        "tags": version.tags,
    });
    if let Some(content_type) = &version.content_type {
        item["contentType"] = json!(content_type);
    }
    item
}

/// A `SecretBundle`: an item with the value.
fn bundle(host: &str, name: &str, version: &Version) -> Value {
    let mut bundle = item(host, name, version);
    bundle["value"] = json!(version.value);
    bundle
}

/// A `DeletedSecretBundle`: the latest version's item (no value) and the deletion facts.
fn deleted_bundle(host: &str, name: &str, deleted: &Deleted) -> Value {
    let mut bundle = deleted
        .versions
        .last()
        .map(|latest| item(host, name, latest))
        .unwrap_or_else(|| json!({}));
    bundle["recoveryId"] = json!(format!("https://{host}/deletedsecrets/{name}"));
    bundle["deletedDate"] = json!(deleted.deleted_date);
    bundle["scheduledPurgeDate"] = json!(deleted.deleted_date + RECOVERABLE_DAYS * 24 * 3600);
    bundle
}

fn host(headers: &HeaderMap) -> String {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_owned()
}

/// What a Key Vault handler needs of its request.
struct Call {
    state: Shared,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    query: HashMap<String, String>,
}

impl Call {
    /// Runs `answer` once the request passed [`gate`], and records the outcome.
    fn answer(self, answer: impl FnOnce(&mut Inner, &str) -> Response) -> Response {
        if let Err(r) = gate(
            &self.state,
            &self.method,
            &self.uri,
            &self.headers,
            &self.query,
        ) {
            return *r;
        }
        let host = host(&self.headers);
        let response = answer(&mut self.state.lock().unwrap(), &host);
        record(
            &self.state,
            &self.method,
            &self.uri,
            &self.headers,
            true,
            response.status(),
        );
        response
    }
}

impl axum::extract::FromRequestParts<Shared> for Call {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &Shared,
    ) -> Result<Self, Self::Rejection> {
        let query = Query::<HashMap<String, String>>::try_from_uri(&parts.uri)
            .map(|q| q.0)
            .unwrap_or_default();
        Ok(Self {
            state: Arc::clone(state),
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            headers: parts.headers.clone(),
            query,
        })
    }
}

fn read(call: Call, name: String, version: Option<String>) -> Response {
    call.answer(|inner, host| {
        let found = inner
            .secrets
            .get(&name)
            .and_then(|versions| match &version {
                None => versions.last(),
                Some(v) => versions.iter().find(|found| found.id == *v),
            });
        match found {
            Some(found) => json_response(StatusCode::OK, bundle(host, &name, found)),
            None => secret_not_found(&name),
        }
    })
}

async fn get_secret(Path(name): Path<String>, call: Call) -> Response {
    read(call, name, None)
}

async fn get_version(Path((name, version)): Path<(String, String)>, call: Call) -> Response {
    read(call, name, Some(version))
}

/// `GET /secrets/{name}/versions`: one page of items, oldest first, and a `nextLink` while
/// more remain. A name that has no versions is an empty list.
async fn list_versions(Path(name): Path<String>, call: Call) -> Response {
    let page_size = match call.query.get("maxresults").map(|m| m.parse::<usize>()) {
        None => Ok(MAX_PAGE),
        Some(Ok(n)) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        Some(_) => Err(()),
    };
    let skip = call
        .query
        .get("$skiptoken")
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(0);
    let api_version = call.query.get("api-version").cloned().unwrap_or_default();
    call.answer(|inner, host| {
        let Ok(page_size) = page_size else {
            return kv_error(
                StatusCode::BAD_REQUEST,
                "BadParameter",
                "maxresults must be between 1 and 25",
            );
        };
        let versions = inner.secrets.get(&name).map(Vec::as_slice).unwrap_or(&[]);
        let page: Vec<Value> = versions
            .iter()
            .skip(skip)
            .take(page_size)
            .map(|v| item(host, &name, v))
            .collect();
        let next = skip + page.len();
        let next_link = (next < versions.len()).then(|| {
            format!(
                "https://{host}/secrets/{name}/versions?api-version={api_version}\
                 &$skiptoken={next}&maxresults={page_size}"
            )
        });
        json_response(
            StatusCode::OK,
            json!({"value": page, "nextLink": next_link}),
        )
    })
}

async fn put_secret(Path(name): Path<String>, call: Call, body: Bytes) -> Response {
    call.answer(|inner, host| {
        let Ok(body) = serde_json::from_slice::<Value>(&body) else {
            return kv_error(StatusCode::BAD_REQUEST, "BadParameter", "invalid JSON body");
        };
        let Some(value) = body.get("value").and_then(Value::as_str) else {
            return kv_error(StatusCode::BAD_REQUEST, "BadParameter", "value is required");
        };
        if inner.deleted.contains_key(&name) {
            return json_response(
                StatusCode::CONFLICT,
                json!({"error": {
                    "code": "Conflict",
                    "message": format!(
                        "Secret {name} is currently in a deleted but recoverable state, and its \
                         name cannot be created. You can either recover or purge the secret."
                    ),
                    "innererror": {"code": "ObjectIsDeletedButRecoverable"}
                }}),
            );
        }
        let content_type = body
            .get("contentType")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let tags = body
            .get("tags")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let version = new_version(inner, value.to_owned(), content_type, tags);
        let response = json_response(StatusCode::OK, bundle(host, &name, &version));
        inner.secrets.entry(name).or_default().push(version);
        response
    })
}

/// `DELETE /secrets/{name}`: a soft delete of every version.
async fn delete_secret(Path(name): Path<String>, call: Call) -> Response {
    call.answer(|inner, host| match inner.secrets.remove(&name) {
        Some(versions) => {
            let deleted = Deleted {
                versions,
                deleted_date: now(),
            };
            let response = json_response(StatusCode::OK, deleted_bundle(host, &name, &deleted));
            inner.deleted.insert(name, deleted);
            response
        }
        None => secret_not_found(&name),
    })
}

/// `GET /deletedsecrets/{name}`: the deleted secret (no value).
async fn get_deleted(Path(name): Path<String>, call: Call) -> Response {
    call.answer(|inner, host| match inner.deleted.get(&name) {
        Some(deleted) => json_response(StatusCode::OK, deleted_bundle(host, &name, deleted)),
        None => kv_error(
            StatusCode::NOT_FOUND,
            "SecretNotFound",
            &format!("Deleted Secret not found: {name}"),
        ),
    })
}

/// `DELETE /deletedsecrets/{name}`: purge, after which the name can be set again.
async fn purge_deleted(Path(name): Path<String>, call: Call) -> Response {
    call.answer(|inner, _| match inner.deleted.remove(&name) {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => kv_error(
            StatusCode::NOT_FOUND,
            "SecretNotFound",
            &format!("Deleted Secret not found: {name}"),
        ),
    })
}

/// The tenant's OpenID configuration, which MSAL reads before its first token request; the
/// endpoints point back at the double.
async fn openid_configuration(
    State(state): State<Shared>,
    Path(tenant): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let base = format!("https://{}/{tenant}", host(&headers));
    let response = if tenant == TENANT {
        json_response(
            StatusCode::OK,
            json!({
                "token_endpoint": format!("{base}/oauth2/v2.0/token"),
                "token_endpoint_auth_methods_supported":
                    ["client_secret_post", "private_key_jwt", "client_secret_basic"],
                "jwks_uri": format!("{base}/discovery/v2.0/keys"),
                "response_modes_supported": ["query", "fragment", "form_post"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "issuer": format!("{base}/v2.0"),
                "authorization_endpoint": format!("{base}/oauth2/v2.0/authorize"),
                "device_authorization_endpoint": format!("{base}/oauth2/v2.0/devicecode"),
                "end_session_endpoint": format!("{base}/oauth2/v2.0/logout"),
                "tenant_region_scope": null,
                "cloud_instance_name": "microsoftonline.com",
            }),
        )
    } else {
        json_response(
            StatusCode::BAD_REQUEST,
            json!({"error": "invalid_tenant",
                   "error_description": format!("AADSTS90002: Tenant '{tenant}' not found.")}),
        )
    };
    record(&state, &method, &uri, &headers, false, response.status());
    response
}

async fn client_credentials(
    State(state): State<Shared>,
    Path(tenant): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form: HashMap<String, String> = url_decode_form(&body);
    let ok = tenant == TENANT
        && form.get("grant_type").map(String::as_str) == Some("client_credentials")
        && form.get("client_id").map(String::as_str) == Some(CLIENT_ID)
        && form.get("client_secret").map(String::as_str) == Some(CLIENT_SECRET)
        && form.get("scope").map(String::as_str) == Some("https://vault.azure.net/.default");
    let response = if ok {
        json_response(
            StatusCode::OK,
            json!({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599,
                   "access_token": issue(&state)}),
        )
    } else {
        json_response(
            StatusCode::UNAUTHORIZED,
            json!({"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided."}),
        )
    };
    record(&state, &method, &uri, &headers, false, response.status());
    response
}

async fn managed_identity(
    State(state): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let ok = headers.get("metadata").and_then(|v| v.to_str().ok()) == Some("true")
        && query.get("api-version").map(String::as_str) == Some("2018-02-01")
        && query.get("resource").map(String::as_str) == Some(RESOURCE);
    let response = if ok {
        json_response(
            StatusCode::OK,
            json!({"access_token": issue(&state), "expires_in": "86399",
                   "expires_on": "0", "resource": RESOURCE, "token_type": "Bearer"}),
        )
    } else {
        json_response(
            StatusCode::BAD_REQUEST,
            json!({"error": "invalid_request", "error_description": "Required metadata header not specified"}),
        )
    };
    record(&state, &method, &uri, &headers, false, response.status());
    response
}
/// Decodes an `application/x-www-form-urlencoded` body (enough for the token request).
fn url_decode_form(body: &[u8]) -> HashMap<String, String> {
    fn decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                    out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                    i += 2;
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}
