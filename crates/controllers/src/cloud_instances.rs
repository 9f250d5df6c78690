//! Questions about a Node's instance, asked through InstancesV2 when the
//! provider has it and through the legacy Instances and Zones otherwise.

use k8s_openapi::api::core::v1::Node;
use overcast_cloud_provider::{CloudError, CloudProvider, InstanceMetadata};

use crate::node_helpers::provider_id;

/// The instance's metadata; `Ok(None)` when the provider has nothing to say yet.
pub(crate) async fn instance_metadata(
    cloud: &dyn CloudProvider,
    node: &Node,
) -> Result<Option<InstanceMetadata>, CloudError> {
    if let Some(v2) = cloud.instances_v2() {
        return v2.instance_metadata(node).await;
    }
    let Some(v1) = cloud.instances() else {
        return Err(CloudError::NotImplemented);
    };
    let name = node.metadata.name.as_deref().unwrap_or_default();
    let id = match legacy_provider_id(cloud, node).await {
        Ok(id) => id,
        Err(CloudError::NotImplemented) => String::new(),
        Err(e) => return Err(e),
    };
    // An empty provider ID is never sent to the cloud as an instance ID
    // (kubernetes#85731); the by-name calls answer instead.
    let addresses = match by_id_then_name(
        &id,
        |id| v1.node_addresses_by_provider_id(id),
        || v1.node_addresses(name),
    )
    .await
    {
        Ok(a) => a,
        Err(e) => return Err(e),
    };
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
    Ok(Some(InstanceMetadata {
        provider_id: id,
        instance_type,
        node_addresses: addresses,
        zone,
        region,
        additional_labels: Default::default(),
    }))
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
/// provider said false, or said InstanceNotFound (also from InstancesV2, where
/// upstream would keep retrying forever, kubernetes#139301).
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
