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
