//! Questions about a Node's instance, asked through InstancesV2 when the
//! provider has it and through the legacy Instances and Zones otherwise.

use k8s_openapi::api::core::v1::{Node, NodeAddress};
use overcast_cloud_provider::{CloudError, CloudProvider, InstanceMetadata};

use crate::node_helpers::provider_id;

/// What the cloud said about a Node's instance.
#[derive(Debug, Clone)]
pub(crate) struct CloudFacts {
    pub meta: InstanceMetadata,
    /// Upstream lets a legacy provider whose InstanceID is not implemented
    /// initialise Nodes without a providerID; in every other case a Node
    /// keeps its taint until it has one.
    pub provider_id_optional: bool,
}

/// The instance's metadata; `Ok(None)` when the provider has nothing to say yet.
pub(crate) async fn instance_metadata(
    cloud: &dyn CloudProvider,
    node: &Node,
) -> Result<Option<CloudFacts>, CloudError> {
    if let Some(v2) = cloud.instances_v2() {
        return Ok(v2.instance_metadata(node).await?.map(|meta| CloudFacts {
            meta,
            provider_id_optional: false,
        }));
    }
    let Some(v1) = cloud.instances() else {
        return Err(CloudError::NotImplemented);
    };
    let name = node.metadata.name.as_deref().unwrap_or_default();
    let (id, provider_id_optional) = match legacy_provider_id(cloud, node).await {
        Ok(id) => (id, false),
        Err(CloudError::NotImplemented) => (String::new(), true),
        Err(e) => return Err(e),
    };
    // An empty provider ID is never sent to the cloud as an instance ID
    // (kubernetes#85731); the by-name calls answer instead.
    let addresses = by_id_then_name(
        &id,
        |id| v1.node_addresses_by_provider_id(id),
        || v1.node_addresses(name),
    )
    .await?;
    // Deliberately friendlier than upstream: a provider that does not
    // implement instance types or zones still gets its Nodes initialised.
    let instance_type = match by_id_then_name(
        &id,
        |id| v1.instance_type_by_provider_id(id),
        || v1.instance_type(name),
    )
    .await
    {
        Ok(t) => t,
        Err(CloudError::NotImplemented) => String::new(),
        Err(e) => return Err(e),
    };
    let (zone, region) = match cloud.zones() {
        Some(zones) => {
            let zone = if id.is_empty() {
                zones.get_zone_by_node_name(name).await
            } else {
                match zones.get_zone_by_provider_id(&id).await {
                    Ok(z) => Ok(z),
                    Err(_) => zones.get_zone_by_node_name(name).await,
                }
            };
            match zone {
                Ok(z) => (z.failure_domain, z.region),
                Err(CloudError::NotImplemented) => Default::default(),
                Err(e) => return Err(e),
            }
        }
        None => Default::default(),
    };
    Ok(Some(CloudFacts {
        meta: InstanceMetadata {
            provider_id: id,
            instance_type,
            node_addresses: addresses,
            zone,
            region,
            additional_labels: Default::default(),
        },
        provider_id_optional,
    }))
}

/// Only the addresses, for the periodic refresh (upstream's
/// `getInstanceNodeAddresses`): one call per Node on a legacy provider.
pub(crate) async fn instance_addresses(
    cloud: &dyn CloudProvider,
    node: &Node,
) -> Result<Option<Vec<NodeAddress>>, CloudError> {
    if let Some(v2) = cloud.instances_v2() {
        return Ok(v2.instance_metadata(node).await?.map(|m| m.node_addresses));
    }
    let Some(v1) = cloud.instances() else {
        return Err(CloudError::NotImplemented);
    };
    let name = node.metadata.name.as_deref().unwrap_or_default();
    by_id_then_name(
        provider_id(node),
        |id| v1.node_addresses_by_provider_id(id),
        || v1.node_addresses(name),
    )
    .await
    .map(Some)
}

/// Tries the provider-ID call, then (on any error, or without an ID) the
/// by-name call, as upstream does.
async fn by_id_then_name<'a, T, FI, FN, FutI, FutN>(
    id: &'a str,
    by_id: FI,
    by_name: FN,
) -> Result<T, CloudError>
where
    FI: FnOnce(&'a str) -> FutI,
    FN: FnOnce() -> FutN,
    FutI: std::future::Future<Output = Result<T, CloudError>>,
    FutN: std::future::Future<Output = Result<T, CloudError>>,
{
    if !id.is_empty() {
        match by_id(id).await {
            Ok(v) => return Ok(v),
            Err(by_id_err) => {
                return by_name().await.map_err(|by_name_err| match by_name_err {
                    CloudError::NotImplemented => by_id_err,
                    other => CloudError::other(format!(
                        "error fetching node by provider ID: {by_id_err}, and error by node name: {other}"
                    )),
                });
            }
        }
    }
    by_name().await
}

/// spec.providerID, or `<provider>://<InstanceID(name)>` (upstream's
/// `GetInstanceProviderID`).
async fn legacy_provider_id(cloud: &dyn CloudProvider, node: &Node) -> Result<String, CloudError> {
    let existing = provider_id(node);
    if !existing.is_empty() {
        return Ok(existing.to_string());
    }
    let Some(v1) = cloud.instances() else {
        return Err(CloudError::NotImplemented);
    };
    let name = node.metadata.name.as_deref().unwrap_or_default();
    let id = v1.instance_id(name).await?;
    if id.is_empty() {
        return Err(CloudError::other(format!(
            "cloud provider returned an empty instance ID for node {name:?}"
        )));
    }
    Ok(format!("{}://{}", cloud.provider_name(), id))
}

/// Whether the instance exists. `Ok(false)` only on a definite answer: the
/// provider said false, or said InstanceNotFound. Upstream reads
/// InstanceNotFound as "gone" only from InstanceID; from InstanceExists it
/// logs and retries for ever, so a Node whose machine is gone is never
/// deleted (kubernetes#139301). Any other error is transient: never a deletion.
pub(crate) async fn instance_exists(
    cloud: &dyn CloudProvider,
    node: &Node,
) -> Result<bool, CloudError> {
    let answer = if let Some(v2) = cloud.instances_v2() {
        v2.instance_exists(node).await
    } else if let Some(v1) = cloud.instances() {
        match legacy_provider_id(cloud, node).await {
            Ok(id) => v1.instance_exists_by_provider_id(&id).await,
            Err(e) => Err(e),
        }
    } else {
        Err(CloudError::NotImplemented)
    };
    match answer {
        Err(CloudError::InstanceNotFound) => Ok(false),
        other => other,
    }
}

/// Whether the (existing) instance is shut down.
pub(crate) async fn instance_shutdown(
    cloud: &dyn CloudProvider,
    node: &Node,
) -> Result<bool, CloudError> {
    if let Some(v2) = cloud.instances_v2() {
        return v2.instance_shutdown(node).await;
    }
    let Some(v1) = cloud.instances() else {
        return Err(CloudError::NotImplemented);
    };
    let id = match legacy_provider_id(cloud, node).await {
        Ok(id) => id,
        Err(CloudError::NotImplemented | CloudError::InstanceNotFound) => return Ok(false),
        Err(e) => return Err(e),
    };
    match v1.instance_shutdown_by_provider_id(&id).await {
        Err(CloudError::NotImplemented | CloudError::InstanceNotFound) => Ok(false),
        other => other,
    }
}
