//! Attacks on the real `modelship-server serve` binary over loopback. During each one `/healthz`
//! keeps answering (p99 < 50 ms over a bounded number of probes, each on a new connection, from
//! a thread of its own), every attack request gets a JSON 4xx/503, and the server's peak RSS
//! (VmHWM, reset between attacks through /proc/PID/clear_refs) stays under
//! 4 × the body limit + 32 MiB.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use modelship_server::train;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_modelship-server");
/// The server's `--max-body-bytes` (its default).
const BODY_LIMIT: usize = 8 << 20;
/// How far above the idle server's RSS any single request may take the peak (the idle RSS
/// itself depends on the binary: a debug build with the ONNX runtime linked in maps more code).
const RSS_GROWTH_BOUND_KIB: u64 = (4 * BODY_LIMIT as u64 + (16 << 20)) / 1024;
const P99_BOUND: Duration = Duration::from_millis(50);
/// Probes of `/healthz` per attack: at least this many are taken while it runs...
const MIN_PROBES: usize = 300;
/// ...and at most this many.
const MAX_PROBES: usize = 2_000;

fn iris_model() -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("modelship-abuse-{}.json", std::process::id()));
    if !path.exists() {
        let artifact = train::train(&train::iris(), train::Algorithm::Logistic, 42).unwrap();
        std::fs::write(&path, artifact.to_vec()).unwrap();
    }
    path
}

struct Server {
    child: Child,
    port: u16,
    /// The RSS when the peak was last reset.
    baseline_kib: std::cell::Cell<u64>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(BIN)
            .args(["serve", "--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--model", iris_model().to_str().unwrap(), "--max-body-bytes", &BODY_LIMIT.to_string()])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let server = Server { child, port, baseline_kib: std::cell::Cell::new(0) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while blocking_get(port, "/readyz").map(|(status, _)| status) != Some(200) {
            assert!(Instant::now() < deadline, "server never became ready");
            std::thread::yield_now();
        }
        server
    }

    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with(field)).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// Resets the peak RSS to the current RSS.
    fn reset_peak(&self) {
        std::fs::write(format!("/proc/{}/clear_refs", self.child.id()), "5").unwrap();
        self.baseline_kib.set(self.status_kib("VmRSS:"));
    }

    fn assert_peak_rss(&self, attack: &str) {
        let peak = self.status_kib("VmHWM:");
        eprintln!("{attack}: peak RSS {peak} KiB (now {} KiB)", self.status_kib("VmRSS:"));
        let (base, bound) = (self.baseline_kib.get(), RSS_GROWTH_BOUND_KIB);
        assert!(peak < base + bound, "{attack}: peak RSS {peak} KiB, over {base} KiB idle + {bound} KiB");
    }
}

/// One blocking `GET` on a new connection: status and time taken (None if the connection failed).
fn blocking_get(port: u16, path: &str) -> Option<(u16, Duration)> {
    let start = Instant::now();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let status = std::str::from_utf8(buf.get(9..12)?).ok()?.parse().ok()?;
    Some((status, start.elapsed()))
}

/// Probes `/healthz` from a thread of its own until told to stop.
struct Probes {
    stop: std::sync::mpsc::Sender<()>,
    count: Arc<AtomicUsize>,
    thread: std::thread::JoinHandle<Vec<Duration>>,
}

impl Probes {
    fn start(port: u16) -> Probes {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let count = Arc::new(AtomicUsize::new(0));
        let n = count.clone();
        let thread = std::thread::spawn(move || {
            let mut times = Vec::new();
            // Paced by the stop channel: a probe every 5 ms until told to stop.
            while times.len() < MAX_PROBES
                && matches!(
                    stopped.recv_timeout(Duration::from_millis(5)),
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout)
                )
            {
                let (status, took) = blocking_get(port, "/healthz").expect("/healthz answers during the attack");
                assert_eq!(status, 200, "/healthz status");
                times.push(took);
                n.store(times.len(), Ordering::Relaxed);
            }
            times
        });
        Probes { stop, count, thread }
    }

    fn enough(&self) -> bool {
        self.count.load(Ordering::Relaxed) >= MIN_PROBES
    }

    /// Stops probing and checks the p99.
    fn finish(self, attack: &str) {
        let _ = self.stop.send(());
        let mut times = self.thread.join().unwrap();
        times.sort();
        assert!(!times.is_empty(), "{attack}: no probes");
        let p99 = times[(times.len() * 99).div_ceil(100) - 1];
        eprintln!(
            "{attack}: /healthz p99 {p99:?} over {} probes; slowest {:?}",
            times.len(),
            &times[times.len().saturating_sub(3)..]
        );
        assert!(p99 < P99_BOUND, "{attack}: /healthz p99 {p99:?} over {} probes", times.len());
    }
}

