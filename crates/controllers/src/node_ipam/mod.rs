//! node-ipam-controller (upstream's RangeAllocator): gives each Node without
//! pod CIDRs one subnet of every cluster CIDR, never the same subnet to two
//! Nodes, and takes it back when the Node goes.

pub mod allocator;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::{Api, ResourceExt};
use overcast_cloud_provider::names::{controllers, reasons};
use serde_json::json;

use crate::cidr::{self, IpNet};
use crate::context::Context;
use crate::events::{EventType, Recorder};
use crate::informer::{Change, Store};
use crate::node_helpers::{is_not_found, patch_node, pod_cidrs};
use crate::route::{RouteConfigError, parse_cluster_cidrs};
use crate::workqueue::{Backoff, Outcome, WorkQueue, run_workers};
use allocator::{AllocError, Allocator};

pub const COMPONENT: &str = controllers::NODE_IPAM;
/// The source of the allocator's Events, as upstream names it.
pub const EVENT_SOURCE: &str = "cidrAllocator";
/// Upstream's default node mask sizes.
pub const DEFAULT_MASK_IPV4: u8 = 24;
pub const DEFAULT_MASK_IPV6: u8 = 64;
/// Nodes patched at once (upstream's cidrUpdateWorkers is 30).
const WORKERS: usize = 10;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIpamConfig {
    /// Each cluster CIDR with the mask of the subnets its Nodes get.
    pub cluster_cidrs: Vec<(IpNet, u8)>,
    /// `--service-cluster-ip-range`: never handed to Nodes.
    pub service_cidrs: Vec<IpNet>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamConfigError {
    #[error(transparent)]
    ClusterCidr(#[from] RouteConfigError),
    #[error("--service-cluster-ip-range: {0}")]
    ServiceCidr(cidr::CidrError),
    #[error("usage of --node-cidr-mask-size is not allowed with dual-stack clusters")]
    SingleMaskWithDualStack,
    #[error(
        "usage of --node-cidr-mask-size-ipv4 and --node-cidr-mask-size-ipv6 is not allowed if --node-cidr-mask-size is set"
    )]
    MixedMasks,
    #[error("usage of --node-cidr-mask-size-ipv4 is not allowed for a single-stack IPv6 cluster")]
    Ipv4MaskOnIpv6,
    #[error("usage of --node-cidr-mask-size-ipv6 is not allowed for a single-stack IPv4 cluster")]
    Ipv6MaskOnIpv4,
    #[error("{0}")]
    Mask(#[from] AllocError),
}

/// The mask flags; `None` means "not given" (upstream's 0).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MaskFlags {
    pub node_cidr_mask_size: Option<u8>,
    pub node_cidr_mask_size_ipv4: Option<u8>,
    pub node_cidr_mask_size_ipv6: Option<u8>,
}

impl NodeIpamConfig {
    /// Validates the flags as upstream's `setNodeCIDRMaskSizes` does.
    pub fn from_flags(
        cluster_cidr: &str,
        masks: MaskFlags,
        service_cluster_ip_range: &str,
    ) -> Result<Self, IpamConfigError> {
        let clusters = parse_cluster_cidrs(cluster_cidr)?;
        let dual_stack = clusters.len() > 1;
        let (mut v4, mut v6) = (DEFAULT_MASK_IPV4, DEFAULT_MASK_IPV6);
        if dual_stack {
            if masks.node_cidr_mask_size.is_some() {
                return Err(IpamConfigError::SingleMaskWithDualStack);
            }
            v4 = masks.node_cidr_mask_size_ipv4.unwrap_or(v4);
            v6 = masks.node_cidr_mask_size_ipv6.unwrap_or(v6);
        } else if let Some(mask) = masks.node_cidr_mask_size {
            if masks.node_cidr_mask_size_ipv4.is_some() || masks.node_cidr_mask_size_ipv6.is_some()
            {
                return Err(IpamConfigError::MixedMasks);
            }
            (v4, v6) = (mask, mask);
        } else {
            let single_v6 = !clusters[0].is_ipv4();
            if let Some(mask) = masks.node_cidr_mask_size_ipv4 {
                if single_v6 {
                    return Err(IpamConfigError::Ipv4MaskOnIpv6);
                }
                v4 = mask;
            }
            if let Some(mask) = masks.node_cidr_mask_size_ipv6 {
                if !single_v6 {
                    return Err(IpamConfigError::Ipv6MaskOnIpv4);
                }
                v6 = mask;
            }
        }
        let cluster_cidrs: Vec<(IpNet, u8)> = clusters
            .into_iter()
            .map(|c| (c, if c.is_ipv4() { v4 } else { v6 }))
            .collect();
        // Reject impossible masks now rather than when the controller starts.
        Allocator::new(&cluster_cidrs)?;
        let service_cidrs =
            cidr::parse_list(service_cluster_ip_range).map_err(IpamConfigError::ServiceCidr)?;
        Ok(Self {
            cluster_cidrs,
            service_cidrs,
        })
    }
}

