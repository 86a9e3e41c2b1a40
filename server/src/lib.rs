//! The Modelship inference server as a library: artifacts, training, loading, and the HTTP API.
//!
//! `main.rs` only parses flags and calls into here; the router is [`router::app`], tested with
//! `tower::ServiceExt::oneshot` without a socket.

pub mod artifact;
pub mod atomic_histogram;
pub mod batch;
pub mod batch_output;
pub mod error;
pub mod features;
pub mod http;
pub mod infer_request;
pub mod load;
pub mod metrics;
pub mod mlflow;
pub mod model;
pub mod onnx;
pub mod router;
pub mod serve;
pub mod shard;
pub mod sklearn;
pub mod train;
pub mod v2;

pub use artifact::Artifact;
pub use model::Model;
