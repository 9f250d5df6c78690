//! The cloud provider trait surface of Overcast, the Rust counterpart of
//! k8s.io/cloud-provider's `cloud.go`.
//!
//! A provider implements [`CloudProvider`] and returns the parts it supports
//! ([`InstancesV2`], [`Instances`], [`LoadBalancer`], [`Routes`], [`Zones`],
//! [`Clusters`]); the controllers in `overcast-controllers` give it the complete
//! behaviour of the upstream cloud-controller-manager. The provider sees the
//! cluster through the [`ProviderContext`] handed to
//! [`CloudProvider::initialize`]: the controllers' caches of Nodes and
//! Services, an Event recorder and clients; this crate itself does no
//! Kubernetes I/O. A provider may add controllers of its own
//! ([`ControllerSpec`], [`NodeController`]), which the CCM queues and runs
//! beside upstream's.

#![warn(missing_docs)]

mod cloud;
mod context;
mod controller;
pub mod duration;
mod error;
pub mod metrics;
pub mod names;
mod registry;
pub mod service_helpers;
pub mod yaml;

pub use cloud::{
    CloudProvider, Clusters, InstanceMetadata, Instances, InstancesV2, LoadBalancer,
    LoadBalancerPreview, Route, Routes, Zone, Zones, default_load_balancer_name,
};
pub use context::{
    ClusterAccess, EventRecorder, EventType, ObjectCache, ProviderContext, Recorder, Snapshot,
    object_reference,
};
pub use controller::{
    ControllerFlag, ControllerSpec, FlagCheck, FlagKind, FlagValues, NodeController, NodeSync,
    NodeWork, QueueSettings,
};
pub use error::{CloudError, Result};
pub use registry::{Factory, ProviderRegistry, RegistryError};

/// Re-exported so providers name the same Kubernetes types as the controllers.
pub use k8s_openapi;
/// Re-exported for the client type of [`ProviderContext::client`].
pub use kube;
/// Re-exported for the registry of [`ProviderContext::metrics`].
pub use prometheus;
