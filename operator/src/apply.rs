//! The apply phase: sends a [`Plan`]'s writes, in order, and keeps what the API server answered
//! for the Deployments (status is computed from those).

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Service;
use kube::api::{ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions};
use kube::{Api, Client, Resource};
use modelship_crds::FIELD_MANAGER;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tracing::info;

use crate::error::{Error, KubeContext, is_refusal};
use crate::metrics::Metrics;
use crate::observe::http_route_api;
use crate::plan::{Kind, Plan, Write};

/// Field manager used only to hand `spec.replicas` over to an HPA (see [`Write::HandOverReplicas`]).
pub const HANDOVER_MANAGER: &str = "modelship-operator-handover";

/// What the writes produced.
#[derive(Debug, Default)]
pub struct Applied {
    /// The Deployments as the API server returned them from our applies.
    pub deployments: Vec<Deployment>,
    /// The HTTPRoute apply met a cluster that does not serve the HTTPRoute API.
    pub route_missing: bool,
}

impl Applied {
    pub fn deployment(&self, name: &str) -> Option<&Deployment> {
        self.deployments.iter().find(|d| d.metadata.name.as_deref() == Some(name))
    }
}

/// Sends `plan`'s writes for the model `model` in namespace `ns`.
pub async fn execute(client: &Client, metrics: &Metrics, model: &str, ns: &str, plan: &Plan) -> Result<Applied, Error> {
    for action in &plan.unchanged {
        metrics.apply_skipped(action);
    }
    let mut applied = Applied::default();
    for write in &plan.writes {
        match write {
            Write::Apply { kind, name, action, body } => {
                metrics.applied(action);
                match kind {
                    Kind::Deployment => applied.deployments.push(send(client, ns, name, action, body).await?),
                    Kind::Service => drop(send::<Service>(client, ns, name, action, body).await?),
                    Kind::HorizontalPodAutoscaler => {
                        drop(send::<HorizontalPodAutoscaler>(client, ns, name, action, body).await?)
                    }
                    Kind::HttpRoute => applied.route_missing = !send_route(client, ns, name, body).await?,
                }
            }
            Write::HandOverReplicas { name, replicas } => {
                let patch =
                    serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"replicas": replicas}});
                let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
                let pp = PatchParams::apply(HANDOVER_MANAGER);
                api.patch(name, &pp, &Patch::Apply(patch)).await.during("hand over replicas")?;
            }
            Write::Delete { kind, name, action, uid } => {
                if delete(client, ns, *kind, name, uid.clone(), action).await? {
                    info!(model, namespace = ns, object = %name, action, "deleted");
                }
            }
        }
    }
    Ok(applied)
}

fn force() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

async fn send<K>(client: &Client, ns: &str, name: &str, action: &'static str, body: &Value) -> Result<K, Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    api.patch(name, &force(), &Patch::Apply(body)).await.map_err(|e| refused(e, &K::kind(&()), name, action))
}

/// Applies the HTTPRoute; `Ok(false)` when the cluster does not serve the HTTPRoute API.
async fn send_route(client: &Client, ns: &str, name: &str, body: &Value) -> Result<bool, Error> {
    match http_route_api(client, ns).patch(name, &force(), &Patch::Apply(body)).await {
        Ok(_) => Ok(true),
        // An apply creates a missing object, so a 404 means the resource type itself is missing.
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(e) => Err(refused(e, "HTTPRoute", name, "apply HTTPRoute")),
    }
}

/// Deletes `name` if its uid is still `uid`; `Ok(false)` when it is already gone or replaced.
async fn delete(
    client: &Client,
    ns: &str,
    kind: Kind,
    name: &str,
    uid: Option<String>,
    action: &'static str,
) -> Result<bool, Error> {
    let api: Api<DynamicObject> = match kind {
        Kind::HttpRoute => http_route_api(client, ns),
        Kind::Service => Api::namespaced_with(client.clone(), ns, &ApiResource::erase::<Service>(&())),
        Kind::Deployment => Api::namespaced_with(client.clone(), ns, &ApiResource::erase::<Deployment>(&())),
        Kind::HorizontalPodAutoscaler => {
            Api::namespaced_with(client.clone(), ns, &ApiResource::erase::<HorizontalPodAutoscaler>(&()))
        }
    };
    let dp = DeleteParams { preconditions: Some(Preconditions { uid, resource_version: None }), ..Default::default() };
    match api.delete(name, &dp).await {
        // Already gone, or replaced by another object of that name: nothing of ours to delete.
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(false),
        other => other.during(action).map(|_| true),
    }
}

/// A write the API server refuses for its content becomes [`Error::Rejected`] with its message.
fn refused(e: kube::Error, kind: &str, name: &str, action: &'static str) -> Error {
    match e {
        kube::Error::Api(s) if is_refusal(&s) => {
            Error::Rejected { kind: kind.into(), name: name.into(), message: s.message }
        }
        source => Error::Kube { action, source },
    }
}
