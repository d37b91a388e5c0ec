//! Limits of the gRPC listener (`[server]` in warden-cp.toml), and the accept loop and
//! connection wrapper that enforce those tonic does not:
//!
//! | limit | enforced by |
//! |---|---|
//! | `request_timeout`: deadline of a call until its response starts | tonic's `Server::timeout` (the shorter of it and the client's `grpc-timeout`). It covers reading the request message and the handler; a streaming call (`Sync.Watch`, `AuditStream.Subscribe`) is bound only until its stream starts, never cut while it streams |
//! | `handshake_timeout`: a connection must have sent its first request's headers (TLS handshake and HTTP/2 preface included) by then | [`Connection`] here: closed otherwise; the TLS handshake (done here, [`incoming`]) within it |
//! | `max_connections` | [`incoming`] here: past it, accepting waits (new connections queue in the kernel's backlog) |
//! | `concurrency_per_connection`: calls in flight on one connection | tonic's `concurrency_limit_per_connection` |
//! | `max_concurrent_streams`: HTTP/2 streams open on one connection | tonic's `max_concurrent_streams` (SETTINGS_MAX_CONCURRENT_STREAMS) |
//! | `max_header_list_bytes`: HTTP/2 header block size | tonic's `http2_max_header_list_size` |
//!
//! What tonic (hyper's HTTP/2 server) does not expose: a read timeout for the header block
//! of a request after the first on a connection, and a per-message read timeout inside a
//! client stream (the control plane has no client-streaming RPC). A connection that stays
//! open but sends nothing is kept alive only while it answers the server's HTTP/2 pings
//! (every 20 s, 10 s to answer); its streams are bounded by the two limits above and the
//! connections by `max_connections`.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::{Stream, StreamExt as _};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tonic::codegen::http;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::metrics::CpMetrics;
use crate::tls::{ClientCertificate, ServerTls};

/// Default deadline of a call until its response starts.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The shortest `request_timeout` accepted.
pub const MIN_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time a new connection has to send its first request's headers.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default cap on open gRPC connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default cap on calls in flight on one connection.
pub const DEFAULT_CONCURRENCY_PER_CONNECTION: usize = 64;
/// Default cap on HTTP/2 streams open on one connection.
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 128;
/// Default cap on an HTTP/2 header block.
pub const DEFAULT_MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;

/// The gRPC listener's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    pub request_timeout: Duration,
    pub handshake_timeout: Duration,
    pub max_connections: usize,
    pub concurrency_per_connection: usize,
    pub max_concurrent_streams: u32,
    pub max_header_list_bytes: u32,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            concurrency_per_connection: DEFAULT_CONCURRENCY_PER_CONNECTION,
            max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
            max_header_list_bytes: DEFAULT_MAX_HEADER_LIST_BYTES,
        }
    }
}

/// The limits as written (file or environment), each optional.
#[derive(Debug, Default)]
pub struct Settings {
    pub request_timeout: Option<String>,
    pub handshake_timeout: Option<String>,
    pub max_connections: Option<String>,
    pub concurrency_per_connection: Option<String>,
    pub max_concurrent_streams: Option<String>,
    pub max_header_list_bytes: Option<String>,
}

/// A limit that does not parse or is out of range (`field` is its `[server]` key).
#[derive(Debug)]
pub struct LimitError {
    pub field: &'static str,
    pub message: String,
}