/// A response read off the wire.
#[derive(Debug)]
struct Reply {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Reply {
    fn parse(buf: &[u8]) -> Option<Reply> {
        let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let status = head.get(9..12)?.parse().ok()?;
        Some(Reply { status, head, body: buf[end + 4..].to_vec() })
    }

    fn error(&self) -> String {
        let v: serde_json::Value = serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)));
        v["error"].as_str().unwrap_or_else(|| panic!("no error field: {v}")).to_string()
    }

    /// Asserts a JSON error with `status` whose message contains `want`.
    fn assert_error(&self, status: u16, want: &str, attack: &str) {
        assert_eq!(self.status, status, "{attack}: {self:?}");
        assert!(self.head.contains("content-type: application/json"), "{attack}: {}", self.head);
        let error = self.error();
        assert!(error.contains(want), "{attack}: {error:?} lacks {want:?}");
    }
}

/// Sends `head` and `body` on a new connection (writing while reading, as an attacker would not
/// wait) and reads the response until the server closes.
async fn exchange(port: u16, head: String, body: Vec<u8>) -> Option<Reply> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let (mut rd, mut wr) = stream.into_split();
    // The writer returns its half so the connection stays open until the reply is read.
    let writer = tokio::spawn(async move {
        if wr.write_all(head.as_bytes()).await.is_ok() {
            for chunk in body.chunks(64 << 10) {
                if wr.write_all(chunk).await.is_err() {
                    break;
                }
            }
        }
        wr
    });
    let mut buf = Vec::new();
    // A reset after the reply still leaves the reply in `buf`.
    let _ = tokio::time::timeout(Duration::from_secs(60), rd.read_to_end(&mut buf)).await;
    writer.abort();
    Reply::parse(&buf)
}

async fn post(port: u16, path: &str, extra_headers: &str, body: Vec<u8>) -> Reply {
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: application/json\r\n{extra_headers}content-length: {}\r\n\r\n",
        body.len()
    );
    exchange(port, head, body).await.unwrap_or_else(|| panic!("no reply from POST {path}"))
}

