//! service-lb-controller: cloud load balancers for Services of type
//! LoadBalancer without a loadBalancerClass, guarded by the
//! service.kubernetes.io/load-balancer-cleanup finalizer, with backends kept
//! in step with the eligible Nodes.

pub mod plan;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{LoadBalancerStatus, Node, Service};
use kube::api::Patch;
use kube::{Api, ResourceExt};
use overcast_cloud_provider::names::controllers;
use overcast_cloud_provider::{CloudError, CloudProvider};
use serde_json::json;

use crate::context::{CacheSync, Context};
use crate::events::Recorder;
use crate::informer::{Change, Store, key_of};
use crate::node_helpers::{field_manager_params, is_not_found, patch_optimistic, provider_id};
use crate::workqueue::{Backoff, Outcome, WorkQueue, run_workers};
use plan::*;

pub const COMPONENT: &str = controllers::SERVICE_LB;
/// The source of the service controller's Events, as upstream names it.
pub const EVENT_SOURCE: &str = "service-controller";

/// The node queue's single key: "the node set may have changed".
const NODE_SYNC: &str = "node-sync";

#[derive(Debug, Clone)]
pub struct ServiceControllerConfig {
    /// `--concurrent-service-syncs` (default 1).
    pub concurrent_service_syncs: usize,
    /// Per-Service retry back-off (upstream: 5s to 5m).
    pub backoff: Backoff,
    /// Which loadBalancerClass values are ours (upstream: none, class-less only).
    pub classes: ClassPolicy,
}

impl Default for ServiceControllerConfig {
    fn default() -> Self {
        Self {
            concurrent_service_syncs: 1,
            backoff: Backoff {
                base: Duration::from_secs(5),
                max: Duration::from_secs(300),
            },
            classes: ClassPolicy::default(),
        }
    }
}

#[derive(Debug)]
pub struct ServiceController {
    synced: Option<CacheSync>,
    inner: Arc<Inner>,
    services_queue: WorkQueue<String>,
    nodes_queue: WorkQueue<&'static str>,
}

struct Inner {
    client: kube::Client,
    cloud: Arc<dyn CloudProvider>,
    cluster_name: String,
    services: Arc<Store<Service>>,
    nodes: Arc<Store<Node>>,
    recorder: Recorder,
    config: ServiceControllerConfig,
    services_queue: WorkQueue<String>,
    /// Services this controller has worked on: the last known object (to
    /// clean up after a Service vanished) and the node set last sent to the cloud.
    cache: Mutex<HashMap<String, Cached>>,
    /// Bumped on every Node change; invalidates `eligible`.
    node_generation: std::sync::atomic::AtomicU64,
    eligible: Mutex<Option<EligibleMemo>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceController")
            .field("cluster_name", &self.cluster_name)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// (node generation, eligible Nodes, their set).
type EligibleMemo = (u64, Arc<Vec<Arc<Node>>>, Arc<NodeSet>);

#[derive(Debug, Clone)]
struct Cached {
    service: Arc<Service>,
    /// Shared between Services: one copy per node-set generation, not one
    /// per Service (1,000 Services × 1,000 Nodes would be a million entries).
    synced_nodes: Option<Arc<NodeSet>>,
}

impl ServiceController {
    /// `None` when the provider has no LoadBalancer ("the cloud provider does
    /// not support external load balancers").
    pub fn new(ctx: &Context, config: ServiceControllerConfig) -> Option<Self> {
        ctx.cloud.load_balancer()?;
        let services_queue = WorkQueue::new("service", config.backoff);
        let nodes_queue = WorkQueue::new("node", config.backoff);
        let inner = Arc::new(Inner {
            client: ctx.client.clone(),
            cloud: Arc::clone(&ctx.cloud),
            cluster_name: ctx.cluster_name.clone(),
            services: ctx.services.store(),
            nodes: ctx.nodes.store(),
            recorder: Recorder::new(ctx.client.clone(), EVENT_SOURCE),
            config,
            services_queue: services_queue.clone(),
            cache: Mutex::new(HashMap::new()),
            node_generation: std::sync::atomic::AtomicU64::new(0),
            eligible: Mutex::new(None),
        });

        let queue = services_queue.clone();
        let handler_inner = Arc::clone(&inner);
        let classes = inner.config.classes.clone();
        ctx.services.on_change(move |change| match change {
            Change::Added(svc) => {
                if wants_load_balancer(svc, &classes) || needs_cleanup(svc) {
                    queue.add(key_of(svc.as_ref()));
                }
            }
            Change::Updated { old, new } => {
                if needs_update(old, new, &classes) || needs_cleanup(new) {
                    queue.add(key_of(new.as_ref()));
                }
            }
            // Only Services this controller worked on can have left a balancer.
            Change::Deleted(svc) => {
                let key = key_of(svc.as_ref());
                if handler_inner.cached(&key).is_some() {
                    queue.add(key);
                }
            }
        });

        let queue = nodes_queue.clone();
        let generation_inner = Arc::clone(&inner);
        ctx.nodes.on_change(move |change| {
            // Balancers get the Nodes as they are now, so any change counts.
            generation_inner
                .node_generation
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let relevant = match change {
                Change::Added(_) | Change::Deleted(_) => true,
                // As upstream's shouldSyncUpdatedNode: only the exclude label
                // and the providerID; a Node being drained (autoscaler taint,
                // deletion) keeps its traffic until it is gone.
                Change::Updated { old, new } => {
                    node_included_by_label(old) != node_included_by_label(new)
                        || provider_id(old) != provider_id(new)
                }
            };
            if relevant {
                queue.add(NODE_SYNC);
            }
        });

        Some(Self {
            synced: Some(ctx.all_synced()),
            inner,
            services_queue,
            nodes_queue,
        })
    }

