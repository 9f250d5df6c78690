//! The cloud controllers of the cloud-controller-manager, with the semantics
//! of k8s.io/cloud-provider's: each module has a pure decision part (unit
//! tested) and thin wiring to the Kubernetes API (integration tested against a
//! real apiserver).

pub mod cidr;
mod cloud_instances;
pub mod context;
pub mod events;
pub mod informer;
pub mod metrics;
pub mod node;
pub mod node_helpers;
pub mod node_ipam;
pub mod node_lifecycle;
pub mod route;
pub mod service;
pub mod workqueue;

pub use context::Context;
