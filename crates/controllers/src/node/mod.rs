//! cloud-node-controller: initialises Nodes that carry the uninitialized taint
//! from what the cloud knows of their instance, keeps their addresses current,
//! and keeps GA topology labels in step with the beta ones.

pub mod plan;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, NodeAddress};
use kube::api::Patch;
use kube::{Api, ResourceExt};
use overcast_cloud_provider::names::{TAINT_UNINITIALIZED, controllers, reasons};
use overcast_cloud_provider::{CloudError, CloudProvider};
use serde_json::{Map, Value, json};

use crate::cloud_instances::{instance_addresses, instance_metadata};
use crate::context::{CacheSync, Context};
use crate::events::{EventType, Recorder};
use crate::informer::{Change, Store};
use crate::node_helpers::{field_manager_params, has_taint, patch_node, taints_value};
use crate::workqueue::{Backoff, Outcome, WorkQueue, run_workers};
use plan::{PlanError, desired_addresses, label_reconciliation, plan_initialization};

/// The component name on Events and the field manager of writes.
pub const COMPONENT: &str = controllers::CLOUD_NODE;

#[derive(Debug, Clone)]
pub struct NodeControllerConfig {
    /// `--concurrent-node-syncs` (default 1).
    pub concurrent_node_syncs: usize,
    /// `--node-status-update-frequency` (default 5m).
    pub node_status_update_frequency: Duration,
    /// `--concurrent-node-status-updates` (default 0: as many as node syncs).
    pub concurrent_node_status_updates: usize,
}

impl Default for NodeControllerConfig {
    fn default() -> Self {
        Self {
            concurrent_node_syncs: 1,
            node_status_update_frequency: Duration::from_secs(300),
            concurrent_node_status_updates: 0,
        }
    }
}

#[derive(Debug)]
pub struct NodeController {
    inner: Arc<Inner>,
    queue: WorkQueue<String>,
    synced: Option<CacheSync>,
}

#[derive(Debug)]
struct Inner {
    api: Api<Node>,
    cloud: Arc<dyn CloudProvider>,
    nodes: Arc<Store<Node>>,
    recorder: Recorder,
    config: NodeControllerConfig,
    superseded: Arc<Superseded>,
}

/// Node name → the resourceVersions our own initialisation writes replaced.
/// Our first write's watch event queues the Node again, and that sync can
/// start before the cache has our second write: it would see the taint,
/// ask the cloud again and patch a stale version (a conflict, a GET and a
/// second patch: 0.1-0.2 % of Nodes at 5,000, up to 1 % at 1,000). Versions listed here are known
/// to be stale and skipped; the watch event of our last write queues nothing
/// more, and its arrival clears the entry.
#[derive(Debug, Default)]
struct Superseded(Mutex<HashMap<String, Vec<String>>>);

impl Superseded {
    fn record(&self, name: &str, versions: Vec<String>) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), versions);
    }

    fn forget(&self, name: &str) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
    }

    fn is_stale(&self, node: &Node) -> bool {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let (Some(versions), Some(rv)) = (
            map.get(node.metadata.name.as_deref().unwrap_or_default()),
            node.metadata.resource_version.as_deref(),
        ) else {
            return false;
        };
        versions.iter().any(|v| v == rv)
    }
}

impl NodeController {
    /// `None` when the provider has neither InstancesV2 nor Instances (the
    /// controller is then skipped, as upstream skips it).
    pub fn new(ctx: &Context, config: NodeControllerConfig) -> Option<Self> {
        if ctx.cloud.instances_v2().is_none() && ctx.cloud.instances().is_none() {
            return None;
        }
        // Upstream's DefaultControllerRateLimiter, per-item part: 5 ms to 1000 s.
        let queue = WorkQueue::new(
            "Nodes",
            Backoff {
                base: Duration::from_millis(5),
                max: Duration::from_secs(1000),
            },
        );
        let handler_queue = queue.clone();
        let superseded = Arc::new(Superseded::default());
        let handler_superseded = Arc::clone(&superseded);
        ctx.nodes.on_change(move |change| {
            let node = match change {
                Change::Added(n) | Change::Updated { new: n, .. } => n,
                Change::Deleted(n) => return handler_superseded.forget(&n.name_any()),
            };
            let tainted = has_taint(node, TAINT_UNINITIALIZED);
            if !tainted {
                handler_superseded.forget(node.metadata.name.as_deref().unwrap_or_default());
            }
            // Only Nodes with work to do are queued; initialised Nodes with
            // consistent labels cost nothing however often they change.
            if tainted || !label_reconciliation(node).is_empty() {
                handler_queue.add(node.name_any());
            }
        });
        Some(Self {
            inner: Arc::new(Inner {
                api: Api::all(ctx.client.clone()),
                cloud: Arc::clone(&ctx.cloud),
                nodes: ctx.nodes.store(),
                recorder: Recorder::new(ctx.client.clone(), COMPONENT),
                config,
                superseded,
            }),
            queue,
            synced: Some(ctx.nodes_synced()),
        })
    }

