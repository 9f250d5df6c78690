//! InstancesV2 from the inventory: a machine not listed does not exist, a
//! `stopped` one is shut down.

use async_trait::async_trait;
use overcast_cloud_provider::k8s_openapi::api::core::v1::{Node, NodeAddress};
use overcast_cloud_provider::{InstanceMetadata, InstancesV2, Result};

use crate::LocalCloud;
use crate::config::Instance;

fn node_provider_id(node: &Node) -> Option<&str> {
    node.spec.as_ref()?.provider_id.as_deref()
}

impl LocalCloud {
    fn instance_of(&self, node: &Node) -> Option<Instance> {
        let name = node.metadata.name.as_deref().unwrap_or_default();
        self.config()
            .instance(name, node_provider_id(node))
            .cloned()
    }
}

#[async_trait]
impl InstancesV2 for LocalCloud {
    async fn instance_exists(&self, node: &Node) -> Result<bool> {
        Ok(self.instance_of(node).is_some())
    }

    async fn instance_shutdown(&self, node: &Node) -> Result<bool> {
        Ok(self.instance_of(node).is_some_and(|i| i.stopped))
    }

    async fn instance_metadata(&self, node: &Node) -> Result<Option<InstanceMetadata>> {
        let Some(i) = self.instance_of(node) else {
            // Not (yet) in the inventory: the Node stays uninitialised.
            return Ok(None);
        };
        Ok(Some(InstanceMetadata {
            provider_id: i.provider_id,
            instance_type: i.instance_type,
            node_addresses: i
                .addresses
                .into_iter()
                .map(|(type_, address)| NodeAddress { type_, address })
                .collect(),
            zone: i.zone,
            region: i.region,
            additional_labels: i.labels,
        }))
    }
}
