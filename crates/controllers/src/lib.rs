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
pub mod provider_node;
pub mod route;
pub mod service;
pub mod workqueue;

pub use context::Context;

/// The questions the node controllers ask about a Node's machine, as they
/// ask them (InstancesV2 when the provider has it, else the legacy
/// Instances and Zones), for tools that must predict what they would do.
pub mod instances {
    use k8s_openapi::api::core::v1::Node;
    use overcast_cloud_provider::{CloudError, CloudProvider, InstanceMetadata};

    /// Whether the machine exists; `Ok(false)` only on a definite answer.
    pub async fn exists(cloud: &dyn CloudProvider, node: &Node) -> Result<bool, CloudError> {
        crate::cloud_instances::instance_exists(cloud, node).await
    }

    /// The machine's metadata, as the cloud-node controller reads it.
    pub async fn metadata(
        cloud: &dyn CloudProvider,
        node: &Node,
    ) -> Result<Option<InstanceMetadata>, CloudError> {
        Ok(crate::cloud_instances::instance_metadata(cloud, node)
            .await?
            .map(|facts| facts.meta))
    }
}
