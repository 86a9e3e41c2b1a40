//! Leader election on a `coordination.k8s.io/v1` Lease, in the manner of client-go: every replica
//! tries; the holder renews every `retry` and gives up leadership when it has not renewed for
//! `renew_deadline` (shorter than the lease duration, as there is no fencing). A lease is taken
//! over only after its record stayed unchanged for a whole lease duration of *our* clock.
//!
//! The budget after a partition: the holder declares loss exactly `renew_deadline` after the start
//! of its last successful renewal; a standby takes over no sooner than `lease_duration` after it
//! saw that renewal. In between (5 s by default) the old leader's in-flight work gets
//! `stop_grace`, and then its controller is dropped (see `write_gate` for the request timeouts).

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tracing::{debug, info, warn};

#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// Unique per replica (the pod name in a cluster).
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry: Duration,
    /// How long in-flight reconciles may run on after leadership was lost (or shutdown began)
    /// before the controller is dropped, cancelling them.
    pub stop_grace: Duration,
}

impl LeaseConfig {
    pub fn new(namespace: String, name: String, identity: String) -> Self {
        Self {
            namespace,
            name,
            identity,
            // A standby takes over at most `lease_duration` + `retry` after the leader's last
            // renewal (12 s), inside the 15 s failover target; the 4 s between the renew deadline
            // and expiry is more than any request of the leader may last (write_gate's timeouts).
            lease_duration: Duration::from_secs(10),
            renew_deadline: Duration::from_secs(6),
            retry: Duration::from_secs(2),
            stop_grace: Duration::from_secs(2),
        }
    }
}

pub struct Elector {
    api: Api<Lease>,
    cfg: LeaseConfig,
    /// The last lease record seen from another holder and when we first saw it.
    observed: Option<(String, Instant)>,
    /// When the last successful acquire or renewal *started*: the renewTime it wrote is no
    /// earlier, so every standby's count towards expiry starts later than this.
    renewed_at: tokio::time::Instant,
}

/// The parts of a lease record that change on every renewal.
fn record_key(spec: &LeaseSpec) -> String {
    format!(
        "{}|{}|{}",
        spec.holder_identity.as_deref().unwrap_or_default(),
        spec.renew_time.as_ref().map(|t| t.0.to_string()).unwrap_or_default(),
        spec.lease_transitions.unwrap_or(0)
    )
}

fn now() -> MicroTime {
    MicroTime(jiff::Timestamp::now())
}

impl Elector {
    /// `client` should not retry on its own (a stalled renewal must fail, not hang).
    pub fn new(client: kube::Client, cfg: LeaseConfig) -> Self {
        Self {
            api: Api::namespaced(client, &cfg.namespace),
            cfg,
            observed: None,
            renewed_at: tokio::time::Instant::now(),
        }
    }

    fn duration_secs(&self) -> i32 {
        self.cfg.lease_duration.as_secs() as i32
    }

