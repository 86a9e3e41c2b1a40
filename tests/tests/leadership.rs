//! Leadership lost to a stalled connection: a leader whose requests stop reaching the API server
//! (its own connection partitioned, nothing else) must stop its controller within a bound, and
//! none of its writes may reach the API server once a standby holds the Lease.
//!
//! Needs the local control plane's audit log (tests/cluster/up writes it), to see which client's
//! writes reached the API server and when; run with the test's own operators (tests/run's first
//! pass), never next to an external one.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::io::{Read, Seek};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{Patch, PatchParams};
use modelship_crds::MLModel;
use modelship_tests::proxy::{Pause, Proxy};
use modelship_tests::{
    Operator, OperatorOptions, TestNamespace, client, install_crd, kubectl, patch_mlmodel, root, wait_for, wait_ready,
};

const T: Duration = Duration::from_secs(60);
/// The address the stalled replica's connections come from, as the API server sees them.
const STALLED_SOURCE: &str = "127.0.0.2";
/// How long after declaring loss the old leader's controller may still run (stop_grace is 2 s).
const STOP_BOUND: Duration = Duration::from_secs(5);

/// The API server's audit log, read from where it stood when the test began.
struct AuditLog {
    path: PathBuf,
    start: u64,
}

/// One audited request.
#[derive(Debug)]
struct Audited {
    id: String,
    verb: String,
    uri: String,
    source: String,
    namespace: String,
    received: Timestamp,
}

impl AuditLog {
    fn open() -> Self {
        let dir = std::env::var_os("MODELSHIP_CLUSTER_DIR").map(PathBuf::from).expect(
            "MODELSHIP_CLUSTER_DIR must name the local control plane started by tests/cluster/up (its audit log \
             shows which client's writes reached the API server)",
        );
        let path = dir.join("logs/audit.log");
        let start = std::fs::metadata(&path)
            .unwrap_or_else(|e| {
                panic!("no audit log at {} ({e}): restart the plane with tests/cluster/up", path.display())
            })
            .len();
        Self { path, start }
    }

    fn entries(&self) -> Vec<Audited> {
        let mut file = std::fs::File::open(&self.path).unwrap();
        file.seek(std::io::SeekFrom::Start(self.start)).unwrap();
        let mut text = String::new();
        file.read_to_string(&mut text).unwrap();
        // The last line may still be being written: skip what does not parse.
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|e| parse(&e))
            .collect()
    }
}

fn parse(e: &serde_json::Value) -> Option<Audited> {
    let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    Some(Audited {
        id: s(&e["auditID"]),
        verb: s(&e["verb"]),
        uri: s(&e["requestURI"]),
        source: s(&e["sourceIPs"][0]),
        namespace: s(&e["objectRef"]["namespace"]),
        received: e["requestReceivedTimestamp"].as_str()?.parse().ok()?,
    })
}

fn mutating(verb: &str) -> bool {
    matches!(verb, "create" | "update" | "patch" | "delete" | "deletecollection")
}

