//! Writes only while leading. The reconcile client carries a tower layer that refuses every
//! mutating request unless this replica holds the leader Lease, and short timeouts so that no
//! request outlives the margin between declaring loss and a standby taking over.
//!
//! There is no fencing in Kubernetes: a write the old leader sends after a standby took over is
//! applied. The gate closes the moment loss is declared (before the controller is stopped), so
//! nothing mutating is *issued* from then on, including by tasks the controller does not own
//! (Event publishing is spawned).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::{Either, MapErr, Ready, TryFutureExt};
use http::{Method, Request};
use tower::{BoxError, Layer, Service};

/// Time to establish a connection (TCP and TLS) on the reconcile and lease clients.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait for the API server to read a request or send response bytes. Both stay well
/// under lease duration − renew deadline (5 s with the defaults), the time between declaring loss
/// and a standby taking over. A pooled connection idle for that long may be closed too (the next
/// request opens a new one).
pub const READ_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest a request may take to be written to the connection.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// A shared "this replica may write" flag: open while leading, closed otherwise.
#[derive(Clone, Debug, Default)]
pub struct WriteGate(Arc<AtomicBool>);

impl WriteGate {
    /// A gate that refuses writes until [`WriteGate::open`].
    pub fn closed() -> Self {
        Self::default()
    }

    /// Lets mutating requests through (on acquiring the Lease, or without leader election).
    pub fn open(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Refuses mutating requests from now on (on losing the Lease, before anything else).
    pub fn close(&self) {
        self.0.store(false, Ordering::SeqCst);
    }

    pub fn is_open(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// The error a refused request fails with (kube reports it as `ServiceError: ...`).
#[derive(Debug, thiserror::Error)]
#[error("refusing {method} {path}: this replica does not hold the leader Lease")]
pub struct NotLeader {
    method: Method,
    path: String,
}

/// Reads (GET, and thus list and watch; HEAD, OPTIONS) never change the cluster.
fn is_read(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

impl<S> Layer<S> for WriteGate {
    type Service = Gated<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Gated { inner, gate: self.clone() }
    }
}

/// A service that passes reads through and writes only while its gate is open.
#[derive(Clone, Debug)]
pub struct Gated<S> {
    inner: S,
    gate: WriteGate,
}

type Refused<R> = Ready<Result<R, BoxError>>;

impl<S, B> Service<Request<B>> for Gated<S>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Either<MapErr<S::Future, fn(S::Error) -> BoxError>, Refused<S::Response>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if is_read(req.method()) || self.gate.is_open() {
            return Either::Left(self.inner.call(req).map_err(Into::into as fn(S::Error) -> BoxError));
        }
        let refused = NotLeader { method: req.method().clone(), path: req.uri().path().to_string() };
        Either::Right(futures::future::ready(Err(Box::new(refused) as BoxError)))
    }
}

/// `config` with bounded connect, read and write times and without kube's retry layer (which
/// retries 429/503/504 for up to minutes); a failed request fails the reconcile, and the
/// controller requeues it.
pub fn bounded_config(config: &kube::Config) -> kube::Config {
    let mut config = config.clone();
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    config.read_timeout = Some(READ_TIMEOUT);
    config.write_timeout = Some(WRITE_TIMEOUT);
    // Count the read timeout from when a request is sent, not from when its pooled connection
    // went idle.
    config.reset_reader_on_write = true;
    config.default_retry = false;
    config
}

/// The client for reconciles and Events: bounded (see [`bounded_config`]) and gated by `gate`;
/// the requests that pass the gate are counted by `count`.
pub fn gated_client(
    config: &kube::Config,
    gate: &WriteGate,
    count: &crate::api_requests::CountRequests,
) -> Result<kube::Client, kube::Error> {
    Ok(kube::client::ClientBuilder::try_from(bounded_config(config))?.with_layer(count).with_layer(gate).build())
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::AtomicUsize;

    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::Api;
    use kube::api::{Patch, PatchParams};

    use super::*;

    /// A client over a fake API server that answers every request with an empty ConfigMap (that
    /// also reads as an empty list) and counts the requests that reached it.
    fn client(gate: &WriteGate) -> (kube::Client, Arc<AtomicUsize>) {
        let reached = Arc::new(AtomicUsize::new(0));
        let counter = reached.clone();
        let server = tower::service_fn(move |_req: Request<kube::client::Body>| {
            counter.fetch_add(1, Ordering::SeqCst);
            let body =
                serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "items": []});
            let response = http::Response::new(kube::client::Body::from(body.to_string().into_bytes()));
            async move { Ok::<_, Infallible>(response) }
        });
        (kube::Client::new(gate.layer(server), "default"), reached)
    }

    fn patch() -> Patch<serde_json::Value> {
        Patch::Apply(serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap"}))
    }

    #[tokio::test]
    async fn a_closed_gate_refuses_writes_naming_the_request_and_lets_reads_through() {
        let gate = WriteGate::closed();
        let (client, reached) = client(&gate);
        let api: Api<ConfigMap> = Api::namespaced(client, "ns");
        api.get("c").await.expect("a GET passes a closed gate");
        api.list(&Default::default()).await.expect("a LIST passes a closed gate");
        assert_eq!(reached.load(Ordering::SeqCst), 2);

        let err = api.patch("c", &PatchParams::apply("m"), &patch()).await.expect_err("a PATCH is refused");
        let text = err.to_string();
        assert!(text.contains("refusing PATCH /api/v1/namespaces/ns/configmaps/c"), "{text}");
        assert!(text.contains("does not hold the leader Lease"), "{text}");
        let err = api.delete("c", &Default::default()).await.expect_err("a DELETE is refused");
        assert!(err.to_string().contains("refusing DELETE"), "{err}");
        let err = api.create(&Default::default(), &ConfigMap::default()).await.expect_err("a POST is refused");
        assert!(err.to_string().contains("refusing POST"), "{err}");
        assert_eq!(reached.load(Ordering::SeqCst), 2, "a refused write reached the API server");
    }

    #[tokio::test]
    async fn the_gate_follows_leadership() {
        let gate = WriteGate::closed();
        let (client, reached) = client(&gate);
        let api: Api<ConfigMap> = Api::namespaced(client, "ns");
        gate.open();
        api.patch("c", &PatchParams::apply("m"), &patch()).await.expect("an open gate lets writes through");
        assert_eq!(reached.load(Ordering::SeqCst), 1);
        gate.close();
        api.patch("c", &PatchParams::apply("m"), &patch()).await.expect_err("closed again after loss");
        assert_eq!(reached.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn no_request_outlives_the_margin_between_loss_and_takeover() {
        let lease = crate::leader::LeaseConfig::new("ns".into(), "l".into(), "me".into());
        let margin = lease.lease_duration - lease.renew_deadline;
        for timeout in [CONNECT_TIMEOUT, READ_TIMEOUT, WRITE_TIMEOUT, lease.stop_grace] {
            assert!(timeout < margin, "{timeout:?} is not under the {margin:?} margin");
        }
        let config = bounded_config(&kube::Config::new("https://127.0.0.1:1".parse().expect("a URL")));
        assert_eq!(config.read_timeout, Some(READ_TIMEOUT));
        assert!(!config.default_retry, "kube's retry layer can wait for minutes");
    }
}