    /// One attempt to acquire or renew. `Ok(true)` when we hold the lease afterwards.
    async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let started = tokio::time::Instant::now();
        let held = self.acquire_or_renew_once().await?;
        if held {
            self.renewed_at = started;
        }
        Ok(held)
    }

    async fn acquire_or_renew_once(&mut self) -> Result<bool, kube::Error> {
        let me = self.cfg.identity.clone();
        let Some(mut lease) = self.api.get_opt(&self.cfg.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.cfg.name.clone()), ..Default::default() },
                spec: Some(LeaseSpec {
                    holder_identity: Some(me),
                    lease_duration_seconds: Some(self.duration_secs()),
                    acquire_time: Some(now()),
                    renew_time: Some(now()),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        let holder = spec.holder_identity.clone().unwrap_or_default();
        if holder != me && !holder.is_empty() {
            let key = record_key(spec);
            let first_seen = match &self.observed {
                Some((k, at)) if *k == key => *at,
                _ => {
                    self.observed = Some((key, Instant::now()));
                    Instant::now()
                }
            };
            let held_for = Duration::from_secs(spec.lease_duration_seconds.unwrap_or(10).max(1) as u64);
            if first_seen.elapsed() < held_for {
                debug!(holder, "lease held by another replica");
                return Ok(false);
            }
            info!(previous = holder, "lease expired; taking over");
        }
        if holder != me {
            spec.acquire_time = Some(now());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            spec.holder_identity = Some(me);
        }
        spec.renew_time = Some(now());
        spec.lease_duration_seconds = Some(self.duration_secs());
        // The resourceVersion from our GET makes this a compare-and-swap: a concurrent writer wins.
        match self.api.replace(&self.cfg.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits until this replica holds the lease.
    pub async fn acquire(&mut self) {
        info!(lease = %self.cfg.name, namespace = %self.cfg.namespace, identity = %self.cfg.identity, "waiting for leadership");
        loop {
            match tokio::time::timeout(self.cfg.retry, self.try_acquire_or_renew()).await {
                Ok(Ok(true)) => {
                    info!(identity = %self.cfg.identity, "acquired leadership");
                    return;
                }
                Ok(Ok(false)) => {}
                Ok(Err(e)) => warn!(error = %e, "lease acquire attempt failed"),
                Err(_) => warn!("lease acquire attempt timed out"),
            }
            tokio::time::sleep(self.cfg.retry).await;
        }
    }

    /// Renews until leadership is lost: another holder took over, or no renewal succeeded
    /// within the renew deadline (counted from the start of the last successful one, and
    /// enforced to the instant: no attempt or pause runs past it). Returns the reason.
    pub async fn hold(&mut self) -> String {
        loop {
            let deadline = self.renewed_at + self.cfg.renew_deadline;
            tokio::time::sleep_until((tokio::time::Instant::now() + self.cfg.retry).min(deadline)).await;
            if tokio::time::Instant::now() >= deadline {
                return format!("no successful renewal for {:?}", self.cfg.renew_deadline);
            }
            let attempt_deadline = (tokio::time::Instant::now() + self.cfg.retry).min(deadline);
            match tokio::time::timeout_at(attempt_deadline, self.try_acquire_or_renew()).await {
                Ok(Ok(true)) => {}
                Ok(Ok(false)) => return "another replica holds the lease".into(),
                Ok(Err(e)) => warn!(error = %e, "lease renewal failed"),
                Err(_) => warn!("lease renewal timed out"),
            }
        }
    }

    /// Gives the lease up (on clean shutdown) so a standby takes over at once.
    pub async fn release(&mut self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.cfg.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.cfg.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now());
        match self.api.replace(&self.cfg.name, &PostParams::default(), &lease).await {
            Ok(_) => info!("released leadership"),
            Err(e) => warn!(error = %e, "cannot release the lease"),
        }
    }
}

/// Runs `work` until `stop` resolves, then calls `wind_down` (the controller's graceful-shutdown
/// trigger) and lets `work` finish for at most `grace`, then drops it, which cancels whatever it
/// still runs: a reconcile stuck on a stalled connection must not keep an old leader running.
/// Returns what `stop` resolved to, or `None` when `work` ended first.
pub async fn run_until_stopped<S>(
    work: impl Future<Output = ()>,
    stop: impl Future<Output = S>,
    wind_down: impl FnOnce(),
    grace: Duration,
) -> Option<S> {
    tokio::pin!(work, stop);
    let why = tokio::select! {
        why = &mut stop => why,
        _ = &mut work => return None,
    };
    wind_down();
    if tokio::time::timeout(grace, &mut work).await.is_err() {
        warn!(?grace, "reconciles still running after the grace period; cancelling them");
    }
    Some(why)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A fake API server: no Lease at first, the create succeeds, and every later request hangs
    /// (a connection that stalled after we acquired).
    fn stalls_after_acquire() -> kube::Client {
        let seen = Arc::new(AtomicUsize::new(0));
        let server = tower::service_fn(move |req: http::Request<kube::client::Body>| {
            let n = seen.fetch_add(1, Ordering::SeqCst);
            let method = req.method().clone();
            async move {
                let (status, body) = match (n, method) {
                    (0, http::Method::GET) => (
                        404,
                        serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                            "reason": "NotFound", "code": 404, "message": "not found"}),
                    ),
                    (1, http::Method::POST) => (
                        201,
                        serde_json::json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                            "metadata": {"name": "l", "namespace": "ns"}}),
                    ),
                    _ => std::future::pending().await,
                };
                let body = kube::client::Body::from(body.to_string().into_bytes());
                http::Response::builder().status(status).body(body)
            }
        });
        kube::Client::new(server, "default")
    }

    /// Sets its flag when dropped.
    struct Dropped(Arc<std::sync::atomic::AtomicBool>);

    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn work_that_ignores_the_stop_is_dropped_after_the_grace() {
        let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let guard = Dropped(dropped.clone());
        let stuck = async move {
            let _guard = guard;
            std::future::pending::<()>().await
        };
        let grace = Duration::from_millis(200);
        let started = Instant::now();
        let why =
            tokio::time::timeout(Duration::from_secs(5), run_until_stopped(stuck, async { "lost" }, || {}, grace))
                .await
                .expect("stopped despite the stuck work");
        assert_eq!(why, Some("lost"));
        assert!(started.elapsed() >= grace, "dropped before the grace ran out");
        assert!(dropped.load(Ordering::SeqCst), "the stuck work was not dropped (cancelled)");
    }

    #[tokio::test]
    async fn work_that_winds_down_in_time_finishes() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let finished = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let done = finished.clone();
        let work = async move {
            let _ = rx.await;
            done.store(true, Ordering::SeqCst);
        };
        let why = run_until_stopped(
            work,
            async { 7 },
            move || {
                let _ = tx.send(());
            },
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(why, Some(7));
        assert!(finished.load(Ordering::SeqCst), "the work did not finish its wind-down");
        let ended = run_until_stopped(async {}, std::future::pending::<()>(), || {}, Duration::ZERO).await;
        assert_eq!(ended, None, "work that ends on its own is reported as such");
    }

    #[tokio::test]
    async fn loss_is_declared_at_the_renew_deadline_when_renewals_hang() {
        let cfg = LeaseConfig {
            lease_duration: Duration::from_secs(3),
            renew_deadline: Duration::from_millis(1000),
            retry: Duration::from_millis(400),
            ..LeaseConfig::new("ns".into(), "l".into(), "me".into())
        };
        let mut elector = Elector::new(stalls_after_acquire(), cfg);
        let started = Instant::now();
        tokio::time::timeout(Duration::from_secs(5), elector.acquire()).await.expect("acquired");
        let reason = tokio::time::timeout(Duration::from_secs(5), elector.hold()).await.expect("loss declared");
        let elapsed = started.elapsed();
        assert!(reason.contains("no successful renewal"), "{reason}");
        // A standby may take over `lease_duration` after our last renewal: loss must be declared
        // at the renew deadline, not one or two retry periods later.
        assert!(elapsed >= Duration::from_millis(1000), "declared loss before the deadline: {elapsed:?}");
        assert!(elapsed < Duration::from_millis(1300), "declared loss {elapsed:?} after the last renewal");
    }
}