/// Runs `round` until the probes have enough samples (at least `min_rounds`, at most 200
/// rounds), under probes and a peak-RSS check.
async fn attack<F, Fut>(server: &Server, name: &str, min_rounds: usize, round: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()>,
{
    server.reset_peak();
    let probes = Probes::start(server.port);
    let mut rounds = 0;
    while rounds < 200 && (rounds < min_rounds || !probes.enough()) {
        round().await;
        rounds += 1;
    }
    probes.finish(name);
    server.assert_peak_rss(name);
}

fn rows_json(n: usize, row: &str) -> String {
    let mut s = String::with_capacity(n * (row.len() + 1));
    for i in 0..n {
        if i > 0 {
            s.push(',');
        }
        s.push_str(row);
    }
    s
}

/// Flags of the attacked server: small timeouts so the test is quick, a low permit count so it
/// is reached, the default body limit.
const FLAGS: &[&str] = &[
    "--max-rows",
    "10000",
    "--max-concurrent-requests",
    "4",
    "--request-timeout-seconds",
    "3",
    "--header-read-timeout-seconds",
    "2",
    "--max-connections",
    "3000",
];

/// The soft and hard open-files limits of this process.
fn open_files_limits() -> (u64, u64) {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    let mut n = line.split_whitespace().skip(3).map(|v| v.parse().unwrap_or(u64::MAX));
    (n.next().unwrap(), n.next().unwrap())
}

/// Makes sure this process (and the servers it starts, which inherit it) may open `need` files,
/// raising the soft limit towards the hard one with util-linux `prlimit` when it is lower.
fn ensure_open_files(need: u64) {
    let (soft, hard) = open_files_limits();
    if soft < need && hard >= need {
        let pid = std::process::id().to_string();
        let _ = Command::new("prlimit").args(["--pid", &pid, &format!("--nofile={need}:{hard}")]).status();
    }
    let (soft, _) = open_files_limits();
    assert!(soft >= need, "the slowloris attack needs {need} open files; raise `ulimit -n` (now {soft})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attacks_get_json_errors_while_healthz_answers_and_memory_stays_bounded() {
    // 2,000 slow connections, both ends in this test's processes, plus room for the rest.
    ensure_open_files(4_500);
    let server = Server::start(FLAGS);
    let port = server.port;

    // The issue's 7.6 MiB V2 request: 2M one-value rows under a [1, 4] shape.
    let nested = format!(
        r#"{{"inputs":[{{"name":"x","shape":[1,4],"datatype":"FP32","data":[{}]}}]}}"#,
        rows_json(2_000_000, "[0]")
    );
    assert!(nested.len() > 7 << 20 && nested.len() < BODY_LIMIT);
    let nested = &nested.into_bytes();
    attack(&server, "2M nested one-value rows", 3, move || async move {
        let r = post(port, "/v2/models/iris/infer", "", nested.clone()).await;
        r.assert_error(400, "needs 4 values, data has more", "2M nested one-value rows");
    })
    .await;

    // The same flood with the shape after the data: the row budget bounds it instead.
    let flood = format!(
        r#"{{"inputs":[{{"name":"x","datatype":"FP32","data":[{}],"shape":[1,4]}}]}}"#,
        rows_json(3_000_000, "0")
    );
    let flood = &flood.into_bytes();
    let classic_flood = &format!(r#"{{"features":[{}]}}"#, rows_json(3_000_000, "0")).into_bytes();
    attack(&server, "values beyond the row budget", 3, move || async move {
        let r = post(port, "/v2/models/iris/infer", "", flood.clone()).await;
        r.assert_error(400, "exceed the limit of 10000 rows", "values beyond the row budget");
        let r = post(port, "/predict", "", classic_flood.clone()).await;
        r.assert_error(400, "exceed the limit of 10000 rows", "classic values beyond the row budget");
    })
    .await;

    let oversized = &vec![b' '; BODY_LIMIT + (1 << 20)];
    attack(&server, "oversized body", 3, move || async move {
        let r = post(port, "/predict", "", oversized.clone()).await;
        r.assert_error(413, "larger than the limit", "oversized body");
    })
    .await;

    let deep = |prefix: &str| format!("{prefix}{}", "[".repeat(100_000)).into_bytes();
    attack(&server, "deeply nested JSON", 3, move || async move {
        for (path, prefix) in [
            ("/predict", r#"{"features":"#),
            ("/v1/models/iris:predict", r#"{"instances":"#),
            ("/v2/models/iris/infer", r#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":"#),
            ("/v2/models/iris/infer", r#"{"ignored":"#),
        ] {
            let r = post(port, path, "", deep(prefix)).await;
            assert_eq!(r.status, 400, "deeply nested JSON to {path}: {r:?}");
            r.error();
        }
    })
    .await;

    attack(&server, "huge declared shapes", 3, move || async move {
        for shape in ["[1000000000,4]", "[9223372036854775807,4]", "[1,9223372036854775807]", "[1,4,1,1]"] {
            let body = format!(
                r#"{{"inputs":[{{"name":"x","shape":{shape},"datatype":"UINT8","parameters":{{"binary_data_size":4}}}}]}}"#
            );
            let header = format!("inference-header-content-length: {}\r\n", body.len());
            let mut bytes = body.into_bytes();
            bytes.extend_from_slice(&[0; 4]);
            let r = post(port, "/v2/models/iris/infer", &header, bytes).await;
            assert_eq!(r.status, 400, "shape {shape}: {r:?}");
            r.error();
        }
    })
    .await;

    // Binary sizes that lie: 7 MiB of UINT8 for a [1, 4] tensor (widened to f64 it would be 56 MiB),
    // a size beyond the bytes sent, and a JSON length beyond the body.
    let blob = 7 << 20;
    attack(&server, "binary data lengths that lie", 3, move || async move {
        let cases = [(blob, blob, "needs 4 bytes"), (4, 0, "exceeds the 0 binary bytes"), (1 << 40, 4, "needs 4 bytes")];
        for (declared, sent, want) in cases {
            let json = format!(
                r#"{{"inputs":[{{"name":"x","shape":[1,4],"datatype":"UINT8","parameters":{{"binary_data_size":{declared}}}}}]}}"#
            );
            let header = format!("inference-header-content-length: {}\r\n", json.len());
            let mut bytes = json.into_bytes();
            bytes.resize(bytes.len() + sent, 1);
            let r = post(port, "/v2/models/iris/infer", &header, bytes).await;
            r.assert_error(400, want, "binary data lengths that lie");
        }
        let r = post(port, "/v2/models/iris/infer", "inference-header-content-length: 999999\r\n", b"{}".to_vec()).await;
        r.assert_error(400, "but the body has 2 bytes", "JSON length beyond the body");
    })
    .await;

    // The issue's 0.2 MiB request: 10,000 rows and 1,000 copies of predict_proba.
    let rows = format!("[{}]", rows_json(10_000, "[5.1,3.5,1.4,0.2]"));
    let dup = format!(
        r#"{{"inputs":[{{"name":"x","shape":[10000,4],"datatype":"FP64","data":{rows}}}],"outputs":[{}]}}"#,
        rows_json(1_000, r#"{"name":"predict_proba"}"#)
    )
    .into_bytes();
    let dup = &dup;
    let unknown = format!(
        r#"{{"inputs":[{{"name":"x","shape":[10000,4],"datatype":"FP64","data":{rows}}}],"outputs":[{{"name":"predict"}},{{"name":"shap"}}]}}"#
    )
    .into_bytes();
    let unknown = &unknown;
    attack(&server, "duplicate and unknown outputs", 3, move || async move {
        let r = post(port, "/v2/models/iris/infer", "", dup.clone()).await;
        r.assert_error(400, "\"predict_proba\" is requested twice", "duplicate outputs");
        let r = post(port, "/v2/models/iris/infer", "", unknown.clone()).await;
        r.assert_error(400, "unknown output \"shap\"", "unknown outputs");
        assert!(r.error().contains(r#"["predict", "predict_proba"]"#), "lists the valid outputs: {}", r.error());
    })
    .await;

    attack(&server, "non-finite results and inputs", 3, move || async move {
        let huge = r#"[1e308,-1e308,1e308,-1e308]"#;
        let r = post(port, "/predict?proba=true", "", format!(r#"{{"features":{huge}}}"#).into_bytes()).await;
        r.assert_error(422, "not a finite number", "non-finite /predict");
        let r = post(port, "/v1/models/iris:predict", "", format!(r#"{{"instances":[{huge}]}}"#).into_bytes()).await;
        r.assert_error(422, "not a finite number", "non-finite V1");
        let body = format!(
            r#"{{"inputs":[{{"name":"x","shape":[1,4],"datatype":"FP64","data":{huge}}}],"outputs":[{{"name":"predict_proba"}}]}}"#
        );
        let r = post(port, "/v2/models/iris/infer", "", body.into_bytes()).await;
        r.assert_error(422, "not a finite number", "non-finite V2");
        let json = r#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP64","parameters":{"binary_data_size":32}}]}"#;
        let header = format!("inference-header-content-length: {}\r\n", json.len());
        let mut bytes = json.as_bytes().to_vec();
        [f64::NAN, 1.0, f64::INFINITY, 2.0].iter().for_each(|v| bytes.extend_from_slice(&v.to_le_bytes()));
        let r = post(port, "/v2/models/iris/infer", &header, bytes).await;
        r.assert_error(400, "finite", "non-finite binary input");
    })
    .await;

    // Big batches from more clients than there are permits: each gets 200 or a JSON 503, and the
    // parsing and predicting happen off the async workers that answer /healthz.
    let batch = &format!(r#"{{"features":{rows}}}"#).into_bytes();
    attack(&server, "burst of large batches", 4, move || async move {
        let replies = futures_join(8, move || post(port, "/predict?proba=true&labels=true", "", batch.clone())).await;
        for r in replies {
            if r.status != 200 {
                r.assert_error(503, "concurrent prediction requests", "burst of large batches");
                assert!(r.head.contains("retry-after: 1"), "{}", r.head);
            }
        }
    })
    .await;

    prediction_capacity_full(&server).await;
    // A fresh process: what earlier attacks left in the allocator is not the slow connections' doing.
    drop(server);
    slowloris(&Server::start(FLAGS)).await;
}

/// Runs `n` copies of `f()` at once.
async fn futures_join<F, Fut>(n: usize, f: F) -> Vec<Reply>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Reply> + Send + 'static,
{
    let tasks: Vec<_> = (0..n).map(|_| tokio::spawn(f())).collect();
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

/// Opens `n` prediction requests whose body never completes (each holds a permit until it times out).
async fn hold_requests(port: u16, n: usize) -> Vec<TcpStream> {
    let head = "POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n";
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(br#"{"features":["#).await.unwrap();
        held.push(s);
    }
    held
}

/// Holds every prediction permit with requests whose body never completes: others get 503 with
/// `Retry-After` at once, health and metrics keep answering, and the held ones get 408 when the
/// request timeout passes.
async fn prediction_capacity_full(server: &Server) {
    let port = server.port;
    server.reset_peak();
    let probes = Probes::start(port);
    // The held requests time out after 3 s; if a loaded machine delays their admission past the
    // window, hold four fresh ones (bounded), so the check is that a request is refused while
    // four are held, not how fast a busy CI box schedules them.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut tries, mut answered) = (0, 0);
    let (busy, held) = 'hold: loop {
        tries += 1;
        let held = hold_requests(port, 4).await;
        let window = Instant::now() + Duration::from_millis(2_500);
        while Instant::now() < window {
            let r = post(port, "/predict", "", br#"{"features":[5.1,3.5,1.4,0.2]}"#.to_vec()).await;
            if r.status == 503 {
                break 'hold (r, held);
            }
            assert_eq!(r.status, 200, "{r:?}");
            answered += 1;
            tokio::task::yield_now().await;
        }
        assert!(
            Instant::now() < deadline,
            "never refused a request while every permit was held ({tries} tries holding 4 requests, {answered} answered 200)"
        );
    };
    eprintln!("prediction capacity full: refused after {tries} tries, {answered} requests answered first");
    busy.assert_error(503, "limit of 4 concurrent prediction requests", "prediction capacity full");
    assert!(busy.head.contains("retry-after: 1"), "{}", busy.head);
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(blocking_get(port, path).map(|(s, _)| s), Some(200), "{path} while prediction capacity is full");
    }
    for mut s in held {
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut buf)).await;
        let r = Reply::parse(&buf).unwrap_or_else(|| panic!("held request got no reply: {buf:?}"));
        r.assert_error(408, "did not arrive within 3s", "slow body");
    }
    probes.finish("prediction capacity full");
    server.assert_peak_rss("prediction capacity full");
}

/// 2,000 connections trickling header lines: the header-read timeout (2 s) closes every one.
async fn slowloris(server: &Server) {
    let port = server.port;
    server.reset_peak();
    let probes = Probes::start(port);
    let start = Instant::now();
    let mut conns = tokio::task::JoinSet::new();
    for _ in 0..2_000 {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        conns.spawn(async move {
            if s.write_all(b"POST /predict HTTP/1.1\r\nhost: x\r\n").await.is_err() {
                return true;
            }
            let mut tick = tokio::time::interval(Duration::from_millis(300));
            let end = tokio::time::Instant::now() + Duration::from_secs(30);
            let mut buf = [0u8; 512];
            loop {
                tokio::select! {
                    // EOF, a reset or any reply: the server gave up on this connection.
                    _ = s.read(&mut buf) => return true,
                    _ = tick.tick() => {
                        if s.write_all(b"x-slow: 1\r\n").await.is_err() {
                            return true;
                        }
                    }
                    () = tokio::time::sleep_until(end) => return false,
                }
            }
        });
    }
    let mut closed = 0;
    while let Some(done) = conns.join_next().await {
        closed += usize::from(done.unwrap());
    }
    eprintln!("slowloris: {closed} of 2000 closed after {:?}", start.elapsed());
    assert_eq!(closed, 2_000, "every slow connection is closed by the header-read timeout");
    probes.finish("slowloris");
    server.assert_peak_rss("slowloris");
}

/// Beyond `--max-connections`, new connections are closed at once; one freed is one served.
#[tokio::test]
async fn connections_beyond_the_cap_are_closed() {
    let server = Server::start(&["--max-connections", "4", "--header-read-timeout-seconds", "30"]);
    let port = server.port;
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    }
    // Every one of those was accepted once a request on a fifth connection is refused.
    let refused = async {
        let head = "GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".to_string();
        exchange(port, head, Vec::new()).await.is_none()
    };
    assert!(refused.await, "a connection over the cap of 4 is closed without a reply");
    drop(idle.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let head = "GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".to_string();
        if let Some(r) = exchange(port, head, Vec::new()).await {
            assert_eq!(r.status, 200);
            break;
        }
        assert!(Instant::now() < deadline, "a freed connection slot is never reused");
        tokio::task::yield_now().await;
    }
}
