//! cloud-node-lifecycle-controller: every `--node-monitor-period`, Nodes that
//! are not Ready are checked against the cloud. A Node whose instance is
//! definitely gone is deleted; one whose instance is shut down gets the
//! shutdown taint, which goes again once the Node is Ready.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Taint};
use kube::api::{DeleteParams, Preconditions};
use kube::{Api, ResourceExt};
use overcast_cloud_provider::CloudProvider;
use overcast_cloud_provider::names::{TAINT_SHUTDOWN, controllers, reasons};
use serde_json::json;

use crate::cloud_instances::{instance_exists, instance_shutdown};
use crate::context::{CacheSync, Context};
use crate::events::{EventType, Recorder};
use crate::informer::Store;
use crate::node_helpers::{is_not_found, is_ready, patch_node, taints, taints_value};

pub const COMPONENT: &str = controllers::CLOUD_NODE_LIFECYCLE;

#[derive(Debug, Clone)]
pub struct NodeLifecycleConfig {
    /// `--node-monitor-period` (default 5s).
    pub node_monitor_period: Duration,
    /// Nodes checked against the cloud at once.
    pub workers: usize,
}

impl Default for NodeLifecycleConfig {
    fn default() -> Self {
        Self {
            node_monitor_period: Duration::from_secs(5),
            workers: 1,
        }
    }
}

/// What to do about one Node after asking the cloud.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Delete,
    AddShutdownTaint,
    Nothing,
}

/// The decision for a Node that is not Ready.
pub fn verdict(exists: bool, shutdown: bool, has_shutdown_taint: bool) -> Verdict {
    match (exists, shutdown, has_shutdown_taint) {
        (false, _, _) => Verdict::Delete,
        (true, true, false) => Verdict::AddShutdownTaint,
        _ => Verdict::Nothing,
    }
}

/// Matched by key and effect, as upstream's MatchTaint does: someone else's
/// taint with the same key and another effect is not ours to touch.
fn is_shutdown_taint(t: &Taint) -> bool {
    t.key == TAINT_SHUTDOWN && t.effect == "NoSchedule"
}

fn has_shutdown_taint(node: &Node) -> bool {
    taints(node).iter().any(is_shutdown_taint)
}

pub fn shutdown_taint() -> Taint {
    Taint {
        key: TAINT_SHUTDOWN.to_string(),
        effect: "NoSchedule".to_string(),
        ..Default::default()
    }
}

#[derive(Debug)]
pub struct NodeLifecycleController {
    synced: Option<CacheSync>,
    api: Api<Node>,
    cloud: Arc<dyn CloudProvider>,
    nodes: Arc<Store<Node>>,
    recorder: Recorder,
    config: NodeLifecycleConfig,
}

impl NodeLifecycleController {
    /// `None` when the provider has neither InstancesV2 nor Instances.
    pub fn new(ctx: &Context, config: NodeLifecycleConfig) -> Option<Self> {
        if ctx.cloud.instances_v2().is_none() && ctx.cloud.instances().is_none() {
            return None;
        }
        Some(Self {
            synced: Some(ctx.nodes_synced()),
            api: Api::all(ctx.client.clone()),
            cloud: Arc::clone(&ctx.cloud),
            nodes: ctx.nodes.store(),
            recorder: Recorder::new(ctx.client.clone(), COMPONENT),
            config,
        })
    }

    pub async fn run(mut self) {
        if let Some(synced) = self.synced.take() {
            synced.wait().await;
        }
        let mut ticker = tokio::time::interval(self.config.node_monitor_period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            self.monitor_nodes().await;
        }
    }

    /// One pass over the cached Nodes (upstream's `MonitorNodes`).
    pub async fn monitor_nodes(&self) {
        futures::stream::iter(self.nodes.list())
            .for_each_concurrent(self.config.workers.max(1), |node| async move {
                self.monitor_node(&node).await;
            })
            .await;
    }

    async fn monitor_node(&self, node: &Node) {
        let name = node.name_any();
        if is_ready(node) {
            if has_shutdown_taint(node) {
                self.set_shutdown_taint(node, false).await;
            }
            return;
        }
        // A transient error never deletes a Node: only a definite answer does.
        let exists = match instance_exists(self.cloud.as_ref(), node).await {
            Ok(exists) => exists,
            Err(e) => {
                tracing::warn!(node = %name, error = %e, "could not check whether the node's instance exists");
                return;
            }
        };
        let shutdown = if exists {
            match instance_shutdown(self.cloud.as_ref(), node).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(node = %name, error = %e, "could not check whether the node's instance is shut down");
                    return;
                }
            }
        } else {
            false
        };
        match verdict(exists, shutdown, has_shutdown_taint(node)) {
            Verdict::Delete => self.delete(node).await,
            Verdict::AddShutdownTaint => self.set_shutdown_taint(node, true).await,
            Verdict::Nothing => {}
        }
    }

    async fn delete(&self, node: &Node) {
        let name = node.name_any();
        tracing::info!(node = %name, "deleting node because its instance no longer exists in the cloud");
        self.recorder.publish(
            node,
            EventType::Normal,
            reasons::DELETING_NODE,
            format!("Deleting node {name} because it does not exist in the cloud provider"),
        );
        // The UID precondition keeps a Node re-created under the same name safe.
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: node.uid(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match self.api.delete(&name, &params).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => {
                tracing::warn!(node = %name, error = %e, "failed to delete node");
                self.recorder.publish(
                    node,
                    EventType::Warning,
                    reasons::DELETING_NODE_FAILED,
                    format!("Failed deleting node {name}: {e}"),
                );
            }
        }
    }

    async fn set_shutdown_taint(&self, node: &Node, present: bool) {
        let result = patch_node(&self.api, node, COMPONENT, |current| {
            if has_shutdown_taint(current) == present {
                return None;
            }
            let mut list: Vec<Taint> = taints(current)
                .iter()
                .filter(|t| !is_shutdown_taint(t))
                .cloned()
                .collect();
            if present {
                list.push(shutdown_taint());
            }
            Some(json!({"spec": {"taints": taints_value(&list)}}))
        })
        .await;
        match result {
            Ok(Some(_)) => {
                tracing::info!(node = %node.name_any(), present, "updated shutdown taint")
            }
            Ok(None) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => {
                tracing::warn!(node = %node.name_any(), error = %e, "failed to update shutdown taint")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts() {
        assert_eq!(verdict(false, false, false), Verdict::Delete);
        assert_eq!(verdict(false, true, true), Verdict::Delete);
        assert_eq!(verdict(true, true, false), Verdict::AddShutdownTaint);
        assert_eq!(verdict(true, true, true), Verdict::Nothing);
        // Not shut down but still not Ready: upstream leaves an existing taint.
        assert_eq!(verdict(true, false, true), Verdict::Nothing);
        assert_eq!(verdict(true, false, false), Verdict::Nothing);
    }
}
