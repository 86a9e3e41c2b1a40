//! A pausable TCP proxy on loopback, to stall one client's connections to the API server (a
//! network partition that only that client sees) while everything else keeps working.
//!
//! TLS passes through untouched: the client still talks to the API server, whose certificate
//! names 127.0.0.1, so only the port in its kubeconfig changes.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;

/// What a pause holds back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pause {
    /// Nothing is forwarded either way.
    Both,
    /// Requests are held but responses and watch events still arrive: the client keeps seeing
    /// changes, so it starts work whose requests then stall.
    ClientToServer,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    ClientToServer,
    ServerToClient,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Flowing,
    Paused(Pause),
}

impl Mode {
    fn holds(self, direction: Direction) -> bool {
        match self {
            Mode::Flowing => false,
            Mode::Paused(Pause::Both) => true,
            Mode::Paused(Pause::ClientToServer) => direction == Direction::ClientToServer,
        }
    }
}

/// One relayed connection.
struct Conn {
    id: u64,
    /// Set to true to reset the connection.
    reset: watch::Sender<bool>,
    /// Whether it was open at some point while the proxy was paused.
    saw_pause: bool,
}

#[derive(Default)]
struct Shared {
    conns: Mutex<Vec<Conn>>,
    next_id: AtomicU64,
    /// Bytes read from clients while their direction was paused (held, never forwarded).
    held: AtomicUsize,
}

