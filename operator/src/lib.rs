//! The Modelship operator as a library: pure builders (`desired`, `status`), the reconcile
//! (`reconcile`), model-source resolution, leader election with its write gate, and metrics.

pub mod api_requests;
pub mod apply;
pub mod batch;
pub mod caches;
pub mod desired;
pub mod error;
pub mod failures;
pub mod health;
pub mod intent;
pub mod leader;
pub mod metrics;
pub mod observe;
pub mod ownership;
pub mod plan;
pub mod pod_spec;
pub mod reconcile;
pub mod registry;
pub mod rollback;
pub mod source;
pub mod status;
pub mod traffic;
pub mod validate;
pub mod versions;
pub mod write_gate;
