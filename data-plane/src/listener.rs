//! The node's HTTP listeners: the accept loop and the life of each connection, in place of
//! `axum::serve` (which has no timer and no cap).
//!
//! [`serve`] accepts connections up to [`Limits::max_connections`] (beyond it a new
//! connection is closed at once and counted) and serves each with hyper's HTTP/1.1 or, for
//! a client that opens with the HTTP/2 preface (h2c), HTTP/2. Every connection is in one of
//! three phases ([`Phase`]), watched by reading the socket and by the requests it carries:
//!
//! - **head**: from accept, or from the first byte after an idle spell, until a request
//!   head is complete — bounded by [`Limits::header_read_timeout`] (a slowloris client that
//!   sends a header line a second is closed when it runs out);
//! - **busy**: while at least one request is in flight, its response body included — no
//!   connection timer at all, so an SSE stream may run for minutes (the request body has
//!   its own timeout in the handler, the upstream exchange `--upstream-deadline`);
//! - **idle**: after the last response ended — bounded by [`Limits::idle_timeout`], after
//!   which the connection is shut down gracefully.
//!
//! In-flight requests are capped across the listener ([`Limits::max_concurrent_requests`]):
//! one beyond the cap is answered at once with 503 `overloaded` and `Retry-After: 1` in the
//! endpoint's error shape (an Anthropic `overloaded_error` on `/v1/messages`), which both
//! SDKs retry and a load balancer reads as "try another node"; a 429 would tell the caller
//! it exceeded its own limit, which it did not. `/healthz` is never refused, so that a busy
//! node is not taken for a dead one. A request holds its slot until its response body has
//! ended.
//!
//! On shutdown the loop stops accepting, asks every connection to finish (idle ones close,
//! in-flight requests run to their end) and returns when all have.
//!
//! With [`tls::Https`] the listener serves HTTPS only: each connection's task makes the TLS
//! handshake first, within the head phase's timer (a client that opens TCP and never
//! finishes its handshake is closed at the header-read timeout, and the accept loop never
//! waits for it), then serves HTTP/2 or HTTP/1.1 as ALPN agreed.

pub mod tls;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Request, Response};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

use crate::error::ApiError;
use crate::translate::Wire;

/// Longest wait for a complete request head (from accept, or from the first byte after an
/// idle spell).
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a keep-alive connection may sit idle between two requests.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Open client connections per node: twice the 5,000 concurrent streams of the scale test,
/// room for idle keep-alive connections beside them. Each in-flight request also holds an
/// upstream socket, so the open-files limit must exceed this plus the concurrency cap.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// In-flight requests per node (streams included until their last byte): 5,000 concurrent
/// slow streams with 60 % to spare; with [`DEFAULT_MAX_CONNECTIONS`] it keeps a node
/// under an open-files limit of 20,000 (10,000 client + 8,192 upstream sockets).
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 8_192;
/// How long a connection shut down for idleness may take to close before it is dropped.
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(1);
/// Pause after an accept error that is not the peer's (e.g. out of file descriptors).
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(250);

/// Timeouts and caps of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub max_concurrent_requests: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_concurrent_requests: DEFAULT_MAX_CONCURRENT_REQUESTS,
        }
    }
}

impl Limits {
    /// The ops listener's: the API listener's timeouts, and caps sized for scrapers and
    /// probes, so that a flood there cannot take file descriptors from clients.
    pub fn ops(api: &Limits) -> Self {
        Self {
            max_connections: 64,
            max_concurrent_requests: 32,
            ..*api
        }
    }
}

/// Serves `router` on `listener` under `limits` (over TLS with `https`) until `shutdown`,
/// then waits for the connections to finish. `name` labels the listener's metrics (`api`,
/// `ops`).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    https: Option<tls::Https>,
    name: &'static str,
    shutdown: CancellationToken,
) {
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let requests = Arc::new(Semaphore::new(limits.max_concurrent_requests));
    let tracker = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = shutdown.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) if is_peer_error(&e) => continue,
            Err(e) => {
                tracing::warn!(listener = name, error = %e, "accept failed; pausing");
                tokio::select! {
                    () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => continue,
                    () = shutdown.cancelled() => break,
                }
            }
        };
        let Ok(slot) = Arc::clone(&connections).try_acquire_owned() else {
            metrics::counter!(crate::metrics::HTTP_CONNECTIONS_REFUSED, "listener" => name)
                .increment(1);
            tracing::debug!(listener = name, peer = %peer, "connection cap reached; connection closed");
            drop(stream);
            continue;
        };
        // Streams go out event by event: no Nagle delay on client connections.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
        let connection = Connection {
            router: router.clone(),
            requests: Arc::clone(&requests),
            limits,
            hsts: None,
            name,
            peer,
            shutdown: shutdown.clone(),
        };
        tracker.spawn(connection.run(stream, https.clone(), slot));
    }
    drop(listener);
    tracker.close();
    tracker.wait().await;
}

