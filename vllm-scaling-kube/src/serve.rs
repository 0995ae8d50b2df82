//! The controller's HTTP endpoint: `/metrics` (OpenMetrics text), `/healthz` (the process
//! runs) and `/readyz` (the first list of policies has arrived).
//!
//! The kubelet restarts the pod when `/healthz` stops answering, so no client may starve
//! it: a client gets [`ServeOptions::header_read_timeout`] to send its request headers;
//! at most [`ServeOptions::max_connections`] connections are open, and a new one closes
//! the oldest (every response is in memory and written at once, so the oldest connection
//! is an idle or slow one); an accept error (such as running out of file descriptors)
//! backs off instead of spinning.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use crate::error::Error;
use crate::telemetry::ControllerMetrics;

/// The OpenMetrics content type `prometheus-client` writes.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Limits of the HTTP endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServeOptions {
    /// How long a client has to send a request's headers, from the start of the request
    /// (default 5 s); then the connection is closed.
    pub header_read_timeout: Duration,
    /// The most connections open at once (default 64); a new one closes the oldest.
    pub max_connections: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self { header_read_timeout: Duration::from_secs(5), max_connections: 64 }
    }
}

impl ServeOptions {
    /// Sets the header-read timeout (builder style).
    #[must_use]
    pub const fn with_header_read_timeout(mut self, timeout: Duration) -> Self {
        self.header_read_timeout = timeout;
        self
    }

    /// Sets the connection cap (builder style; at least 1).
    #[must_use]
    pub const fn with_max_connections(mut self, max: usize) -> Self {
        self.max_connections = if max == 0 { 1 } else { max };
        self
    }
}

