//! Serving the router over TCP with hyper directly, because `axum::serve` sets no header-read
//! timeout and has no cap on open connections.
//!
//! The header-read timeout is a watchdog per connection rather than hyper's own: hyper arms a
//! fresh timer (a boxed sleep registered in the runtime's timer wheel, then cancelled) for every
//! request on a keep-alive connection, which cost about a tenth of a small request's time. The
//! watchdog wakes once per timeout period and reads one atomic the connection's service updates.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tower::Service;
use tracing::{debug, warn};

/// Connection-level limits.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// A connection must send a request's headers within this long of opening or of its last
    /// response (so also the idle keep-alive time), or it is closed: slow or silent clients
    /// cannot hold connections.
    pub header_read_timeout: Duration,
    /// Most connections open at once; beyond it new connections are closed on accept.
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self { header_read_timeout: Duration::from_secs(10), max_connections: 4096 }
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then stops accepting, lets open
/// connections finish their requests and returns.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let http = hyper::server::conn::http1::Builder::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            debug!(limit = limits.max_connections, "connection limit reached; closing a new connection");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let clock = Arc::new(ConnClock::new());
        let service = {
            let (app, clock) = (app.clone(), clock.clone());
            hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                clock.busy();
                let response = app.clone().call(req);
                let clock = clock.clone();
                async move {
                    let response = response.await;
                    clock.idle();
                    response
                }
            })
        };
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        let timeout = limits.header_read_timeout;
        tokio::spawn(async move {
            tokio::select! {
                biased;
                ended = conn => if let Err(e) = ended {
                    debug!(error = %e, "connection ended with an error");
                },
                () = header_watchdog(&clock, timeout) => {
                    debug!(?timeout, "no request headers within the header-read timeout; closing the connection");
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// When a connection last became idle (opened, or produced a response): `BUSY` while a request
/// is being served, otherwise milliseconds since `opened`.
struct ConnClock {
    opened: Instant,
    idle_since_ms: AtomicU64,
}

const BUSY: u64 = u64::MAX;

impl ConnClock {
    fn new() -> Self {
        Self { opened: Instant::now(), idle_since_ms: AtomicU64::new(0) }
    }

    /// A request's headers have arrived.
    fn busy(&self) {
        self.idle_since_ms.store(BUSY, Ordering::Relaxed);
    }

    /// A response is ready; the connection waits for the next request's headers from now.
    fn idle(&self) {
        let ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(BUSY - 1);
        self.idle_since_ms.store(ms, Ordering::Relaxed);
    }

    fn idle_since(&self) -> Option<Instant> {
        match self.idle_since_ms.load(Ordering::Relaxed) {
            BUSY => None,
            ms => Some(self.opened + Duration::from_millis(ms)),
        }
    }
}

/// Completes once the connection has been idle (no request being served) for `timeout`: it
/// then gets closed. Checks at most once per `timeout` while requests keep coming.
async fn header_watchdog(clock: &ConnClock, timeout: Duration) {
    let sleep = tokio::time::sleep_until(clock.opened + timeout);
    tokio::pin!(sleep);
    loop {
        sleep.as_mut().await;
        let next = match clock.idle_since() {
            None => Instant::now() + timeout,
            Some(since) if since.elapsed() >= timeout => return,
            Some(since) => since + timeout,
        };
        sleep.as_mut().reset(next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_millis(200);
    /// Generous: the watchdog must fire, but this machine may be slow.
    const LATE: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn the_watchdog_fires_a_timeout_after_the_last_response_and_never_while_busy() {
        let clock = Arc::new(ConnClock::new());
        let watchdog = tokio::spawn({
            let clock = clock.clone();
            async move { header_watchdog(&clock, TIMEOUT).await }
        });
        // A request that takes four timeouts: the connection is not idle meanwhile.
        clock.busy();
        tokio::time::sleep(TIMEOUT * 4).await;
        assert!(!watchdog.is_finished(), "fired while a request was being served");
        clock.idle();
        let idle_at = Instant::now();
        tokio::time::timeout(LATE, watchdog).await.expect("never fired").unwrap();
        assert!(idle_at.elapsed() >= TIMEOUT, "fired {:?} after the response", idle_at.elapsed());
    }

    #[tokio::test]
    async fn a_connection_that_never_sends_headers_is_closed_one_timeout_after_opening() {
        let clock = ConnClock::new();
        tokio::time::timeout(LATE, header_watchdog(&clock, TIMEOUT)).await.expect("never fired");
        assert!(clock.opened.elapsed() >= TIMEOUT);
    }
}
