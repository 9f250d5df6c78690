//! A complete cloud-controller-manager for a made-up cloud, "minimal": every
//! Node's machine exists, is called `minimal://<node name>`, and has the
//! instance type and zone given in the cloud config file:
//!
//! ```text
//! instance-type = m1.small
//! zone = zone-a
//! ```
//!
//! Everything else (flags, leader election, health, metrics, the controllers)
//! comes from overcast-ccm.

use std::process::ExitCode;
use std::sync::Arc;

use async_trait::async_trait;
use overcast_cloud_provider::k8s_openapi::api::core::v1::{Node, NodeAddress};
use overcast_cloud_provider::{CloudError, CloudProvider, InstanceMetadata, InstancesV2};

#[derive(Debug, Default)]
struct Minimal {
    instance_type: String,
    zone: String,
}

impl Minimal {
    /// Parses `key = value` lines; an unknown key is an error naming it.
    fn from_config(config: Option<&[u8]>) -> Result<Self, CloudError> {
        let mut cloud = Minimal::default();
        let text = String::from_utf8_lossy(config.unwrap_or_default());
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, value) = line.split_once('=').ok_or_else(|| {
                CloudError::other(format!("line {}: expected key = value", n + 1))
            })?;
            match key.trim() {
                "instance-type" => cloud.instance_type = value.trim().to_string(),
                "zone" => cloud.zone = value.trim().to_string(),
                other => {
                    return Err(CloudError::other(format!(
                        "line {}: unknown key {other:?}",
                        n + 1
                    )));
                }
            }
        }
        Ok(cloud)
    }
}

impl CloudProvider for Minimal {
    fn provider_name(&self) -> &str {
        "minimal"
    }

    fn instances_v2(&self) -> Option<&dyn InstancesV2> {
        Some(self)
    }
}

#[async_trait]
impl InstancesV2 for Minimal {
    async fn instance_exists(&self, _node: &Node) -> Result<bool, CloudError> {
        Ok(true)
    }

    async fn instance_shutdown(&self, _node: &Node) -> Result<bool, CloudError> {
        Ok(false)
    }

    async fn instance_metadata(&self, node: &Node) -> Result<Option<InstanceMetadata>, CloudError> {
        let name = node.metadata.name.clone().unwrap_or_default();
        Ok(Some(InstanceMetadata {
            provider_id: format!("minimal://{name}"),
            instance_type: self.instance_type.clone(),
            node_addresses: vec![NodeAddress {
                type_: "Hostname".into(),
                address: name,
            }],
            zone: self.zone.clone(),
            ..Default::default()
        }))
    }
}

fn main() -> ExitCode {
    // The vendor's own binary: its name and version in --version, --help
    // and the User-Agent of every client.
    overcast_ccm::Ccm::builder()
        .name("minimal-ccm")
        .version(env!("CARGO_PKG_VERSION"))
        .provider("minimal", |config| {
            Ok(Arc::new(Minimal::from_config(config)?) as Arc<dyn CloudProvider>)
        })
        .run()
}