/// A TCP proxy from a port on 127.0.0.1 to `upstream`; see [`Proxy::pause`] and [`Proxy::resume`].
pub struct Proxy {
    addr: SocketAddr,
    mode: watch::Sender<Mode>,
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Starts forwarding. Upstream connections are made from `source` (an address of
    /// 127.0.0.0/8, e.g. 127.0.0.2) so the API server's audit log tells this client apart.
    pub async fn start(upstream: SocketAddr, source: IpAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (mode, _) = watch::channel(Mode::Flowing);
        let shared = Arc::new(Shared::default());
        let accept = tokio::spawn(accept_loop(listener, upstream, source, mode.clone(), shared.clone()));
        Ok(Self { addr, mode, shared, accept })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops forwarding what `pause` says on every connection, open or opened from now on.
    /// Connections are still accepted; their bytes are held.
    pub fn pause(&self, pause: Pause) {
        if let Ok(mut conns) = self.shared.conns.lock() {
            for c in conns.iter_mut() {
                c.saw_pause = true;
            }
        }
        self.mode.send_replace(Mode::Paused(pause));
    }

    /// Ends the pause. The partition heals after the client gave up on the connections it had
    /// (its requests timed out, or it dropped them): those connections are dead, so they are
    /// reset, and the bytes held in them are discarded, never delivered late. Flushing them
    /// would deliver requests the client abandoned long ago, which no client can guard against
    /// (as TCP retransmission after a long partition could). Connections opened from now on
    /// flow. Returns how many connections were reset.
    pub fn resume(&self) -> usize {
        // Reset first, then flow: a held buffer is never written after the pause ends.
        let reset = self.reset_where(|c| c.saw_pause);
        self.mode.send_replace(Mode::Flowing);
        reset
    }

    /// Resets every open connection. Returns how many there were.
    pub fn close_all(&self) -> usize {
        self.reset_where(|_| true)
    }

    /// Open connections.
    pub fn connections(&self) -> usize {
        self.shared.conns.lock().map(|c| c.len()).unwrap_or(0)
    }

    /// Bytes that clients sent while paused (held back, and discarded on resume).
    pub fn held_bytes(&self) -> usize {
        self.shared.held.load(Ordering::SeqCst)
    }

    fn reset_where(&self, which: impl Fn(&Conn) -> bool) -> usize {
        let Ok(mut conns) = self.shared.conns.lock() else { return 0 };
        let mut n = 0;
        conns.retain(|c| {
            if !which(c) {
                return true;
            }
            c.reset.send_replace(true);
            n += 1;
            false
        });
        n
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.close_all();
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    source: IpAddr,
    mode: watch::Sender<Mode>,
    shared: Arc<Shared>,
) {
    while let Ok((client, _)) = listener.accept().await {
        let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
        let (reset, reset_rx) = watch::channel(false);
        let saw_pause = *mode.borrow() != Mode::Flowing;
        if let Ok(mut conns) = shared.conns.lock() {
            conns.push(Conn { id, reset, saw_pause });
        }
        tokio::spawn(relay(client, upstream, source, mode.subscribe(), reset_rx, shared.clone(), id));
    }
}

async fn connect_from(source: IpAddr, upstream: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = if source.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(upstream).await
}

async fn relay(
    mut client: TcpStream,
    upstream: SocketAddr,
    source: IpAddr,
    mode: watch::Receiver<Mode>,
    mut reset: watch::Receiver<bool>,
    shared: Arc<Shared>,
    id: u64,
) {
    let reset_requested = async move {
        let _ = reset.wait_for(|r| *r).await;
    };
    tokio::pin!(reset_requested);
    let mut server = tokio::select! {
        biased;
        _ = &mut reset_requested => None,
        s = connect_from(source, upstream) => s.ok(),
    };
    let was_reset = match server.as_mut() {
        None => true,
        Some(server) => {
            let (client_read, client_write) = client.split();
            let (server_read, server_write) = server.split();
            let up = pump(client_read, server_write, Direction::ClientToServer, mode.clone(), &shared);
            let down = pump(server_read, client_write, Direction::ServerToClient, mode, &shared);
            tokio::select! {
                biased;
                _ = &mut reset_requested => true,
                _ = futures::future::join(up, down) => false,
            }
        }
    };
    if was_reset {
        // RST rather than FIN: a dead connection, not a clean close.
        let _ = client.set_zero_linger();
        if let Some(server) = &server {
            let _ = server.set_zero_linger();
        }
    }
    if let Ok(mut conns) = shared.conns.lock() {
        conns.retain(|c| c.id != id);
    }
}

/// Copies `from` to `to`, holding each chunk while `direction` is paused.
async fn pump(
    mut from: impl AsyncReadExt + Unpin,
    mut to: impl AsyncWriteExt + Unpin,
    direction: Direction,
    mut mode: watch::Receiver<Mode>,
    shared: &Shared,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if mode.borrow().holds(direction) {
            if direction == Direction::ClientToServer {
                shared.held.fetch_add(n, Ordering::SeqCst);
            }
            if mode.wait_for(|m| !m.holds(direction)).await.is_err() {
                return;
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use super::*;

    /// An echo server on loopback; returns its address.
    async fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn roundtrip(s: &mut TcpStream, msg: &[u8]) -> std::io::Result<Vec<u8>> {
        s.write_all(msg).await?;
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got).await?;
        Ok(got)
    }

    const T: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn held_bytes_are_discarded_and_paused_connections_reset_while_new_ones_flow() {
        let proxy = Proxy::start(echo().await, "127.0.0.1".parse().unwrap()).await.unwrap();
        let mut old = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(roundtrip(&mut old, b"hello").await.unwrap(), b"hello");

        proxy.pause(Pause::Both);
        old.write_all(b"late").await.unwrap();
        let deadline = tokio::time::Instant::now() + T;
        while proxy.held_bytes() < 4 {
            assert!(tokio::time::Instant::now() < deadline, "the proxy never read the held bytes");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        assert_eq!(proxy.resume(), 1);
        let mut buf = [0u8; 4];
        let after = tokio::time::timeout(T, old.read(&mut buf)).await.expect("the old connection ends");
        assert!(matches!(after, Ok(0) | Err(_)), "held bytes were delivered after the pause: {after:?}");
        let mut new = tokio::time::timeout(T, TcpStream::connect(proxy.addr())).await.unwrap().unwrap();
        assert_eq!(tokio::time::timeout(T, roundtrip(&mut new, b"fresh")).await.unwrap().unwrap(), b"fresh");
        assert_eq!(proxy.connections(), 1);
    }

    #[tokio::test]
    async fn a_client_to_server_pause_still_delivers_what_the_server_sends() {
        // The "server" writes first and never reads: a watch stream.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = listener.local_addr().unwrap();
        let (send_tx, mut send_rx) = tokio::sync::mpsc::channel::<&'static [u8]>(4);
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            while let Some(msg) = send_rx.recv().await {
                s.write_all(msg).await.unwrap();
            }
        });
        let proxy = Proxy::start(upstream, "127.0.0.1".parse().unwrap()).await.unwrap();
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        proxy.pause(Pause::ClientToServer);
        send_tx.send(b"event").await.unwrap();
        let mut got = [0u8; 5];
        tokio::time::timeout(T, c.read_exact(&mut got)).await.unwrap().unwrap();
        assert_eq!(&got, b"event");
        assert_eq!(proxy.close_all(), 1);
    }
}