/// The HTTP/2 connection preface (RFC 9113, section 3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Pause between two peeks while the first bytes are a strict prefix of the HTTP/2
/// preface (a peek leaves the socket readable, so waiting on readiness would spin).
const SNIFF_PAUSE: Duration = Duration::from_millis(2);

/// The HTTP version of a plain-text connection by its first bytes, left unread: HTTP/2 if
/// they are the preface, HTTP/1.1 as soon as one differs; `None` if the peer closed first.
/// An HTTP/1 request line differs by its second byte at the latest.
async fn sniff_version(stream: &TcpStream) -> std::io::Result<Option<Alpn>> {
    let mut buf = [0u8; H2_PREFACE.len()];
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        if buf[..n] != H2_PREFACE[..n] {
            return Ok(Some(Alpn::Http1));
        }
        if n == H2_PREFACE.len() {
            return Ok(Some(Alpn::H2));
        }
        tokio::time::sleep(SNIFF_PAUSE).await;
    }
}

/// Accept errors caused by one peer (it reset before we accepted): the next accept is fine.
fn is_peer_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

/// Where a connection is between requests; see the module docs.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Waiting for a request head since this instant.
    Head(Instant),
    /// This many requests in flight.
    Busy(usize),
    /// The last response ended at this instant.
    Idle(Instant),
}

/// Which timer closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expired {
    HeaderRead,
    Idle,
}

/// One connection's phase, moved by its socket reads and its requests.
#[derive(Debug)]
struct Watch {
    phase: Mutex<Phase>,
    changed: Notify,
}

impl Watch {
    fn new() -> Self {
        Self {
            phase: Mutex::new(Phase::Head(Instant::now())),
            changed: Notify::new(),
        }
    }

    fn phase(&self) -> MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Bytes arrived: after an idle spell they begin the next request head.
    fn on_read(&self) {
        let mut phase = self.phase();
        if let Phase::Idle(_) = *phase {
            *phase = Phase::Head(Instant::now());
            drop(phase);
            self.changed.notify_one();
        }
    }

    fn request_started(self: &Arc<Self>) -> InFlight {
        {
            let mut phase = self.phase();
            *phase = match *phase {
                Phase::Busy(n) => Phase::Busy(n + 1),
                Phase::Head(_) | Phase::Idle(_) => Phase::Busy(1),
            };
        }
        self.changed.notify_one();
        InFlight {
            watch: Arc::clone(self),
        }
    }

    fn request_ended(&self) {
        {
            let mut phase = self.phase();
            *phase = match *phase {
                Phase::Busy(n) if n > 1 => Phase::Busy(n - 1),
                _ => Phase::Idle(Instant::now()),
            };
        }
        self.changed.notify_one();
    }

    /// When the current phase's timer runs out, and which one it is.
    fn deadline(&self, limits: &Limits) -> Option<(Instant, Expired)> {
        match *self.phase() {
            Phase::Head(since) => Some((since + limits.header_read_timeout, Expired::HeaderRead)),
            Phase::Idle(since) => Some((since + limits.idle_timeout, Expired::Idle)),
            Phase::Busy(_) => None,
        }
    }
}

/// A request in flight on its connection: dropped when its response body has ended (or
/// was dropped with the connection).
#[derive(Debug)]
struct InFlight {
    watch: Arc<Watch>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.watch.request_ended();
    }
}

/// A response body that holds its request's place (on the connection, and in the
/// listener's concurrency cap) until it has been sent.
struct Held {
    inner: Body,
    _in_flight: InFlight,
    _slot: Option<OwnedSemaphorePermit>,
}