/// The test's kubeconfig.
fn kubeconfig() -> serde_yaml::Value {
    let path = std::env::var_os("KUBECONFIG").map(PathBuf::from).expect("KUBECONFIG names the cluster under test");
    serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// The API server's address (of the current cluster: the local plane has one).
fn apiserver_addr() -> SocketAddr {
    let config = kubeconfig();
    let server = config["clusters"][0]["cluster"]["server"].as_str().unwrap().to_string();
    let hostport = server.trim_start_matches("https://").trim_end_matches('/');
    hostport.parse().unwrap_or_else(|e| panic!("server {server} is not an address: {e}"))
}

/// A copy of the test's kubeconfig whose clusters are reached at `addr`; returns its path.
fn kubeconfig_via(addr: SocketAddr, file: &str) -> PathBuf {
    let mut config = kubeconfig();
    for cluster in config["clusters"].as_sequence_mut().unwrap() {
        // The API server's certificate names 127.0.0.1: only the port changes.
        cluster["cluster"]["server"] = format!("https://{addr}").into();
    }
    let out = std::env::temp_dir().join(file);
    std::fs::write(&out, serde_yaml::to_string(&config).unwrap()).unwrap();
    out
}

async fn leads(op: &Operator) -> bool {
    op.metric("modelship_operator_leader").await == 1.0
}

#[tokio::test]
async fn a_leader_whose_requests_stall_stops_writing_before_a_standby_takes_over() {
    let c = client().await;
    install_crd().await;
    let ns = TestNamespace::new(&c, "stall").await;
    let audit = AuditLog::open();
    let source: IpAddr = STALLED_SOURCE.parse().unwrap();

    // The replica that leads reaches the API server only through the proxy; the standby directly.
    let proxy = Proxy::start(apiserver_addr(), source).await.unwrap();
    let kubeconfig = kubeconfig_via(proxy.addr(), &format!("{}-stalled.kubeconfig", ns.name));
    let opts = OperatorOptions::for_namespace(&ns.name);
    let old = Operator::start_own(&OperatorOptions {
        identity: "stalled".into(),
        kubeconfig: Some(kubeconfig),
        ..opts.clone()
    });
    wait_for("the proxied replica to lead", T, || async { leads(&old).await.then_some(()) }).await;
    let standby = Operator::start_own(&OperatorOptions { identity: "standby".into(), ..opts.clone() });
    kubectl(&["apply", "-n", &ns.name, "-f", root().join("examples/iris.yaml").to_str().unwrap()]).unwrap();
    let models: Api<MLModel> = Api::namespaced(c.clone(), &ns.name);
    wait_ready(&models, "iris", Some("v1"), T).await;
    assert!(old.metric("modelship_operator_status_writes_total").await > 0.0, "the leader reconciled the model");
    assert!(!leads(&standby).await, "two leaders");

    // Stall the leader's requests while its watches still deliver: the change below starts a
    // reconcile whose requests never get an answer, and its lease renewals stall too.
    proxy.pause(Pause::ClientToServer);
    patch_mlmodel(&ns.name, "iris", r#"{"spec":{"model":{"version":"v2"}}}"#);

    // (a) It declares loss and its controller stops within the bound, connection still stalled.
    // Until then every poll touches the model, so a reconcile is in flight on the old leader
    // when it declares loss (each one waits on a request that gets no answer).
    let touches = std::sync::atomic::AtomicU32::new(0);
    let lost = wait_for("the stalled leader to declare loss", T, || async {
        if old.log_text().contains("lost leadership") {
            return Some(tokio::time::Instant::now());
        }
        let n = touches.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let touch = serde_json::json!({"metadata": {"annotations": {"test.modelship.dev/touch": n.to_string()}}});
        let _ = models.patch("iris", &PatchParams::default(), &Patch::Merge(&touch)).await;
        None
    })
    .await;
    let stop_deadline = lost + STOP_BOUND;
    let mut stopped_after = None;
    while tokio::time::Instant::now() < stop_deadline {
        if !leads(&old).await && old.log_text().contains("controller stopped") {
            // The wall clock too: the standby's acquireTime must come after this.
            stopped_after = Some((lost.elapsed(), Timestamp::now()));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("old leader: controller stopped {:?} after it declared loss", stopped_after.map(|s| s.0));

    // The standby takes over and serves a further change, while the old leader is still cut off.
    let leases: Api<Lease> = Api::namespaced(c.clone(), &ns.name);
    let lease = wait_for("the standby to hold the Lease", T, || async {
        let lease = leases.get(&opts.lease_name).await.ok()?;
        let spec = lease.spec.clone()?;
        (spec.holder_identity.as_deref() == Some("standby")).then_some(spec)
    })
    .await;
    let took_over = lease.acquire_time.expect("acquireTime on the Lease").0;
    wait_for("the standby to lead", T, || async { leads(&standby).await.then_some(()) }).await;
    patch_mlmodel(&ns.name, "iris", r#"{"spec":{"model":{"version":"v3"}}}"#);
    wait_ready(&models, "iris", Some("v3"), T).await;
    assert!(proxy.held_bytes() > 0, "the stalled replica sent nothing during the pause");

    // Heal the partition, then wait until the old replica's requests reach the API server again:
    // two of its Lease reads as a standby, received after the proxy resumed.
    let resumed = Timestamp::now();
    let reset = proxy.resume();
    eprintln!("resumed the proxy: {reset} stalled connections reset");
    wait_for("the old replica's requests to reach the API server again", T, || async {
        let reads: BTreeSet<String> = audit
            .entries()
            .into_iter()
            .filter(|e| e.source == STALLED_SOURCE && e.verb == "get" && e.uri.contains("/leases/"))
            .filter(|e| e.received > resumed)
            .map(|e| e.id)
            .collect();
        (reads.len() >= 2).then_some(())
    })
    .await;

    // (b) No mutating request from the old leader reached the API server after the hand-over.
    let mut seen = BTreeSet::new();
    let late: Vec<Audited> = audit
        .entries()
        .into_iter()
        .filter(|e| e.source == STALLED_SOURCE && e.namespace == ns.name && mutating(&e.verb))
        .filter(|e| e.received >= took_over)
        .filter(|e| seen.insert(e.id.clone())) // one entry per request, not per audit stage
        .collect();
    let log = old.log_text();
    let mut failures = Vec::new();
    match stopped_after {
        None => failures.push(format!(
            "(a) the old leader's controller was still running {STOP_BOUND:?} after it declared loss (its connection stalled)"
        )),
        Some((_, at)) if at >= took_over => {
            failures.push(format!("(a) the standby took over at {took_over}, before the old controller stopped ({at})"))
        }
        Some(_) => {}
    }
    if !late.is_empty() {
        failures.push(format!("(b) the old leader wrote after the standby took over at {took_over}: {late:#?}"));
    }
    assert!(failures.is_empty(), "{}\nthe old leader's log:\n{log}", failures.join("\n"));
    assert!(leads(&standby).await && !leads(&old).await, "the standby leads, the old leader waits");
    assert!(log.matches("waiting for leadership").count() >= 2, "the old leader returned to standby:\n{log}");
}