pub struct NodeIpamController {
    api: Api<Node>,
    nodes: Arc<Store<Node>>,
    informer: Arc<crate::informer::Informer<Node>>,
    recorder: Recorder,
    allocator: Arc<Mutex<Allocator>>,
    queue: WorkQueue<String>,
    service_cidrs: Vec<IpNet>,
}

impl std::fmt::Debug for NodeIpamController {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeIpamController")
            .field("allocator", &self.allocator)
            .finish_non_exhaustive()
    }
}

impl NodeIpamController {
    pub fn new(ctx: &Context, config: NodeIpamConfig) -> Result<Self, AllocError> {
        let allocator = Arc::new(Mutex::new(Allocator::new(&config.cluster_cidrs)?));
        let queue = WorkQueue::new(
            "nodeipam",
            Backoff {
                base: Duration::from_millis(5),
                max: Duration::from_secs(1000),
            },
        );
        let handler_queue = queue.clone();
        let handler_allocator = Arc::clone(&allocator);
        ctx.nodes.on_change(move |change| {
            let mut alloc = handler_allocator.lock().unwrap_or_else(|p| p.into_inner());
            match change {
                Change::Added(node) | Change::Updated { new: node, .. } => {
                    let cidrs = pod_cidrs(node);
                    if cidrs.is_empty() {
                        handler_queue.add(node.name_any());
                    }
                    for c in cidrs.iter().filter_map(|c| c.parse::<IpNet>().ok()) {
                        alloc.occupy(&c);
                    }
                }
                Change::Deleted(node) => {
                    let nets: Vec<IpNet> = pod_cidrs(node)
                        .iter()
                        .filter_map(|c| c.parse().ok())
                        .collect();
                    alloc.release(&nets);
                }
            }
        });
        Ok(Self {
            api: Api::all(ctx.client.clone()),
            nodes: ctx.nodes.store(),
            informer: Arc::clone(&ctx.nodes),
            recorder: Recorder::new(ctx.client.clone(), EVENT_SOURCE),
            allocator,
            queue,
            service_cidrs: config.service_cidrs,
        })
    }

    pub async fn run(self) {
        // Nothing is handed out before every existing Node's CIDRs are known.
        self.informer.synced().await;
        {
            let mut alloc = self.allocator.lock().unwrap_or_else(|p| p.into_inner());
            for net in &self.service_cidrs {
                alloc.occupy(net);
            }
            for node in self.nodes.list() {
                for c in pod_cidrs(&node) {
                    match c.parse::<IpNet>() {
                        Ok(net) => {
                            if !alloc.occupy(&net) {
                                tracing::warn!(node = %node.name_any(), cidr = %c, "node's pod CIDR is outside every cluster CIDR");
                            }
                        }
                        Err(e) => {
                            tracing::warn!(node = %node.name_any(), error = %e, "node has an invalid pod CIDR")
                        }
                    }
                }
            }
            tracing::info!(in_use = ?alloc.in_use(), "node IPAM allocation map rebuilt from existing nodes");
        }
        let this = Arc::new(self);
        let sync = {
            let this = Arc::clone(&this);
            move |name: String| {
                let this = Arc::clone(&this);
                async move { this.sync(&name).await }
            }
        };
        run_workers(this.queue.clone(), WORKERS, sync).await;
    }

