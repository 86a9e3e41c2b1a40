//! The real node of the local cluster (`MODELSHIP_REAL_NODE=1 tests/cluster/up`): kubelet,
//! containerd and kube-proxy running our real images. Tests pin a namespace's pods to it and
//! send traffic only to addresses that [`route_is_local`] has shown never leave the machine.

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{Context as _, bail};
use kube::Client;

use crate::{TestNamespace, kubectl, wait_for};

/// The node's name (tests/cluster/node/lib.sh).
pub const NODE: &str = "real-node-1";
/// The host's address on the pods' bridge (tests/cluster/node/lib.sh `POD_GATEWAY`): a service
/// the harness runs on this machine listens here for real pods to reach it.
pub const POD_GATEWAY: &str = "10.245.0.1";
/// Devices that keep cluster traffic on this machine: the pods' bridge, the service range's
/// portless bridge, loopback.
const LOCAL_DEVICES: &[&str] = &["ms-br0", "ms-svc0", "lo"];
/// kube-proxy's health endpoint: healthy once its rules are synced.
const KUBE_PROXY_HEALTHZ: &str = "http://127.0.0.1:10256/healthz";

/// Whether the cluster under test has the real node (tests/run brings it up).
pub fn enabled() -> bool {
    std::env::var("MODELSHIP_REAL_NODE").as_deref() == Ok("1")
}

/// The directory holding the node's image archives (tests/cluster/node/up writes them).
pub fn image_dir() -> std::path::PathBuf {
    let state = std::env::var_os("MODELSHIP_CLUSTER_DIR").expect("MODELSHIP_CLUSTER_DIR is set by tests/run");
    std::path::PathBuf::from(state).join("node/images")
}

/// A test namespace whose pods all land on the real node: the API server's PodNodeSelector and
/// PodTolerationRestriction admission plugins apply the namespace's annotations to every pod.
pub async fn namespace(client: &Client, prefix: &str) -> TestNamespace {
    let ns = TestNamespace::new(client, prefix).await;
    kubectl(&[
        "annotate",
        "namespace",
        &ns.name,
        "scheduler.alpha.kubernetes.io/node-selector=type=real",
        r#"scheduler.alpha.kubernetes.io/defaultTolerations=[{"key":"modelship.dev/real-node","operator":"Exists","effect":"NoSchedule"}]"#,
    ])
    .expect("annotate the namespace for the real node");
    ns
}

/// A client, the CRDs, a namespace on the real node and an operator for it; `None` (the test
/// returns early, saying why) where the cluster has no real node, e.g. on kind.
pub async fn setup(prefix: &str) -> Option<(Client, TestNamespace, crate::Operator)> {
    if !enabled() {
        eprintln!("skipped: no real node (MODELSHIP_REAL_NODE=1 tests/cluster/up adds one; tests/run does)");
        return None;
    }
    let c = crate::client().await;
    crate::install_crd().await;
    let ns = namespace(&c, prefix).await;
    let op = crate::Operator::start(&crate::OperatorOptions::for_namespace(&ns.name));
    Some((c, ns, op))
}

/// Where the kernel would send a packet for `addr`, without sending one: `Ok` with the route
/// when it is a local device or a blackhole, an error naming the route otherwise (for example
/// the default gateway, which would take the packet off the machine).
pub fn route_is_local(addr: Ipv4Addr) -> anyhow::Result<String> {
    let out = std::process::Command::new("ip").args(["route", "get", &addr.to_string()]).output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        // A blackhole route makes the lookup itself fail (EINVAL); confirm one covers `addr`.
        let blackholes = std::process::Command::new("ip").args(["route", "show", "type", "blackhole"]).output()?;
        let covering = String::from_utf8_lossy(&blackholes.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
            .find(|prefix| covers(prefix, addr));
        return match covering {
            Some(prefix) => Ok(format!("blackhole {prefix}")),
            None => bail!(
                "ip route get {addr} failed ({}) and no blackhole covers it",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        };
    }
    let dev = text.split_whitespace().skip_while(|w| *w != "dev").nth(1).unwrap_or_default();
    if LOCAL_DEVICES.contains(&dev) && !text.contains(" via ") {
        Ok(text.lines().next().unwrap_or_default().trim().to_string())
    } else {
        bail!("{addr} would leave through `{}`", text.trim())
    }
}

/// Whether the CIDR `prefix` (a.b.c.d/n) contains `addr`.
fn covers(prefix: &str, addr: Ipv4Addr) -> bool {
    let Some((net, len)) = prefix.split_once('/') else { return false };
    let (Ok(net), Ok(len)) = (net.parse::<Ipv4Addr>(), len.parse::<u32>()) else { return false };
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len.min(32)) };
    u32::from(net) & mask == u32::from(addr) & mask
}

/// Waits until kube-proxy reports its rules synced.
pub async fn wait_kube_proxy_synced() {
    wait_for("kube-proxy healthy (rules synced)", Duration::from_secs(60), || async {
        let resp = reqwest::get(KUBE_PROXY_HEALTHZ).await.ok()?;
        resp.status().is_success().then_some(())
    })
    .await
}

/// The ClusterIP of a Service, checked to route locally before anything is sent to it.
pub fn cluster_ip(ns: &str, service: &str) -> anyhow::Result<Ipv4Addr> {
    let ip = kubectl(&["-n", ns, "get", "service", service, "-o", "jsonpath={.spec.clusterIP}"])?;
    let ip: Ipv4Addr = ip.trim().parse().with_context(|| format!("Service {service} has no ClusterIP: {ip:?}"))?;
    route_is_local(ip)?;
    Ok(ip)
}