    pub async fn run(mut self) {
        // A partial Node cache would send balancers a partial backend set.
        if let Some(synced) = self.synced.take() {
            synced.wait().await;
        }
        self.inner.restore().await;
        let workers = self.inner.config.concurrent_service_syncs.max(1);
        let inner = Arc::clone(&self.inner);
        let sync_service = move |key: String| {
            let inner = Arc::clone(&inner);
            async move { inner.sync_service(&key).await }
        };
        let inner = Arc::clone(&self.inner);
        let sync_nodes = move |_: &'static str| {
            let inner = Arc::clone(&inner);
            async move {
                inner.sync_nodes().await;
                Outcome::Done
            }
        };
        tokio::join!(
            run_workers(self.services_queue.clone(), workers, sync_service),
            // One node worker, as upstream.
            run_workers(self.nodes_queue.clone(), 1, sync_nodes),
        );
    }
}

impl Drop for ServiceController {
    fn drop(&mut self) {
        self.services_queue.shut_down();
        self.nodes_queue.shut_down();
    }
}

#[derive(Debug, thiserror::Error)]
enum SyncError {
    #[error("{context}: {source}")]
    Cloud {
        context: &'static str,
        #[source]
        source: CloudError,
    },
    #[error("{context}: {source}")]
    Api {
        context: &'static str,
        #[source]
        source: kube::Error,
    },
}

impl SyncError {
    fn retry_after(&self) -> Option<Duration> {
        match self {
            SyncError::Cloud { source, .. } => source.retry_after(),
            _ => None,
        }
    }
}

fn cloud_err(context: &'static str) -> impl FnOnce(CloudError) -> SyncError {
    move |source| SyncError::Cloud { context, source }
}

fn api_err(context: &'static str) -> impl FnOnce(kube::Error) -> SyncError {
    move |source| SyncError::Api { context, source }
}