impl ServerLimits {
    /// Validates `settings`, filling in the defaults.
    pub fn build(settings: Settings) -> Result<Self, LimitError> {
        let d = Self::default();
        Ok(Self {
            // An admin change waits up to 2 s for the nodes to apply it: well above that.
            request_timeout: duration(
                "request_timeout",
                settings.request_timeout,
                d.request_timeout,
                MIN_REQUEST_TIMEOUT,
            )?,
            handshake_timeout: duration(
                "handshake_timeout",
                settings.handshake_timeout,
                d.handshake_timeout,
                Duration::from_secs(1),
            )?,
            max_connections: count(
                "max_connections",
                settings.max_connections,
                d.max_connections as u64,
                1_000_000,
            )? as usize,
            concurrency_per_connection: count(
                "concurrency_per_connection",
                settings.concurrency_per_connection,
                d.concurrency_per_connection as u64,
                100_000,
            )? as usize,
            max_concurrent_streams: count(
                "max_concurrent_streams",
                settings.max_concurrent_streams,
                d.max_concurrent_streams.into(),
                100_000,
            )? as u32,
            max_header_list_bytes: count(
                "max_header_list_bytes",
                settings.max_header_list_bytes,
                d.max_header_list_bytes.into(),
                1 << 20,
            )?
            .max(4096) as u32,
        })
    }

    /// Applies the limits tonic enforces to `builder`.
    pub fn apply<L>(&self, builder: tonic::transport::Server<L>) -> tonic::transport::Server<L> {
        builder
            .timeout(self.request_timeout)
            .concurrency_limit_per_connection(self.concurrency_per_connection)
            .max_concurrent_streams(self.max_concurrent_streams)
            .http2_max_header_list_size(self.max_header_list_bytes)
    }
}

fn duration(
    field: &'static str,
    text: Option<String>,
    default: Duration,
    min: Duration,
) -> Result<Duration, LimitError> {
    let Some(text) = text else {
        return Ok(default);
    };
    let d = humantime::parse_duration(text.trim()).map_err(|e| LimitError {
        field,
        message: format!("`{text}`: {e}"),
    })?;
    if d < min || d > Duration::from_secs(3600) {
        return Err(LimitError {
            field,
            message: format!("must be between {} and 1h", humantime::format_duration(min)),
        });
    }
    Ok(d)
}

fn count(
    field: &'static str,
    text: Option<String>,
    default: u64,
    max: u64,
) -> Result<u64, LimitError> {
    let Some(text) = text else {
        return Ok(default);
    };
    match text.trim().parse::<u64>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(LimitError {
            field,
            message: format!("`{text}`: expected a whole number from 1 to {max}"),
        }),
    }
}

/// What tonic hands each request of a [`Connection`] (in its extensions): the TCP
/// addresses, the client certificate the connection presented (TLS with client
/// certificates, see [`crate::tls`]), and the flag that the connection has made its first
/// request.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    tcp: TcpConnectInfo,
    client: Option<Arc<ClientCertificate>>,
    started: Arc<AtomicBool>,
}

/// An accepted connection (its TLS handshake done, when the listener has TLS): holds its
/// place under `max_connections` until it closes, and fails its reads once
/// `handshake_timeout` has passed without a first request.
pub struct Connection {
    io: Io,
    info: PeerInfo,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    _permit: OwnedSemaphorePermit,
    _open: OpenGauge,
}

/// The bytes of a connection: in clear, or inside the TLS session the accept loop set up.
enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// Counts the connection in [`crate::metrics::GRPC_CONNECTIONS`] while it lives.
struct OpenGauge(CpMetrics);

impl OpenGauge {
    fn new(metrics: CpMetrics) -> Self {
        metrics.connections(1.0);
        Self(metrics)
    }
}

impl Drop for OpenGauge {
    fn drop(&mut self) {
        self.0.connections(-1.0);
    }
}