    fn allocator(&self) -> std::sync::MutexGuard<'_, Allocator> {
        self.allocator.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn sync(&self, name: &str) -> Outcome {
        let Some(node) = self.nodes.get(name) else {
            return Outcome::Done;
        };
        if !pod_cidrs(&node).is_empty() {
            return Outcome::Done;
        }
        let allocated = match self.allocator().allocate() {
            Ok(nets) => nets,
            Err(e) => {
                tracing::error!(node = name, error = %e, "no CIDR available for node");
                self.recorder.publish(
                    node.as_ref(),
                    EventType::Normal,
                    reasons::CIDR_NOT_AVAILABLE,
                    format!("Node {name} status is now: CIDRNotAvailable ({e})"),
                );
                return Outcome::Retry;
            }
        };
        let cidrs: Vec<String> = allocated.iter().map(ToString::to_string).collect();
        // The patch carries the cached resourceVersion: if the Node changed
        // (say, it got CIDRs meanwhile), it is re-read and left alone.
        let result = patch_node(&self.api, &node, COMPONENT, |current| {
            pod_cidrs(current)
                .is_empty()
                .then(|| json!({"spec": {"podCIDR": cidrs[0], "podCIDRs": cidrs}}))
        })
        .await;
        match result {
            Ok(Some(_)) => {
                tracing::info!(node = name, cidrs = ?cidrs, "assigned pod CIDRs");
                Outcome::Done
            }
            Ok(None) => {
                self.allocator().release(&allocated);
                Outcome::Done
            }
            Err(e) if is_not_found(&e) => {
                self.allocator().release(&allocated);
                Outcome::Done
            }
            Err(e) => {
                self.allocator().release(&allocated);
                tracing::warn!(node = name, error = %e, "failed to assign pod CIDRs");
                self.recorder.publish(
                    node.as_ref(),
                    EventType::Warning,
                    reasons::CIDR_ASSIGNMENT_FAILED,
                    format!("Node {name}: failed to assign pod CIDRs {cidrs:?}: {e}"),
                );
                Outcome::Retry
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masks(m: Option<u8>, v4: Option<u8>, v6: Option<u8>) -> MaskFlags {
        MaskFlags {
            node_cidr_mask_size: m,
            node_cidr_mask_size_ipv4: v4,
            node_cidr_mask_size_ipv6: v6,
        }
    }

    fn sizes(cfg: &NodeIpamConfig) -> Vec<u8> {
        cfg.cluster_cidrs.iter().map(|(_, m)| *m).collect()
    }

    #[test]
    fn mask_sizes_follow_upstream() {
        let c = NodeIpamConfig::from_flags("10.244.0.0/16", MaskFlags::default(), "").unwrap();
        assert_eq!(sizes(&c), vec![24]);
        let c =
            NodeIpamConfig::from_flags("10.244.0.0/16", masks(Some(26), None, None), "").unwrap();
        assert_eq!(sizes(&c), vec![26]);
        let c = NodeIpamConfig::from_flags("fd00::/48", masks(None, None, Some(60)), "").unwrap();
        assert_eq!(sizes(&c), vec![60]);
        let c = NodeIpamConfig::from_flags(
            "fd00::/48,10.244.0.0/16",
            masks(None, Some(25), None),
            "10.96.0.0/12",
        )
        .unwrap();
        assert_eq!(sizes(&c), vec![64, 25]);
        assert_eq!(c.service_cidrs.len(), 1);
    }

    #[test]
    fn mask_flag_misuse_is_refused() {
        let err = |cidr, m| NodeIpamConfig::from_flags(cidr, m, "").unwrap_err();
        assert_eq!(
            err("10.244.0.0/16,fd00::/48", masks(Some(24), None, None)),
            IpamConfigError::SingleMaskWithDualStack
        );
        assert_eq!(
            err("10.244.0.0/16", masks(Some(24), Some(24), None)),
            IpamConfigError::MixedMasks
        );
        assert_eq!(
            err("fd00::/48", masks(None, Some(24), None)),
            IpamConfigError::Ipv4MaskOnIpv6
        );
        assert_eq!(
            err("10.244.0.0/16", masks(None, None, Some(64))),
            IpamConfigError::Ipv6MaskOnIpv4
        );
        assert!(matches!(
            err("10.0.0.0/8", masks(Some(30), None, None)),
            IpamConfigError::Mask(_)
        ));
        assert!(matches!(
            err("", MaskFlags::default()),
            IpamConfigError::ClusterCidr(_)
        ));
        assert!(matches!(
            NodeIpamConfig::from_flags("10.244.0.0/16", MaskFlags::default(), "bogus").unwrap_err(),
            IpamConfigError::ServiceCidr(_)
        ));
    }
}
