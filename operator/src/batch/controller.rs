//! The MLBatchJob controller: reconciles an MLBatchJob when it changes, when one of its Jobs
//! (one-off or from its CronJob: both carry its label) or its CronJob changes, and when the
//! MLModel its `modelRef` names changes.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use kube::runtime::controller::Config as ControllerConfig;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, ResourceExt};
use modelship_crds::{MLBatchJob, MLModel};
use tracing::{info, warn};

use super::BATCH_JOB_LABEL;
use crate::reconcile::Context;

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Whether the cluster serves MLBatchJobs (its CRD may be older than this operator).
pub async fn available(client: &Client, namespace: Option<&str>) -> bool {
    match api::<MLBatchJob>(client, namespace).list(&kube::api::ListParams::default().limit(1)).await {
        Ok(_) => true,
        Err(e) => {
            warn!(error = %e, "MLBatchJobs are not served (install crds/mlbatchjob.yaml); batch jobs are off");
            false
        }
    }
}

/// Runs until `stop` resolves. `client` watches; `ctx.client` reads and writes (gated).
pub async fn run(
    client: Client,
    namespace: Option<String>,
    ctx: Arc<Context>,
    config: ControllerConfig,
    stop: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let ns = namespace.as_deref();
    let labelled = || watcher::Config::default().labels(BATCH_JOB_LABEL);
    let controller = Controller::new(api::<MLBatchJob>(&client, ns), watcher::Config::default());
    let batch_jobs = controller.store();
    info!("starting the MLBatchJob controller");
    controller
        .with_config(config)
        .owns(api::<CronJob>(&client, ns), labelled())
        .watches(api::<Job>(&client, ns), labelled(), |job: Job| {
            let name = job.labels().get(BATCH_JOB_LABEL)?.clone();
            Some(ObjectRef::<MLBatchJob>::new(&name).within(&job.namespace()?))
        })
        .watches(api::<MLModel>(&client, ns), watcher::Config::default(), move |model: MLModel| {
            let ns = model.namespace();
            batch_jobs
                .state()
                .into_iter()
                .filter(|b| {
                    b.namespace() == ns && b.spec.model_ref.as_ref().is_some_and(|r| r.name == model.name_any())
                })
                .map(|b| ObjectRef::from_obj(&*b))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(stop)
        .run(super::reconcile::reconcile, super::reconcile::error_policy, ctx)
        .for_each(|res| async move {
            match res {
                Ok(_) | Err(kube::runtime::controller::Error::ReconcilerFailed(..)) => {}
                Err(other) => warn!(error = %other, "MLBatchJob controller event"),
            }
        })
        .await;
    info!("MLBatchJob controller stopped");
}
