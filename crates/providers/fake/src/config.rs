//! The fake cloud as a `--cloud-config` file, so overcast-ccm (and the
//! benchmarks) can run against it:
//!
//! ```yaml
//! instances:                  # machines by Node name
//!   worker-1:
//!     instanceType: bm.large
//!     zone: rack-1
//!     region: eu-home
//!     addresses: [{type: InternalIP, address: 10.0.0.11}]
//! anyInstance:                # optional: every other Node name exists too,
//!   instanceType: bm.small    # with these answers (for scale tests)
//! ```

use std::collections::BTreeMap;

use overcast_cloud_provider::k8s_openapi::api::core::v1::NodeAddress;
use serde::Deserialize;

use crate::FakeInstance;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FakeConfig {
    #[serde(default)]
    pub instances: BTreeMap<String, InstanceConfig>,
    #[serde(default)]
    pub any_instance: Option<InstanceConfig>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InstanceConfig {
    #[serde(default, rename = "providerID")]
    pub provider_id: String,
    #[serde(default)]
    pub instance_type: String,
    #[serde(default)]
    pub zone: String,
    #[serde(default)]
    pub region: String,
    #[serde(default)]
    pub addresses: Vec<AddressConfig>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub shutdown: bool,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddressConfig {
    #[serde(rename = "type")]
    pub type_: String,
    pub address: String,
}

#[derive(Debug, thiserror::Error)]
#[error("fake cloud config: {0}")]
pub struct ConfigError(String);

impl InstanceConfig {
    pub(crate) fn to_instance(&self) -> FakeInstance {
        FakeInstance {
            provider_id: self.provider_id.clone(),
            instance_type: self.instance_type.clone(),
            addresses: self
                .addresses
                .iter()
                .map(|a| NodeAddress {
                    type_: a.type_.clone(),
                    address: a.address.clone(),
                })
                .collect(),
            zone: self.zone.clone(),
            region: self.region.clone(),
            additional_labels: self.labels.clone(),
            shutdown: self.shutdown,
        }
    }
}

pub fn parse(bytes: &[u8]) -> Result<FakeConfig, ConfigError> {
    let text = std::str::from_utf8(bytes).map_err(|e| ConfigError(format!("not UTF-8: {e}")))?;
    if text.trim().is_empty() {
        return Ok(FakeConfig::default());
    }
    overcast_cloud_provider::yaml::parse_yaml(text).map_err(|e| ConfigError(e.into()))
}