impl hyper::body::Body for Held {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The socket (or the TLS stream over it), telling its [`Watch`] when bytes arrive.
struct WatchedIo<S> {
    inner: S,
    watch: Arc<Watch>,
}

impl<S: AsyncRead + Unpin> AsyncRead for WatchedIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.watch.on_read();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WatchedIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Which HTTP version a connection speaks: as ALPN agreed on TLS, by its first bytes on
/// plain TCP ([`sniff_version`]).
#[derive(Debug, Clone, Copy)]
enum Alpn {
    H2,
    Http1,
    /// A TLS client that offered no ALPN: hyper tells by the preface.
    Either,
}

/// One accepted connection and what it needs to serve.
struct Connection {
    router: Router,
    requests: Arc<Semaphore>,
    limits: Limits,
    /// `Strict-Transport-Security` for every answer (HTTPS with HSTS on).
    hsts: Option<HeaderValue>,
    name: &'static str,
    peer: SocketAddr,
    shutdown: CancellationToken,
}

impl Connection {
    /// Serves the connection (after its TLS handshake, with `https`) until it ends, a timer
    /// closes it, or shutdown has drained it. `slot` is its place under the connection cap.
    async fn run(self, stream: TcpStream, https: Option<tls::Https>, slot: OwnedSemaphorePermit) {
        let _slot = slot;
        let name = self.name;
        metrics::gauge!(crate::metrics::HTTP_CONNECTIONS, "listener" => name).increment(1.0);
        // The head phase starts at accept: handshake and first request head share its timer.
        let watch = Arc::new(Watch::new());
        match https {
            None => self.run_plain(stream, watch).await,
            // Boxed: the handshake and the TLS stream would otherwise size every
            // connection's task, plain ones included (8.6 KiB instead of 3 KiB).
            Some(https) => Box::pin(self.run_tls(stream, watch, https)).await,
        }
        metrics::gauge!(crate::metrics::HTTP_CONNECTIONS, "listener" => name).decrement(1.0);
    }

    /// Tells the HTTP version by the client's first bytes, read without consuming them
    /// (`MSG_PEEK`), within the head phase's timer, then serves the connection. hyper-util's
    /// own detection reads those bytes into a buffer it hands back first: hyper then reads
    /// the head in two reads and its read buffer doubles to 16 KiB for the connection's life.
    async fn run_plain(self, stream: TcpStream, watch: Arc<Watch>) {
        let name = self.name;
        let deadline = Instant::now() + self.limits.header_read_timeout;
        let sniffed = tokio::select! {
            sniffed = tokio::time::timeout_at(deadline, sniff_version(&stream)) => sniffed,
            () = self.shutdown.cancelled() => return,
        };
        match sniffed {
            Ok(Ok(Some(alpn))) => self.serve(stream, watch, alpn).await,
            // Closed before its first byte.
            Ok(Ok(None)) => {}
            Ok(Err(e)) => {
                tracing::debug!(listener = name, peer = %self.peer, error = %e, "connection ended with an error");
            }
            Err(_) => {
                metrics::counter!(crate::metrics::HTTP_CONNECTIONS_TIMED_OUT, "listener" => name, "timeout" => "header_read").increment(1);
                tracing::debug!(listener = name, peer = %self.peer, timeout = "header_read", "connection timed out; closing it");
            }
        }
    }

    /// Makes the TLS handshake within the head phase's timer, then serves the connection as
    /// ALPN agreed.
    async fn run_tls(mut self, stream: TcpStream, watch: Arc<Watch>, https: tls::Https) {
        let name = self.name;
        let deadline = Instant::now() + self.limits.header_read_timeout;
        let handshake = tokio::time::timeout_at(deadline, https.acceptor.accept(stream));
        let shutdown = self.shutdown.clone();
        let accepted = tokio::select! {
            accepted = handshake => Some(accepted),
            () = shutdown.cancelled() => None,
        };
        match accepted {
            Some(Ok(Ok(stream))) => {
                let alpn = match stream.get_ref().1.alpn_protocol() {
                    Some(b"h2") => Alpn::H2,
                    Some(b"http/1.1") => Alpn::Http1,
                    _ => Alpn::Either,
                };
                self.hsts = https.hsts;
                self.serve(stream, watch, alpn).await;
            }
            Some(Ok(Err(e))) => {
                metrics::counter!(crate::metrics::HTTP_TLS_HANDSHAKE_FAILURES, "listener" => name)
                    .increment(1);
                tracing::debug!(listener = name, peer = %self.peer, error = %e, "tls handshake failed");
            }
            Some(Err(_)) => {
                metrics::counter!(crate::metrics::HTTP_CONNECTIONS_TIMED_OUT, "listener" => name, "timeout" => "header_read").increment(1);
                tracing::debug!(listener = name, peer = %self.peer, timeout = "header_read", "tls handshake not done in time; closing the connection");
            }
            None => {}
        }
    }