    /// Runs the workers and the periodic address refresh until dropped,
    /// once the Node cache is filled.
    pub async fn run(mut self) {
        if let Some(synced) = self.synced.take() {
            synced.wait().await;
        }
        let workers = self.inner.config.concurrent_node_syncs.max(1);
        let inner = Arc::clone(&self.inner);
        let sync = move |name: String| {
            let inner = Arc::clone(&inner);
            async move { inner.sync(&name).await }
        };
        tokio::join!(
            run_workers(self.queue.clone(), workers, sync),
            self.inner.refresh_addresses_periodically()
        );
    }
}

impl Drop for NodeController {
    fn drop(&mut self) {
        self.queue.shut_down();
    }
}

impl Inner {
    async fn sync(&self, name: &str) -> Outcome {
        let Some(node) = self.nodes.get(name) else {
            return Outcome::Done;
        };
        if self.superseded.is_stale(&node) {
            return Outcome::Done;
        }
        let result = if has_taint(&node, TAINT_UNINITIALIZED) {
            self.initialize(&node).await
        } else {
            self.reconcile_labels(&node).await
        };
        match result {
            Ok(()) => Outcome::Done,
            Err(SyncError::Cloud(CloudError::Retry { retry_after, .. })) => {
                Outcome::RetryAfter(retry_after)
            }
            Err(e) => {
                tracing::warn!(node = name, error = %e, "failed to sync node; will retry");
                Outcome::Retry
            }
        }
    }

    async fn reconcile_labels(&self, node: &Node) -> Result<(), SyncError> {
        patch_node(&self.api, node, COMPONENT, |current| {
            let labels = label_reconciliation(current);
            (!labels.is_empty()).then(|| json!({"metadata": {"labels": labels}}))
        })
        .await?;
        Ok(())
    }

    async fn initialize(&self, node: &Node) -> Result<(), SyncError> {
        let name = node.name_any();
        let Some(facts) = instance_metadata(self.cloud.as_ref(), node).await? else {
            tracing::info!(node = %name, "cloud provider has no metadata for the node yet; leaving it tainted");
            return Ok(());
        };
        let (meta, optional) = (&facts.meta, facts.provider_id_optional);
        let plan = match plan_initialization(node, meta, optional) {
            Ok(plan) => plan,
            Err(e) => return Err(self.refused(node, e)),
        };
        // Addresses go first, so that no one sees an initialised Node without
        // them (rancher/rke2#1989). The Node that write returns is the base of
        // the next, so its resourceVersion is current and the patch does not
        // conflict with our own write.
        let base = match &plan.addresses {
            Some(addresses) => self.write_addresses(&name, addresses).await?,
            None => node.clone(),
        };
        // Recorded before the write, so its watch event (which clears the
        // entry) cannot come first.
        let replaced = [
            &node.metadata.resource_version,
            &base.metadata.resource_version,
        ]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
        self.superseded.record(&name, replaced);
        // Planned again on the Node as it is at the write; a plan that now
        // fails (the Node changed meanwhile) is the sync's error: an Event
        // where it has one, and a retry, never a Node left tainted silently.
        let mut replanned: Option<PlanError> = None;
        let written = patch_node(&self.api, &base, COMPONENT, |current| {
            if !has_taint(current, TAINT_UNINITIALIZED) {
                return None; // initialised meanwhile
            }
            let plan = match plan_initialization(current, meta, optional) {
                Ok(plan) => plan,
                Err(e) => {
                    replanned = Some(e);
                    return None;
                }
            };
            let mut spec = Map::new();
            if let Some(id) = plan.provider_id {
                spec.insert("providerID".into(), Value::from(id));
            }
            spec.insert("taints".into(), taints_value(&plan.taints));
            Some(json!({"metadata": {"labels": plan.labels}, "spec": spec}))
        })
        .await
        .inspect_err(|_| self.superseded.forget(&name))?;
        if written.is_none() {
            self.superseded.forget(&name);
        }
        if let Some(e) = replanned {
            return Err(self.refused(&base, e));
        }
        if let Some(initialised) = written {
            if let Some(created) = &initialised.metadata.creation_timestamp {
                let delay = crate::metrics::seconds_since(created);
                crate::metrics::NODE_TAINT_REMOVAL_DELAY.observe(delay);
                crate::metrics::NODE_INITIAL_SYNC_DELAY.observe(delay);
            }
            tracing::info!(node = %name, "initialised node");
            self.recorder.publish(
                &initialised,
                EventType::Normal,
                reasons::SYNCED,
                "Node synced successfully",
            );
        }
        Ok(())
    }