/// Posts `body` to `url` until it answers (kube-proxy programs a new endpoint within a sync
/// period), at most `attempts` times, each with a short timeout. Returns the last response.
pub async fn post_until_answered(url: &str, body: &str, attempts: usize) -> anyhow::Result<reqwest::Response> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
    let mut last = None;
    for _ in 0..attempts {
        match client.post(url).body(body.to_string()).send().await {
            Ok(resp) if resp.status().is_success() => return Ok(resp),
            Ok(resp) => last = Some(format!("HTTP {}", resp.status())),
            Err(e) => last = Some(e.to_string()),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    bail!("{url} did not answer after {attempts} attempts: {}", last.unwrap_or_default())
}

/// A Helm release of charts/modelship whose operator runs in-cluster on the real node: its real
/// image (imported by node/up, `imagePullPolicy: Never`), its ServiceAccount and RBAC, scheduled
/// by the chart's `nodeSelector` and `tolerations` values, watching only `watch_namespace`.
/// Uninstalled when dropped.
pub struct InClusterOperator {
    /// The release's name, which the chart also gives the Deployment, ServiceAccount and Lease.
    pub release: String,
    /// The release namespace (the operator pod and its Lease live there).
    pub namespace: String,
}

impl InClusterOperator {
    /// `helm install --wait` of the chart into `namespace`, for the models of `watch_namespace`.
    pub fn install(namespace: &str, watch_namespace: &str) -> anyhow::Result<Self> {
        let tag = std::env::var("MODELSHIP_NODE_IMAGE_TAG").unwrap_or_else(|_| "test".into());
        let values = serde_json::json!({
            "image": {"repository": "modelship-operator", "tag": tag, "pullPolicy": "Never"},
            "serverImage": {"repository": "modelship-server", "tag": tag},
            "watchNamespace": watch_namespace,
            "logFormat": "text",
            "nodeSelector": {"type": "real"},
            "tolerations": [{"key": "modelship.dev/real-node", "operator": "Exists", "effect": "NoSchedule"}],
        });
        // Dropped on failure too: a failed release is uninstalled.
        let installed = Self { release: "modelship-incluster".into(), namespace: namespace.into() };
        let chart = crate::root().join("charts/modelship");
        let chart = chart.to_string_lossy();
        let args = ["install", &installed.release, &chart, "-n", namespace, "--wait", "--timeout", "120s", "-f", "-"];
        // JSON is YAML: the values go in on stdin.
        if let Err(e) = crate::run(&crate::tool("HELM"), &args, Some(&values.to_string())) {
            // Why the pod never became ready (no API server from inside the pod, say) is in its log.
            let selector = "app.kubernetes.io/component=operator";
            let log = kubectl(&["-n", namespace, "logs", "-l", selector, "--tail=20", "--all-containers"]);
            bail!("{e}\noperator log:\n{}", log.unwrap_or_else(|e| e.to_string()));
        }
        Ok(installed)
    }
}

impl Drop for InClusterOperator {
    fn drop(&mut self) {
        let _ = crate::run(&crate::tool("HELM"), &["uninstall", &self.release, "-n", &self.namespace, "--wait"], None);
    }
}

/// Whether the API server's audit log (`$MODELSHIP_CLUSTER_DIR/logs/audit.log`) shows `user`
/// patching the status of an MLModel in `namespace`.
pub fn audited_status_writer(user: &str, namespace: &str) -> bool {
    let Some(dir) = std::env::var_os("MODELSHIP_CLUSTER_DIR") else { return false };
    let Ok(text) = std::fs::read_to_string(std::path::Path::new(&dir).join("logs/audit.log")) else { return false };
    text.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()).any(|e| {
        let o = &e["objectRef"];
        e["user"]["username"] == user
            && e["verb"] == "patch"
            && o["resource"] == "mlmodels"
            && o["subresource"] == "status"
            && o["namespace"] == namespace
    })
}

/// Requests to `url` on `connections` keep-alive connections until `stop` is set, `limit` has
/// passed or each connection has sent `max_per_connection`: CPU load for the autoscaler, bounded
/// in time and count. Returns how many were answered.
pub async fn load(
    url: String,
    connections: usize,
    max_per_connection: usize,
    limit: Duration,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> usize {
    let deadline = tokio::time::Instant::now() + limit;
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let (url, stop) = (url.clone(), stop.clone());
            tokio::spawn(async move {
                let Ok(http) = reqwest::Client::builder().timeout(Duration::from_secs(5)).build() else { return 0 };
                let mut answered = 0;
                for _ in 0..max_per_connection {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) || tokio::time::Instant::now() > deadline {
                        break;
                    }
                    let sent = http.post(&url).body(r#"{"features":[5.1,3.5,1.4,0.2]}"#).send().await;
                    answered += usize::from(sent.is_ok_and(|r| r.status().is_success()));
                }
                answered
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap_or(0);
    }
    total
}

#[cfg(test)]
mod tests {
    use super::covers;

    #[test]
    fn covers_matches_prefixes() {
        assert!(covers("10.245.0.0/16", "10.245.9.9".parse().expect("ip")));
        assert!(!covers("10.245.0.0/16", "10.246.0.1".parse().expect("ip")));
        assert!(covers("0.0.0.0/0", "1.2.3.4".parse().expect("ip")));
    }
}
