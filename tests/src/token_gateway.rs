//! An HTTP gateway on loopback that admits only `Authorization: Bearer TOKEN` and forwards to an
//! upstream server, as an authenticating reverse proxy in front of a tracking server does (MLflow
//! itself knows only basic auth). It answers 401 to a missing or wrong token, 502 when the
//! upstream does not answer, and records every request line it was sent, so a test can tell
//! what a client asked and when.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Request heads larger than this are refused (the clients here send a few hundred bytes).
const MAX_HEAD: usize = 64 * 1024;

/// One gateway, on a thread and runtime of its own (so a test that blocks its own runtime, e.g.
/// waiting for a child process that talks to the gateway, cannot stall it); stops when dropped.
pub struct TokenGateway {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TokenGateway {
    /// Listens on a free port of 127.0.0.1 and forwards admitted requests to `upstream` (`HOST:PORT`).
    pub fn start(upstream: &str, token: &str) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the gateway");
        listener.set_nonblocking(true).expect("non-blocking listener");
        let url = format!("http://{}", listener.local_addr().expect("gateway address"));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (log, upstream, expected) = (requests.clone(), upstream.to_string(), format!("bearer {token}"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("gateway runtime");
            rt.block_on(async move {
                let listener = TcpListener::from_std(listener).expect("gateway listener");
                let accept = async {
                    while let Ok((conn, _)) = listener.accept().await {
                        let (log, upstream, expected) = (log.clone(), upstream.clone(), expected.clone());
                        tokio::spawn(async move {
                            let _ = serve(conn, &upstream, &expected, &log).await;
                        });
                    }
                };
                tokio::select! {
                    _ = stopped => {}
                    _ = accept => {}
                }
            });
        });
        Self { url, requests, stop: Some(stop), thread: Some(thread) }
    }

    /// How many requests so far had a request line (`GET /path?query HTTP/1.1`) containing `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.requests.lock().map(|r| r.iter().filter(|l| l.contains(needle)).count()).unwrap_or(0)
    }
}

impl Drop for TokenGateway {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One request per connection: the head is read, checked and forwarded with `Connection: close`,
/// and the upstream's answer is copied back until it closes.
async fn serve(mut conn: TcpStream, upstream: &str, expected: &str, log: &Mutex<Vec<String>>) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 4096];
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEAD {
            return reply(&mut conn, "431 Request Header Fields Too Large", "header too large").await;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_string();
    if let Ok(mut l) = log.lock() {
        l.push(request_line.clone());
    }
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let authorized = headers.iter().any(|(k, v)| k == "authorization" && v.eq_ignore_ascii_case(expected));
    if !authorized {
        return reply(&mut conn, "401 Unauthorized", "a bearer token is required").await;
    }
    let length: usize =
        headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
    while buf.len() < head_end + length {
        let mut chunk = [0u8; 4096];
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let mut forwarded = format!("{request_line}\r\n");
    for (k, v) in headers.iter().filter(|(k, _)| k != "connection" && k != "authorization") {
        forwarded.push_str(&format!("{k}: {v}\r\n"));
    }
    forwarded.push_str("connection: close\r\n\r\n");
    let Ok(mut up) = TcpStream::connect(upstream).await else {
        return reply(&mut conn, "502 Bad Gateway", "the upstream server does not answer").await;
    };
    up.write_all(forwarded.as_bytes()).await?;
    up.write_all(&buf[head_end..head_end + length]).await?;
    tokio::io::copy(&mut up, &mut conn).await?;
    conn.shutdown().await
}

async fn reply(conn: &mut TcpStream, status: &str, message: &str) -> std::io::Result<()> {
    let body = serde_json::json!({"error_code": "GATEWAY", "message": message}).to_string();
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await?;
    conn.write_all(body.as_bytes()).await?;
    conn.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn upstream() -> (String, tokio::task::JoinHandle<()>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let task = tokio::spawn(async move {
            while let Ok((mut c, _)) = l.accept().await {
                let mut buf = [0u8; 4096];
                let n = c.read(&mut buf).await.unwrap_or(0);
                let saw = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
                let body = if saw.contains("authorization") { "leaked" } else { "ok" };
                let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", body.len());
                let _ = c.write_all(format!("{head}{body}").as_bytes()).await;
            }
        });
        (addr, task)
    }

    #[tokio::test]
    async fn admits_only_the_token_and_says_when_the_upstream_is_gone() {
        let (addr, task) = upstream().await;
        let gw = TokenGateway::start(&addr, "s3cret");
        let http = reqwest::Client::new();
        let get = |token: Option<&'static str>| {
            let mut r = http.get(format!("{}/api/2.0/x?name=iris", gw.url));
            if let Some(t) = token {
                r = r.bearer_auth(t);
            }
            r.send()
        };
        let ok = get(Some("s3cret")).await.unwrap();
        assert_eq!(ok.status(), 200);
        assert_eq!(ok.text().await.unwrap(), "ok", "the token is not passed upstream");
        assert_eq!(get(Some("wrong")).await.unwrap().status(), 401);
        assert_eq!(get(None).await.unwrap().status(), 401);
        task.abort();
        let _ = task.await;
        assert_eq!(get(Some("s3cret")).await.unwrap().status(), 502);
        assert_eq!(gw.count("name=iris"), 4);
        assert_eq!(gw.count("name=other"), 0);
    }
}