    /// A plan the Node's state refuses: the Warning Event upstream records
    /// for a provided node IP the cloud does not know, and the sync's error
    /// (retried with back-off).
    fn refused(&self, node: &Node, e: PlanError) -> SyncError {
        if matches!(e, PlanError::ProvidedNodeIp { .. }) {
            self.recorder.publish(
                node,
                EventType::Warning,
                reasons::PROVIDED_NODE_IP_NOT_FOUND,
                e.to_string(),
            );
        }
        e.into()
    }

    /// Replaces status.addresses (the list is the cloud's, whole).
    async fn write_addresses(
        &self,
        name: &str,
        addresses: &[NodeAddress],
    ) -> Result<Node, kube::Error> {
        self.api
            .patch_status(
                name,
                &field_manager_params(COMPONENT),
                &Patch::Merge(json!({"status": {"addresses": addresses}})),
            )
            .await
    }

    async fn refresh_addresses_periodically(&self) {
        // The first pass runs at once, as upstream's wait.Until does.
        let mut ticker = tokio::time::interval(self.config.node_status_update_frequency);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            self.refresh_addresses().await;
        }
    }

    /// Upstream's `UpdateNodeStatus`: addresses of every initialised Node,
    /// written only where they changed.
    async fn refresh_addresses(&self) {
        let parallel = match self.config.concurrent_node_status_updates {
            0 => self.config.concurrent_node_syncs.max(1),
            n => n,
        };
        let nodes: Vec<_> = self
            .nodes
            .list()
            .into_iter()
            .filter(|n| !has_taint(n, TAINT_UNINITIALIZED))
            .collect();
        futures::stream::iter(nodes)
            .for_each_concurrent(parallel, |node| async move {
                if let Err(e) = self.refresh_node_addresses(&node).await {
                    tracing::warn!(node = %node.name_any(), error = %e, "failed to refresh node addresses");
                }
            })
            .await;
    }

    async fn refresh_node_addresses(&self, node: &Node) -> Result<(), SyncError> {
        let Some(cloud_addresses) = instance_addresses(self.cloud.as_ref(), node).await? else {
            return Ok(());
        };
        let addresses = desired_addresses(node, &cloud_addresses).map_err(|reason| {
            PlanError::ProvidedNodeIp {
                node: node.name_any(),
                reason,
            }
        })?;
        if let Some(addresses) = addresses {
            self.write_addresses(&node.name_any(), &addresses).await?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
enum SyncError {
    #[error("cloud provider: {0}")]
    Cloud(#[from] CloudError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("kubernetes API: {0}")]
    Api(#[from] kube::Error),
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::ObjectMeta;

    fn node_at(rv: &str) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some("n1".into()),
                resource_version: Some(rv.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn only_versions_our_writes_replaced_are_skipped() {
        let superseded = Superseded::default();
        superseded.record("n1", vec!["10".into(), "11".into()]);
        assert!(superseded.is_stale(&node_at("10")));
        assert!(superseded.is_stale(&node_at("11")));
        // Our last write, or anyone's later one, is synced as usual.
        assert!(!superseded.is_stale(&node_at("12")));
        superseded.forget("n1");
        assert!(!superseded.is_stale(&node_at("10")));
    }
}