impl Connected for Connection {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

/// Delegates one `AsyncRead`/`AsyncWrite` method to the connection's stream.
macro_rules! on_io {
    ($io:expr, |$s:ident| $call:expr) => {
        match $io {
            Io::Plain($s) => {
                let $s = Pin::new($s);
                $call
            }
            Io::Tls($s) => {
                let $s = Pin::new(&mut **$s);
                $call
            }
        }
    };
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(deadline) = this.deadline.as_mut() {
            if this.info.started.load(Ordering::Acquire) {
                this.deadline = None;
            } else if deadline.as_mut().poll(cx).is_ready() {
                tracing::debug!(peer = ?this.info.tcp.remote_addr, "closing a connection that made no request within the handshake timeout");
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no request within the handshake timeout",
                )));
            }
        }
        on_io!(&mut this.io, |s| s.poll_read(cx, buf))
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        on_io!(&mut self.get_mut().io, |s| s.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        on_io!(&mut self.get_mut().io, |s| s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        on_io!(&mut self.get_mut().io, |s| s.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        on_io!(&mut self.get_mut().io, |s| s.poll_shutdown(cx))
    }
}

/// A connection whose TLS handshake is under way; `None` when it failed or timed out.
type Handshake = Pin<Box<dyn Future<Output = Option<Connection>> + Send>>;

/// What the accept loop carries from one connection to the next.
struct Accepting {
    listener: TcpListener,
    permits: Arc<Semaphore>,
    handshake: Duration,
    metrics: CpMetrics,
    tls: Option<Arc<ServerTls>>,
    handshakes: FuturesUnordered<Handshake>,
}

/// The connections `listener` accepts, at most `limits.max_connections` open at once
/// (handshakes included). With `tls`, each one is handed out once its TLS handshake is
/// done; handshakes run side by side, each bound by `handshake_timeout`.
pub fn incoming(
    listener: TcpListener,
    limits: ServerLimits,
    metrics: CpMetrics,
    tls: Option<Arc<ServerTls>>,
) -> Pin<Box<dyn Stream<Item = io::Result<Connection>> + Send>> {
    let state = Accepting {
        listener,
        permits: Arc::new(Semaphore::new(limits.max_connections)),
        handshake: limits.handshake_timeout,
        metrics,
        tls,
        handshakes: FuturesUnordered::new(),
    };
    Box::pin(futures::stream::unfold(state, |mut s| async move {
        loop {
            tokio::select! {
                Some(done) = s.handshakes.next(), if !s.handshakes.is_empty() => {
                    if let Some(connection) = done {
                        return Some((Ok(connection), s));
                    }
                }
                accepted = accept(&s.listener, &s.permits) => {
                    let (stream, permit) = accepted?;
                    let _ = stream.set_nodelay(true);
                    let opened = Opened {
                        info: PeerInfo {
                            tcp: stream.connect_info(),
                            client: None,
                            started: Arc::new(AtomicBool::new(false)),
                        },
                        deadline: Box::pin(tokio::time::sleep(s.handshake)),
                        permit,
                        open: OpenGauge::new(s.metrics.clone()),
                    };
                    match s.tls.as_ref().map(|tls| tls.acceptor()) {
                        None => return Some((Ok(opened.with(Io::Plain(stream))), s)),
                        Some(acceptor) => {
                            s.handshakes.push(Box::pin(handshake(acceptor, stream, opened)));
                        }
                    }
                }
            }
        }
    }))
}

/// Waits for a place under `max_connections`, then for the next connection; `None` only
/// when the semaphore is closed (never).
async fn accept(
    listener: &TcpListener,
    permits: &Arc<Semaphore>,
) -> Option<(TcpStream, OwnedSemaphorePermit)> {
    let permit = Arc::clone(permits).acquire_owned().await.ok()?;
    loop {
        match listener.accept().await {
            Ok((stream, _)) => return Some((stream, permit)),
            Err(error) => {
                // Out of file descriptors and the like: wait, then accept again.
                tracing::warn!(%error, "accepting a gRPC connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// A connection accepted, before its bytes are set up (in clear, or after the handshake).
struct Opened {
    info: PeerInfo,
    deadline: Pin<Box<tokio::time::Sleep>>,
    permit: OwnedSemaphorePermit,
    open: OpenGauge,
}

impl Opened {
    fn with(self, io: Io) -> Connection {
        Connection {
            io,
            info: self.info,
            deadline: Some(self.deadline),
            _permit: self.permit,
            _open: self.open,
        }
    }
}

/// Runs the TLS handshake on `stream` within the connection's deadline, and records the
/// client certificate it presented.
async fn handshake(
    acceptor: TlsAcceptor,
    stream: TcpStream,
    mut opened: Opened,
) -> Option<Connection> {
    let peer = opened.info.tcp.remote_addr;
    let tls = tokio::select! {
        result = acceptor.accept(stream) => match result {
            Ok(tls) => tls,
            Err(error) => {
                tracing::debug!(?peer, %error, "TLS handshake failed");
                return None;
            }
        },
        () = &mut opened.deadline => {
            tracing::debug!(?peer, "TLS handshake not done within the handshake timeout");
            return None;
        }
    };
    let leaf = tls.get_ref().1.peer_certificates().and_then(<[_]>::first);
    opened.info.client = match leaf.map(ClientCertificate::from_der) {
        None => None,
        Some(Ok(client)) => Some(Arc::new(client)),
        Some(Err(error)) => {
            tracing::debug!(?peer, %error, "unusable client certificate");
            return None;
        }
    };
    Some(opened.with(Io::Tls(Box::new(tls))))
}

/// The layer every request passes first: counts it, marks its connection as having made
/// a request (which ends the handshake deadline), gives it the TCP addresses that
/// `Request::remote_addr` reads and, when its connection presented one, the verified
/// [`ClientCertificate`] (read with [`client_certificate`]).
#[derive(Debug, Clone)]
pub struct EdgeLayer {
    metrics: CpMetrics,
}

impl EdgeLayer {
    pub fn new(metrics: CpMetrics) -> Self {
        Self { metrics }
    }
}

impl<S> tower::Layer<S> for EdgeLayer {
    type Service = Edge<S>;

    fn layer(&self, inner: S) -> Edge<S> {
        Edge {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// See [`EdgeLayer`].
#[derive(Debug, Clone)]
pub struct Edge<S> {
    inner: S,
    metrics: CpMetrics,
}

impl<S, B> tower::Service<http::Request<B>> for Edge<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        self.metrics.rpc(request.uri().path());
        if let Some(peer) = request.extensions().get::<PeerInfo>().cloned() {
            peer.started.store(true, Ordering::Release);
            request.extensions_mut().insert(peer.tcp);
            if let Some(client) = peer.client {
                request.extensions_mut().insert(client);
            }
        }
        self.inner.call(request)
    }
}

/// The verified client certificate the connection of `request` presented, if any.
pub fn client_certificate<T>(request: &tonic::Request<T>) -> Option<&ClientCertificate> {
    request
        .extensions()
        .get::<Arc<ClientCertificate>>()
        .map(|c| &**c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_default_and_are_validated_by_field() {
        assert_eq!(
            ServerLimits::build(Settings::default()).unwrap(),
            ServerLimits::default()
        );
        let l = ServerLimits::build(Settings {
            request_timeout: Some("15s".into()),
            max_connections: Some("10".into()),
            ..Settings::default()
        })
        .unwrap();
        assert_eq!(l.request_timeout, Duration::from_secs(15));
        assert_eq!(l.max_connections, 10);
        for (settings, field) in [
            (
                Settings {
                    request_timeout: Some("1s".into()),
                    ..Settings::default()
                },
                "request_timeout",
            ),
            (
                Settings {
                    handshake_timeout: Some("1ms".into()),
                    ..Settings::default()
                },
                "handshake_timeout",
            ),
            (
                Settings {
                    max_connections: Some("0".into()),
                    ..Settings::default()
                },
                "max_connections",
            ),
            (
                Settings {
                    max_concurrent_streams: Some("-1".into()),
                    ..Settings::default()
                },
                "max_concurrent_streams",
            ),
        ] {
            assert_eq!(ServerLimits::build(settings).unwrap_err().field, field);
        }
    }
}
