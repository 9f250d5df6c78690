//! node-route-controller: every `--route-reconciliation-period`, a cloud route
//! for each Node's pod CIDRs, stale routes inside the cluster CIDRs deleted, and
//! the Node's NetworkUnavailable condition set from the outcome.

pub mod plan;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::Patch;
use kube::{Api, ResourceExt};
use overcast_cloud_provider::names::{controllers, reasons};
use overcast_cloud_provider::{CloudProvider, Routes};
use serde_json::json;

use crate::cidr::{self, IpNet};
use crate::context::{CacheSync, Context};
use crate::events::{EventType, Recorder};
use crate::informer::Store;
use crate::node_helpers::{field_manager_params, is_not_found};
use plan::{plan, routes_created};

pub const COMPONENT: &str = controllers::NODE_ROUTE;
/// The source of the route controller's Events, as upstream names it.
pub const EVENT_SOURCE: &str = "route_controller";
/// Cloud calls in flight at once (upstream's maxConcurrentRouteCreations).
const MAX_CONCURRENT_ROUTE_OPERATIONS: usize = 200;

#[derive(Debug, Clone)]
pub struct RouteControllerConfig {
    /// `--cluster-cidr`: one CIDR, or a dual-stack pair.
    pub cluster_cidrs: Vec<IpNet>,
    /// `--route-reconciliation-period` (default 10s).
    pub reconciliation_period: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteConfigError {
    #[error("--cluster-cidr: {0}")]
    Cidr(#[from] cidr::CidrError),
    #[error("--cluster-cidr must be set for the route controller")]
    Missing,
    #[error("--cluster-cidr {0:?}: at most two CIDRs, one per IP family, may be given")]
    TooMany(String),
    #[error("--cluster-cidr {0:?}: two CIDRs must be one IPv4 and one IPv6 (dual-stack)")]
    NotDualStack(String),
}

/// Parses and validates `--cluster-cidr` as upstream does (also for node IPAM).
pub fn parse_cluster_cidrs(flag: &str) -> Result<Vec<IpNet>, RouteConfigError> {
    let cidrs = cidr::parse_list(flag)?;
    match cidrs.as_slice() {
        [] => Err(RouteConfigError::Missing),
        [_] => Ok(cidrs),
        [a, b] if a.is_ipv4() != b.is_ipv4() => Ok(cidrs),
        [_, _] => Err(RouteConfigError::NotDualStack(flag.to_string())),
        _ => Err(RouteConfigError::TooMany(flag.to_string())),
    }
}

pub struct RouteController {
    synced: Option<CacheSync>,
    client: kube::Client,
    cloud: Arc<dyn CloudProvider>,
    cluster_name: String,
    nodes: Arc<Store<Node>>,
    recorder: Recorder,
    config: RouteControllerConfig,
}

impl std::fmt::Debug for RouteController {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteController")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl RouteController {
    /// `None` when the provider has no Routes.
    pub fn new(ctx: &Context, config: RouteControllerConfig) -> Option<Self> {
        ctx.cloud.routes()?;
        Some(Self {
            synced: Some(ctx.nodes_synced()),
            client: ctx.client.clone(),
            cloud: Arc::clone(&ctx.cloud),
            cluster_name: ctx.cluster_name.clone(),
            nodes: ctx.nodes.store(),
            recorder: Recorder::new(ctx.client.clone(), EVENT_SOURCE),
            config,
        })
    }

    fn routes(&self) -> &dyn Routes {
        self.cloud
            .routes()
            .expect("checked when the controller was built")
    }

    pub async fn run(mut self) {
        // An empty cache would read as "no Nodes" and delete every route.
        if let Some(synced) = self.synced.take() {
            synced.wait().await;
        }
        let mut ticker = tokio::time::interval(self.config.reconciliation_period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            if let Err(e) = self.reconcile().await {
                tracing::warn!(error = %e, "could not reconcile routes");
            }
        }
    }

    /// One pass: list the cloud's routes, delete, create, set conditions.
    pub async fn reconcile(&self) -> Result<(), overcast_cloud_provider::CloudError> {
        crate::metrics::ROUTE_SYNC.inc();
        let routes = self.routes().list_routes(&self.cluster_name).await?;
        // Read after the routes: a provider naming a route's Node from the
        // same cache then never names one this pass has not seen.
        let nodes = self.nodes.list();
        let node_refs: Vec<&Node> = nodes.iter().map(Arc::as_ref).collect();
        let mut plan = plan(&node_refs, &routes, &self.config.cluster_cidrs);

        // Deletes first: a cloud that routes by address may refuse a new
        // route while the old one for the same CIDR is still there.
        futures::stream::iter(std::mem::take(&mut plan.deletes))
            .for_each_concurrent(MAX_CONCURRENT_ROUTE_OPERATIONS, |route: overcast_cloud_provider::Route| async move {
                match self.routes().delete_route(&self.cluster_name, &route).await {
                    Ok(()) => tracing::info!(route = %route.name, cidr = %route.destination_cidr, "deleted route"),
                    Err(e) => tracing::warn!(route = %route.name, cidr = %route.destination_cidr, error = %e, "could not delete route"),
                }
            })
            .await;

        let created: Vec<(String, String)> = futures::stream::iter(std::mem::take(&mut plan.creates))
            .map(|create: plan::Create| async move {
                let started = std::time::Instant::now();
                match self
                    .routes()
                    .create_route(&self.cluster_name, &create.name_hint, &create.route)
                    .await
                {
                    Ok(()) => {
                        tracing::info!(node = %create.node, cidr = %create.route.destination_cidr, "created route");
                        Some((create.node, create.route.destination_cidr))
                    }
                    Err(e) => {
                        let msg = format!(
                            "Could not create route {} {} for node {} after {:?}: {e}",
                            create.name_hint,
                            create.route.destination_cidr,
                            create.node,
                            started.elapsed()
                        );
                        tracing::warn!("{msg}");
                        if let Some(node) = self.nodes.get(&create.node) {
                            self.recorder.publish(
                                node.as_ref(),
                                EventType::Warning,
                                reasons::FAILED_TO_CREATE_ROUTE,
                                msg,
                            );
                        }
                        None
                    }
                }
            })
            .buffer_unordered(MAX_CONCURRENT_ROUTE_OPERATIONS)
            .filter_map(|x| async move { x })
            .collect()
            .await;
        for (node, cidr) in created {
            if let Some(s) = plan.statuses.get_mut(&node) {
                s.insert(cidr, true);
            }
        }

        let verdicts: Vec<(Arc<Node>, bool)> = nodes
            .iter()
            .filter_map(|node| {
                let name = node.name_any();
                let has_routes = routes.iter().any(|r| r.target_node == name);
                routes_created(plan.statuses.get(&name), has_routes)
                    .map(|ok| (Arc::clone(node), ok))
            })
            .collect();
        futures::stream::iter(verdicts)
            .for_each_concurrent(
                MAX_CONCURRENT_ROUTE_OPERATIONS,
                |(node, ok): (Arc<Node>, bool)| async move {
                    self.set_network_condition(&node, ok).await;
                },
            )
            .await;
        Ok(())
    }

    /// Sets NetworkUnavailable (False/RouteCreated or True/NoRouteCreated),
    /// unless it already says so. A strategic merge patch keyed by condition
    /// type leaves the kubelet's conditions alone.
    async fn set_network_condition(&self, node: &Node, routes_created: bool) {
        let (status, reason, message) = if routes_created {
            (
                "False",
                reasons::ROUTE_CREATED,
                "RouteController created a route",
            )
        } else {
            (
                "True",
                reasons::NO_ROUTE_CREATED,
                "RouteController failed to create a route",
            )
        };
        let current = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "NetworkUnavailable"));
        if current.is_some_and(|c| c.status == status && c.reason.as_deref() == Some(reason)) {
            return;
        }
        let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::now(),
        );
        let patch = json!({"status": {"conditions": [{
            "type": "NetworkUnavailable",
            "status": status,
            "reason": reason,
            "message": message,
            "lastTransitionTime": now,
            "lastHeartbeatTime": now,
        }]}});
        let api: Api<Node> = Api::all(self.client.clone());
        match api
            .patch_status(
                &node.name_any(),
                &field_manager_params(COMPONENT),
                &Patch::Strategic(patch),
            )
            .await
        {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => {
                tracing::warn!(node = %node.name_any(), error = %e, "could not update NetworkUnavailable condition")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_cidr_flag_validation() {
        assert_eq!(parse_cluster_cidrs("10.244.0.0/16").unwrap().len(), 1);
        assert_eq!(
            parse_cluster_cidrs("10.244.0.0/16,fd00::/48")
                .unwrap()
                .len(),
            2
        );
        assert_eq!(parse_cluster_cidrs(""), Err(RouteConfigError::Missing));
        assert!(matches!(
            parse_cluster_cidrs("10.244.0.0/16,10.245.0.0/16"),
            Err(RouteConfigError::NotDualStack(_))
        ));
        assert!(matches!(
            parse_cluster_cidrs("10.0.0.0/16,fd00::/48,10.1.0.0/16"),
            Err(RouteConfigError::TooMany(_))
        ));
        assert_eq!(
            parse_cluster_cidrs("10.244.0.0/99")
                .unwrap_err()
                .to_string(),
            "--cluster-cidr: invalid CIDR \"10.244.0.0/99\": prefix too long for the address family"
        );
    }
}