    /// Serves HTTP on `stream` (`alpn`: which version, if agreed) until the connection
    /// ends, a timer closes it, or shutdown has drained it.
    async fn serve<S>(self, stream: S, watch: Arc<Watch>, alpn: Alpn)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let name = self.name;
        let io = TokioIo::new(WatchedIo {
            inner: stream,
            watch: Arc::clone(&watch),
        });
        let limits = self.limits;
        let shutdown = self.shutdown.clone();
        let peer = self.peer;
        let service = {
            let watch = Arc::clone(&watch);
            hyper::service::service_fn(move |request: Request<Incoming>| {
                let in_flight = watch.request_started();
                self.request(request, in_flight)
            })
        };
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // The connection's own timers (above) bound the head; hyper's would also run
        // between requests and cut keep-alive at the header timeout.
        builder.http1().header_read_timeout(None);
        let builder = match alpn {
            Alpn::H2 => builder.http2_only(),
            Alpn::Http1 => builder.http1_only(),
            Alpn::Either => builder,
        };
        let connection = builder.serve_connection(io, service);
        tokio::pin!(connection);
        let mut draining = false;
        let mut close_by: Option<Instant> = None;
        loop {
            let changed = watch.changed.notified();
            let timer = if close_by.is_some() {
                None
            } else {
                watch.deadline(&limits)
            };
            let wake = match (close_by, timer) {
                (Some(at), _) | (None, Some((at, _))) => Some(at),
                (None, None) => None,
            };
            tokio::select! {
                ended = connection.as_mut() => {
                    if let Err(e) = ended {
                        tracing::debug!(listener = name, peer = %peer, error = %e, "connection ended with an error");
                    }
                    break;
                }
                () = shutdown.cancelled(), if !draining => {
                    draining = true;
                    connection.as_mut().graceful_shutdown();
                }
                () = changed => {}
                () = sleep_until(wake) => {
                    if close_by.is_some() {
                        break;
                    }
                    // The phase may have moved since the timer was set.
                    match watch.deadline(&limits) {
                        Some((at, expired)) if at <= Instant::now() => {
                            let label = match expired {
                                Expired::HeaderRead => "header_read",
                                Expired::Idle => "idle",
                            };
                            metrics::counter!(crate::metrics::HTTP_CONNECTIONS_TIMED_OUT, "listener" => name, "timeout" => label).increment(1);
                            tracing::debug!(listener = name, peer = %peer, timeout = label, "connection timed out; closing it");
                            if expired == Expired::HeaderRead {
                                break;
                            }
                            if !draining {
                                draining = true;
                                connection.as_mut().graceful_shutdown();
                            }
                            close_by = Some(Instant::now() + IDLE_CLOSE_GRACE);
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    /// One request: past the concurrency cap (but `/healthz`) it is answered 503 at once;
    /// else the router answers it, and its response body holds its place until sent.
    fn request(
        &self,
        mut request: Request<Incoming>,
        in_flight: InFlight,
    ) -> impl Future<Output = Result<Response<Held>, Infallible>> + Send + use<> {
        let router = self.router.clone();
        let requests = Arc::clone(&self.requests);
        let hsts = self.hsts.clone();
        let name = self.name;
        request.extensions_mut().insert(ConnectInfo(self.peer));
        async move {
            let slot = if request.uri().path() == "/healthz" {
                None
            } else {
                match requests.try_acquire_owned() {
                    Ok(slot) => Some(slot),
                    Err(_) => {
                        metrics::counter!(crate::metrics::HTTP_REQUESTS_OVERLOADED, "listener" => name)
                            .increment(1);
                        let wire = if request.uri().path().starts_with("/v1/messages") {
                            Wire::Anthropic
                        } else {
                            Wire::OpenAi
                        };
                        let response = ApiError::overloaded().render(wire);
                        return Ok(hold(response, hsts, in_flight, None));
                    }
                }
            };
            let response = match router.oneshot(request).await {
                Ok(r) => r,
                Err(never) => match never {},
            };
            Ok(hold(response, hsts, in_flight, slot))
        }
    }
}

/// `response` with `hsts` set, holding its request's places until its body is sent.
fn hold(
    mut response: axum::response::Response,
    hsts: Option<HeaderValue>,
    in_flight: InFlight,
    slot: Option<OwnedSemaphorePermit>,
) -> Response<Held> {
    if let Some(hsts) = hsts {
        response
            .headers_mut()
            .insert(axum::http::header::STRICT_TRANSPORT_SECURITY, hsts);
    }
    response.map(|inner| Held {
        inner,
        _in_flight: in_flight,
        _slot: slot,
    })
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
