//! Reading and writing Nodes the way every controller here does.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Taint};
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::Value;

/// Attempts of an optimistic write before giving up (upstream's RetryOnConflict
/// with 5 steps of 100 ms).
const CONFLICT_ATTEMPTS: usize = 5;
const CONFLICT_PAUSE: Duration = Duration::from_millis(100);

pub(crate) fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.is_conflict())
}

pub(crate) fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.is_not_found())
}

pub fn has_taint(node: &Node, key: &str) -> bool {
    taints(node).iter().any(|t| t.key == key)
}

pub fn taints(node: &Node) -> &[Taint] {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default()
}

pub fn provider_id(node: &Node) -> &str {
    node.spec
        .as_ref()
        .and_then(|s| s.provider_id.as_deref())
        .unwrap_or_default()
}

/// spec.podCIDRs, or the older single spec.podCIDR.
pub fn pod_cidrs(node: &Node) -> Vec<String> {
    let spec = node.spec.as_ref();
    match spec.and_then(|s| s.pod_cidrs.clone()) {
        Some(list) if !list.is_empty() => list,
        _ => spec.and_then(|s| s.pod_cidr.clone()).into_iter().collect(),
    }
}

/// Ready condition is True. A missing condition counts as Unknown, i.e. not ready.
pub fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

/// Patches an object with a JSON merge patch that `compute` derives from the
/// object as it is; the patch carries that object's resourceVersion, so an
/// object changed meanwhile is re-read and the patch recomputed (optimistic
/// lock), and no other writer's change is lost. `compute` returning `None`
/// means nothing to write. The first try uses `cached`, saving a read.
pub(crate) async fn patch_optimistic<K>(
    api: &Api<K>,
    cached: &K,
    field_manager: &str,
    mut compute: impl FnMut(&K) -> Option<Value>,
) -> Result<Option<K>, kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let name = cached.name_any();
    let params = field_manager_params(field_manager);
    let mut current = cached.clone();
    for attempt in 1..=CONFLICT_ATTEMPTS {
        let Some(mut patch) = compute(&current) else {
            return Ok(None);
        };
        patch["metadata"]["resourceVersion"] = Value::from(current.resource_version());
        match api.patch(&name, &params, &Patch::Merge(&patch)).await {
            Ok(obj) => return Ok(Some(obj)),
            Err(e) if is_conflict(&e) && attempt < CONFLICT_ATTEMPTS => {
                tokio::time::sleep(CONFLICT_PAUSE).await;
                current = api.get(&name).await?;
            }
            Err(e) => return Err(e),
        }
    }
    unreachable!("the last attempt returns")
}

/// [`patch_optimistic`] for Nodes.
pub(crate) async fn patch_node(
    api: &Api<Node>,
    cached: &Node,
    field_manager: &str,
    compute: impl FnMut(&Node) -> Option<Value>,
) -> Result<Option<Node>, kube::Error> {
    patch_optimistic(api, cached, field_manager, compute).await
}

/// Sets the Node's whole taint list (`null` when empty) in a merge patch.
pub(crate) fn taints_value(taints: &[Taint]) -> Value {
    if taints.is_empty() {
        Value::Null
    } else {
        serde_json::to_value(taints).expect("taints serialize")
    }
}

pub(crate) fn field_manager_params(field_manager: &str) -> PatchParams {
    PatchParams {
        field_manager: Some(field_manager.to_string()),
        ..Default::default()
    }
}