fn respond(
    req: &Request<hyper::body::Incoming>,
    metrics: &ControllerMetrics,
    ready: &AtomicBool,
) -> Response<Full<Bytes>> {
    let (code, content_type, body) = match req.uri().path() {
        "/metrics" => (StatusCode::OK, OPENMETRICS, metrics.encode()),
        "/healthz" | "/livez" => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
        "/readyz" if ready.load(Ordering::SeqCst) => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
        "/readyz" => {
            (StatusCode::SERVICE_UNAVAILABLE, "text/plain", "the policy list has not arrived yet\n".to_owned())
        }
        _ => (StatusCode::NOT_FOUND, "text/plain", "not found: try /metrics, /healthz or /readyz\n".to_owned()),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = code;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    resp
}

/// Binds `addr` with the default [`ServeOptions`]; see [`bind_with`].
///
/// # Errors
/// When the address cannot be bound.
pub async fn bind(
    addr: SocketAddr,
    metrics: Arc<ControllerMetrics>,
    ready: Arc<AtomicBool>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(SocketAddr, impl Future<Output = ()> + Send), Error> {
    bind_with(addr, ServeOptions::default(), metrics, ready, shutdown).await
}

/// Binds `addr`; returns the bound address and a future that serves until `shutdown`
/// resolves (then open connections are closed).
///
/// # Errors
/// When the address cannot be bound.
pub async fn bind_with(
    addr: SocketAddr,
    options: ServeOptions,
    metrics: Arc<ControllerMetrics>,
    ready: Arc<AtomicBool>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(SocketAddr, impl Future<Output = ()> + Send), Error> {
    let listener = TcpListener::bind(addr).await.map_err(|source| Error::Serve { addr, source })?;
    let bound = listener.local_addr().map_err(|source| Error::Serve { addr, source })?;
    let serve = serve_loop(listener, options, metrics, ready, shutdown);
    Ok((bound, serve))
}

/// Delays between failed accepts: doubling from 5 ms to 1 s, reset by a success. A
/// failing accept (EMFILE, ENFILE, ENOBUFS) fails again at once, so retrying without a
/// delay spins a core and starves the tasks that would free the descriptors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AcceptBackoff {
    next: Duration,
}

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(5);
    const MAX: Duration = Duration::from_secs(1);

    pub(crate) const fn new() -> Self {
        Self { next: Self::FIRST }
    }

    /// The delay before the next accept after a failed one.
    pub(crate) fn failed(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        delay
    }

    /// An accept succeeded.
    pub(crate) fn succeeded(&mut self) {
        self.next = Self::FIRST;
    }
}

/// Where connections come from (a listener; a failing stand-in in tests).
pub(crate) trait Accept: Send {
    /// The next connection.
    fn accept(&mut self) -> impl Future<Output = std::io::Result<TcpStream>> + Send;
}

impl Accept for TcpListener {
    async fn accept(&mut self) -> std::io::Result<TcpStream> {
        TcpListener::accept(self).await.map(|(stream, _)| stream)
    }
}

async fn serve_loop(
    mut listener: impl Accept,
    options: ServeOptions,
    metrics: Arc<ControllerMetrics>,
    ready: Arc<AtomicBool>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    tokio::pin!(shutdown);
    let mut backoff = AcceptBackoff::new();
    // Open connections by age; each one's task ends when its sender is used or dropped.
    let mut open: BTreeMap<u64, oneshot::Sender<()>> = BTreeMap::new();
    let mut next_id = 0u64;
    let max_connections = options.max_connections.max(1);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = &mut shutdown => break,
        };
        let stream = match accepted {
            Ok(stream) => {
                backoff.succeeded();
                stream
            }
            Err(e) => {
                let delay = backoff.failed();
                tracing::warn!(error = %e, retry_in = ?delay, "accepting a metrics/health connection failed");
                tokio::select! {
                    () = tokio::time::sleep(delay) => continue,
                    () = &mut shutdown => break,
                }
            }
        };
        open.retain(|_, closed| !closed.is_closed());
        while open.len() >= max_connections {
            let Some((_, oldest)) = open.pop_first() else { break };
            let _ = oldest.send(());
        }
        let (evict, evicted) = oneshot::channel();
        open.insert(next_id, evict);
        next_id += 1;
        let metrics = metrics.clone();
        let ready = ready.clone();
        let header_read_timeout = options.header_read_timeout;
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let resp = respond(&req, &metrics, &ready);
                async move { Ok::<_, Infallible>(resp) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout)
                .serve_connection(TokioIo::new(stream), service);
            // Evicted (or the server stopped): dropping the connection closes it.
            tokio::select! {
                _ = connection => {}
                _ = evicted => {}
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_backoff_doubles_to_a_second_and_resets() {
        let mut b = AcceptBackoff::new();
        let delays: Vec<u64> = (0..10).map(|_| b.failed().as_millis() as u64).collect();
        assert_eq!(delays, [5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        b.succeeded();
        assert_eq!(b.failed(), Duration::from_millis(5));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failing_accepts_back_off_instead_of_spinning() {
        // EMFILE on every accept, as when the process is out of file descriptors.
        struct OutOfFds(Arc<std::sync::atomic::AtomicUsize>);
        impl Accept for OutOfFds {
            fn accept(&mut self) -> impl Future<Output = std::io::Result<TcpStream>> + Send {
                self.0.fetch_add(1, Ordering::SeqCst);
                std::future::ready(Err(std::io::Error::from_raw_os_error(24)))
            }
        }
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let accept = OutOfFds(calls.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let serve = tokio::spawn(serve_loop(
            accept,
            ServeOptions::default(),
            Arc::new(ControllerMetrics::new()),
            Arc::new(AtomicBool::new(true)),
            async move {
                let _ = stopped.await;
            },
        ));
        tokio::time::sleep(Duration::from_millis(400)).await;
        let n = calls.load(Ordering::SeqCst);
        // 5 + 10 + 20 + 40 + 80 + 160 ms: about 7 accepts in 400 ms (a spinning loop makes
        // millions). The shutdown still ends the loop while it waits.
        assert!((3..=12).contains(&n), "{n} accepts in 400 ms");
        let _ = stop.send(());
        tokio::time::timeout(Duration::from_secs(2), serve).await.expect("the loop stops").unwrap();
    }

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    async fn start(options: ServeOptions) -> (SocketAddr, oneshot::Sender<()>) {
        let (stop, stopped) = oneshot::channel::<()>();
        let (addr, serve) = bind_with(
            "127.0.0.1:0".parse().unwrap(),
            options,
            Arc::new(ControllerMetrics::new()),
            Arc::new(AtomicBool::new(true)),
            async move {
                let _ = stopped.await;
            },
        )
        .await
        .unwrap();
        tokio::spawn(serve);
        (addr, stop)
    }

    /// One request on a new connection; the whole response.
    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(2), c.read_to_end(&mut out)).await.expect("answered in time").unwrap();
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Whether the server closed `c` within `within` (EOF or a reset).
    async fn closed(c: &mut TcpStream, within: Duration) -> bool {
        let mut buf = [0u8; 64];
        matches!(tokio::time::timeout(within, c.read(&mut buf)).await, Ok(Ok(0) | Err(_)))
    }

    #[tokio::test]
    async fn a_slowloris_client_is_dropped_and_healthz_still_answers() {
        let (addr, _stop) = start(ServeOptions::default().with_header_read_timeout(Duration::from_millis(300))).await;
        let mut slow = TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n").await.unwrap();
        let started = std::time::Instant::now();
        // One more header line every 100 ms, never the blank line that ends them.
        let trickle = async {
            for i in 0..30 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if slow.write_all(format!("X-{i}: y\r\n").as_bytes()).await.is_err() {
                    break;
                }
                if closed(&mut slow, Duration::from_millis(1)).await {
                    break;
                }
            }
        };
        let (_, health) = tokio::join!(trickle, async {
            tokio::time::sleep(Duration::from_millis(150)).await;
            get(addr, "/healthz").await
        });
        assert!(health.starts_with("HTTP/1.1 200"), "{health}");
        assert!(started.elapsed() < Duration::from_secs(2), "the slow client was kept {:?}", started.elapsed());
    }

    #[tokio::test]
    async fn connections_above_the_cap_close_the_oldest_and_healthz_answers() {
        let (addr, _stop) = start(ServeOptions::default().with_max_connections(3)).await;
        let mut idle = Vec::new();
        for _ in 0..5 {
            idle.push(TcpStream::connect(addr).await.unwrap());
            // Accepted in order, so "oldest" is well defined.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let health = get(addr, "/healthz").await;
        assert!(health.starts_with("HTTP/1.1 200"), "{health}");
        // The cap held: the three oldest idle connections were closed, the two newest
        // were not (three open: those two and the health check).
        for (i, c) in idle.iter_mut().enumerate() {
            let was_closed = closed(c, Duration::from_millis(300)).await;
            assert_eq!(was_closed, i < 3, "connection {i}");
        }
        assert!(get(addr, "/metrics").await.starts_with("HTTP/1.1 200"));
    }
}
