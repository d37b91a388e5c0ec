//! An in-process Azure Key Vault test double: HTTPS on 127.0.0.1 with a certificate from a
//! throw-away CA (rcgen), following the documented REST protocol closely enough to test a
//! real client against it (there is no Key Vault emulator to run):
//!
//! - every Key Vault request needs `?api-version=` (else `400 BadParameter`);
//! - a request without a valid bearer token gets `401` with
//!   `WWW-Authenticate: Bearer authorization="…/{tenant}", resource="https://vault.azure.net"`;
//! - `GET /secrets/{name}[/]`, `GET /secrets/{name}/{version}`, `PUT /secrets/{name}`
//!   (`{"value": …}` → a new 32-hex version), `DELETE /secrets/{name}`; a missing secret is
//!   `404 {"error":{"code":"SecretNotFound",…}}`;
//! - tokens come from `POST /{tenant}/oauth2/v2.0/token` (client credentials, form body,
//!   scope `https://vault.azure.net/.default`) or the managed-identity endpoint
//!   `GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=…` with
//!   `Metadata: true`; [`AzureDouble::revoke_tokens`] makes every issued token invalid, as
//!   an expired or rotated token would be.
//!
//! Every request is recorded ([`AzureDouble::log`]) so tests can assert on the flow.

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
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

pub const TENANT: &str = "test-tenant";
pub const CLIENT_ID: &str = "warden-test-client";
pub const CLIENT_SECRET: &str = "client-secret-canary";
pub const RESOURCE: &str = "https://vault.azure.net";

/// One request as the double saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub authorized: bool,
    pub status: u16,
}

#[derive(Default)]
struct Inner {
    /// name → versions in order (version id, value).
    secrets: HashMap<String, Vec<(String, String)>>,
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
            .route("/metadata/identity/oauth2/token", get(managed_identity))
            .route(
                "/secrets/{name}",
                get(get_secret).put(put_secret).delete(delete_secret),
            )
            .route("/secrets/{name}/", get(get_secret))
            .route("/secrets/{name}/{version}", get(get_version))
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
        let version = next_version(&mut inner);
        inner
            .secrets
            .entry(name.to_owned())
            .or_default()
            .push((version.clone(), value.to_owned()));
        version
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

fn next_version(inner: &mut Inner) -> String {
    inner.counter += 1;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{:016x}{:016x}", nanos as u64, inner.counter)
}

fn issue(state: &Shared) -> String {
    let mut inner = state.lock().unwrap();
    let token = format!("tok-{}", next_version(&mut inner));
    inner.tokens.insert(token.clone());
    token
}

fn record(state: &Shared, method: &Method, uri: &Uri, authorized: bool, status: StatusCode) {
    state.lock().unwrap().log.push(Seen {
        method: method.to_string(),
        path: uri.path().to_owned(),
        authorized,
        status: status.as_u16(),
    });
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn kv_error(status: StatusCode, code: &str, message: &str) -> Response {
    json_response(status, json!({"error": {"code": code, "message": message}}))
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
    if !query.contains_key("api-version") {
        record(state, method, uri, authorized, StatusCode::BAD_REQUEST);
        return Err(Box::new(kv_error(
            StatusCode::BAD_REQUEST,
            "BadParameter",
            "The 'api-version' query parameter is missing",
        )));
    }
    if !authorized {
        record(state, method, uri, false, StatusCode::UNAUTHORIZED);
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

fn bundle(host: &str, name: &str, version: &str, value: &str) -> Value {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    json!({
        "value": value,
        "id": format!("https://{host}/secrets/{name}/{version}"),
        "attributes": {"enabled": true, "created": now, "updated": now,
                       "recoveryLevel": "Recoverable+Purgeable"},
        "tags": {}
    })
}

fn host(headers: &HeaderMap) -> String {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_owned()
}

async fn read(
    state: Shared,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    query: HashMap<String, String>,
    name: String,
    version: Option<String>,
) -> Response {
    if let Err(r) = gate(&state, &method, &uri, &headers, &query) {
        return *r;
    }
    let found = {
        let inner = state.lock().unwrap();
        inner
            .secrets
            .get(&name)
            .and_then(|versions| match &version {
                None => versions.last().cloned(),
                Some(v) => versions.iter().find(|(id, _)| id == v).cloned(),
            })
    };
    let response = match found {
        Some((id, value)) => {
            json_response(StatusCode::OK, bundle(&host(&headers), &name, &id, &value))
        }
        None => kv_error(
            StatusCode::NOT_FOUND,
            "SecretNotFound",
            &format!("A secret with (name/id) {name} was not found in this key vault."),
        ),
    };
    record(&state, &method, &uri, true, response.status());
    response
}

async fn get_secret(
    State(state): State<Shared>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    read(state, method, uri, headers, query, name, None).await
}

async fn get_version(
    State(state): State<Shared>,
    Path((name, version)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    read(state, method, uri, headers, query, name, Some(version)).await
}

async fn put_secret(
    State(state): State<Shared>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = gate(&state, &method, &uri, &headers, &query) {
        return *r;
    }
    let value = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("value").and_then(Value::as_str).map(str::to_owned));
    let response = match value {
        None => kv_error(StatusCode::BAD_REQUEST, "BadParameter", "value is required"),
        Some(value) => {
            let version = {
                let mut inner = state.lock().unwrap();
                let version = next_version(&mut inner);
                inner
                    .secrets
                    .entry(name.clone())
                    .or_default()
                    .push((version.clone(), value.clone()));
                version
            };
            json_response(
                StatusCode::OK,
                bundle(&host(&headers), &name, &version, &value),
            )
        }
    };
    record(&state, &method, &uri, true, response.status());
    response
}

async fn delete_secret(
    State(state): State<Shared>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = gate(&state, &method, &uri, &headers, &query) {
        return *r;
    }
    let removed = state.lock().unwrap().secrets.remove(&name);
    let response = match removed {
        Some(versions) => {
            let (id, _) = versions.last().cloned().unwrap_or_default();
            // Key Vault answers a DeletedSecretBundle, without the value.
            json_response(
                StatusCode::OK,
                json!({"id": format!("https://{}/secrets/{name}/{id}", host(&headers))}),
            )
        }
        None => kv_error(
            StatusCode::NOT_FOUND,
            "SecretNotFound",
            &format!("A secret with (name/id) {name} was not found in this key vault."),
        ),
    };
    record(&state, &method, &uri, true, response.status());
    response
}

async fn client_credentials(
    State(state): State<Shared>,
    Path(tenant): Path<String>,
    method: Method,
    uri: Uri,
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
    record(&state, &method, &uri, false, response.status());
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
    record(&state, &method, &uri, false, response.status());
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