impl Inner {
    /// Hands the provider every Service that holds or may hold a balancer,
    /// retrying until it accepts them: syncing before would let a provider
    /// that allocates addresses hand out one already in use.
    async fn restore(&self) {
        let services: Vec<Service> = self
            .services
            .list()
            .into_iter()
            .filter(|svc| wants_load_balancer(svc, &self.config.classes) || has_finalizer(svc))
            .map(|svc| svc.as_ref().clone())
            .collect();
        let Some(lb) = self.cloud.load_balancer() else {
            return;
        };
        let mut delay = self.config.backoff.base;
        loop {
            match lb.restore(&self.cluster_name, &services).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::error!(
                        services = services.len(),
                        "restoring load balancer state from the Services failed; retrying in {delay:?}: {e}"
                    );
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(self.config.backoff.max);
                }
            }
        }
    }

    fn cached(&self, key: &str) -> Option<Cached> {
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }

    fn cache_mut(&self) -> std::sync::MutexGuard<'_, HashMap<String, Cached>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn balancer(&self) -> &dyn overcast_cloud_provider::LoadBalancer {
        self.cloud
            .load_balancer()
            .expect("checked when the controller was built")
    }

    /// The eligible Nodes and their set, computed once per change of the
    /// Node cache and shared by every Service sync until the next change.
    /// The Nodes are the cache's own (shared, not copied: a copy of every
    /// Node was a third of peak memory at 5,000 Nodes).
    fn eligible_nodes(&self) -> (Arc<Vec<Arc<Node>>>, Arc<NodeSet>) {
        let generation = self
            .node_generation
            .load(std::sync::atomic::Ordering::SeqCst);
        let mut memo = self.eligible.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((g, nodes, set)) = memo.as_ref()
            && *g == generation
        {
            return (Arc::clone(nodes), Arc::clone(set));
        }
        let mut nodes: Vec<Arc<Node>> = self
            .nodes
            .list()
            .into_iter()
            .filter(|n| node_eligible(n))
            .collect();
        nodes.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        let set = Arc::new(node_set(nodes.iter().map(AsRef::as_ref)));
        let nodes = Arc::new(nodes);
        *memo = Some((generation, Arc::clone(&nodes), Arc::clone(&set)));
        (nodes, set)
    }

    /// Records the Event upstream records at `m`.
    fn record(&self, svc: &Service, m: &Milestone) {
        let (type_, reason, message) = event_for(m);
        self.recorder.publish(svc, type_, reason, message);
    }

    /// decide (plan_sync) → act (the cloud, the finalizer; an Event at
    /// each of upstream's milestones) → report (the status, a failure's
    /// Event, the retry).
    async fn sync_service(&self, key: &str) -> Outcome {
        let current = self.services.get(key);
        let previous = self.cached(key);
        let plan = plan_sync(
            current.as_deref(),
            previous.as_ref().map(|c| c.service.as_ref()),
            &self.config.classes,
        );
        if let (Some(delete_balancer), Some(previous)) = (plan.forget_previous, &previous)
            && let Err(e) = self.forget(key, &previous.service, delete_balancer).await
        {
            return self.outcome(key, e);
        }
        let (Some(svc), Some(operation)) = (current, plan.operation) else {
            return Outcome::Done;
        };
        self.cache_mut()
            .entry(key.to_string())
            .and_modify(|c| c.service = Arc::clone(&svc))
            .or_insert_with(|| Cached {
                service: Arc::clone(&svc),
                synced_nodes: None,
            });
        let status = match operation {
            Operation::Ensure => self.ensure(key, &svc).await,
            Operation::Cleanup => self.clean_up(key, &svc).await.map(Some),
        };
        let result = match status {
            Ok(Some(status)) => self.write_status(&svc, &status).await,
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => Outcome::Done,
            Err(e) => {
                self.record(&svc, &Milestone::SyncFailed(e.to_string()));
                self.outcome(key, e)
            }
        }
    }

    fn outcome(&self, key: &str, e: SyncError) -> Outcome {
        tracing::warn!(service = key, error = %e, "failed to sync service; will retry");
        match e.retry_after() {
            Some(after) => Outcome::RetryAfter(after),
            None => Outcome::Retry,
        }
    }

    /// The last-known copy is gone: delete the balancer it had (upstream's
    /// processServiceDeletion), then forget it.
    async fn forget(
        &self,
        key: &str,
        svc: &Service,
        delete_balancer: bool,
    ) -> Result<(), SyncError> {
        if delete_balancer {
            self.record(svc, &Milestone::Deleting);
            if let Err(e) = self
                .balancer()
                .ensure_load_balancer_deleted(&self.cluster_name, svc)
                .await
            {
                self.record(svc, &Milestone::DeleteFailed(e.to_string()));
                return Err(cloud_err("failed to delete load balancer")(e));
            }
            self.record(svc, &Milestone::Deleted);
        }
        self.cache_mut().remove(key);
        Ok(())
    }

    /// Deletes whatever the cloud still has of the balancer, then drops our
    /// finalizer (only once the cloud confirmed); the status to write is empty.
    async fn clean_up(&self, key: &str, svc: &Service) -> Result<LoadBalancerStatus, SyncError> {
        let exists = self
            .balancer()
            .get_load_balancer(&self.cluster_name, svc)
            .await
            .map_err(cloud_err(
                "failed to check if load balancer exists before cleanup",
            ))?
            .is_some();
        if exists {
            self.record(svc, &Milestone::Deleting);
            match self
                .balancer()
                .ensure_load_balancer_deleted(&self.cluster_name, svc)
                .await
            {
                Ok(()) | Err(CloudError::ImplementedElsewhere) => {}
                Err(e) => return Err(cloud_err("failed to delete load balancer")(e)),
            }
        }
        self.set_finalizer(svc, false)
            .await
            .map_err(api_err("failed to remove load balancer cleanup finalizer"))?;
        self.record(svc, &Milestone::Deleted);
        self.cache_mut().remove(key);
        Ok(LoadBalancerStatus::default())
    }

    /// Adds our finalizer (before any cloud call, so no balancer outlives
    /// its Service), then ensures the balancer with the eligible Nodes; the
    /// status to write, or `None` when another controller does balancers.
    async fn ensure(
        &self,
        key: &str,
        svc: &Service,
    ) -> Result<Option<LoadBalancerStatus>, SyncError> {
        self.record(svc, &Milestone::Ensuring);
        self.set_finalizer(svc, true)
            .await
            .map_err(api_err("failed to add load balancer cleanup finalizer"))?;
        let (nodes, set) = self.eligible_nodes();
        let nodes: Vec<&Node> = nodes.iter().map(AsRef::as_ref).collect();
        if nodes.is_empty() {
            self.record(svc, &Milestone::NoNodes);
        }
        // Recorded before the call, as upstream does, so a node change
        // meanwhile is not sent to the same balancer concurrently.
        if let Some(cached) = self.cache_mut().get_mut(key) {
            cached.synced_nodes = Some(set);
        }
        crate::metrics::SERVICE_LOADBALANCER_SYNC.inc();
        match self
            .balancer()
            .ensure_load_balancer(&self.cluster_name, svc, &nodes)
            .await
        {
            Ok(status) => {
                self.record(svc, &Milestone::Ensured);
                Ok(Some(status))
            }
            Err(CloudError::ImplementedElsewhere) => Ok(None),
            Err(e) => Err(cloud_err("failed to ensure load balancer")(e)),
        }
    }

    /// Writes `status` unless the Service already shows it.
    async fn write_status(
        &self,
        svc: &Service,
        status: &LoadBalancerStatus,
    ) -> Result<(), SyncError> {
        let Some(patch) = status_write(svc, status) else {
            return Ok(());
        };
        let api: Api<Service> =
            Api::namespaced(self.client.clone(), &svc.namespace().unwrap_or_default());
        match api
            .patch_status(
                &svc.name_any(),
                &field_manager_params(COMPONENT),
                &Patch::Merge(patch),
            )
            .await
        {
            Ok(_) => Ok(()),
            // Gone right after its finalizer was removed: nothing to write.
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(api_err("failed to update load balancer status")(e)),
        }
    }

    /// Adds or removes our finalizer with a merge patch that carries the
    /// resourceVersion it was computed from; a conflict re-reads and retries.
    async fn set_finalizer(&self, svc: &Service, present: bool) -> Result<(), kube::Error> {
        let api: Api<Service> =
            Api::namespaced(self.client.clone(), &svc.namespace().unwrap_or_default());
        let result = patch_optimistic(&api, svc, COMPONENT, |current| {
            finalizers_with(current, present)
                .map(|finalizers| json!({"metadata": {"finalizers": finalizers}}))
        })
        .await;
        match result {
            Ok(_) => Ok(()),
            // Gone while its finalizer was being removed: nothing left to do.
            Err(e) if is_not_found(&e) && !present => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Upstream's `syncNodes`: every balancer whose eligible node set changed
    /// gets UpdateLoadBalancer; failures send the Service for a full sync.
    async fn sync_nodes(&self) {
        let started = std::time::Instant::now();
        let services: Vec<Cached> = self
            .cache_mut()
            .values()
            .filter(|c| wants_load_balancer(&c.service, &self.config.classes))
            .cloned()
            .collect();
        // No balancer, nothing to update: do not build the node set (the
        // profile at 5,000 Nodes showed this rebuild on every Node event
        // as the largest cost while Nodes are created).
        if services.is_empty() {
            return;
        }
        let (nodes, set) = self.eligible_nodes();
        let nodes: Vec<&Node> = nodes.iter().map(AsRef::as_ref).collect();
        let parallel = self.config.concurrent_service_syncs.max(1);
        futures::stream::iter(services)
            .for_each_concurrent(parallel, |cached| {
                let nodes = &nodes;
                let set = &set;
                async move {
                    let svc = cached.service.as_ref();
                    if !wants_load_balancer(svc, &self.config.classes)
                        || cached.synced_nodes.as_deref() == Some(set.as_ref())
                    {
                        return;
                    }
                    // The Service as the watch has it now: one being deleted
                    // (or gone) is its worker's to clean up, and updating a
                    // balancer whose update is an ensure would make it again.
                    let now = self.services.get(&key_of(svc));
                    if now.as_deref().is_none_or(|now| {
                        needs_cleanup(now) || !wants_load_balancer(now, &self.config.classes)
                    }) {
                        return;
                    }
                    // Recorded whatever the outcome (upstream's nodeSyncService):
                    // a failure goes to the Service queue for a full sync.
                    if let Some(c) = self.cache_mut().get_mut(&key_of(svc)) {
                        c.synced_nodes = Some(Arc::clone(set));
                    }
                    crate::metrics::SERVICE_LOADBALANCER_SYNC.inc();
                    if !self.update_backends(svc, nodes).await {
                        crate::metrics::SERVICE_NODESYNC_ERRORS.inc();
                        self.services_queue.add(key_of(svc));
                    }
                }
            })
            .await;
        crate::metrics::SERVICE_NODESYNC_LATENCY.observe(started.elapsed().as_secs_f64());
    }

    /// Returns false when the Service needs a full sync.
    async fn update_backends(&self, svc: &Service, nodes: &[&Node]) -> bool {
        // Upstream's lockedUpdateLoadBalancerHosts times the cloud call alone.
        let started = std::time::Instant::now();
        let updated = self
            .balancer()
            .update_load_balancer(&self.cluster_name, svc, nodes)
            .await;
        crate::metrics::SERVICE_UPDATE_HOSTS_LATENCY.observe(started.elapsed().as_secs_f64());
        let update = match updated {
            Ok(()) => HostsUpdate::Updated,
            Err(CloudError::ImplementedElsewhere) => HostsUpdate::Elsewhere,
            Err(e) => match self
                .balancer()
                .get_load_balancer(&self.cluster_name, svc)
                .await
            {
                Ok(None) => HostsUpdate::FailedWithoutBalancer,
                _ => HostsUpdate::Failed(e.to_string()),
            },
        };
        let (milestone, full_sync) = report_hosts_update(&update, nodes);
        if let Some(m) = milestone {
            self.record(svc, &m);
        }
        !full_sync
    }
}
