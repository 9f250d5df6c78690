//! Well-known names, exactly as upstream spells them (k8s.io/api well_known_labels
//! and well_known_taints, k8s.io/cloud-provider api/, the service controller).

/// Taint the kubelet puts on a Node when an external cloud provider must
/// initialise it (`api/well_known_taints.go`).
pub const TAINT_UNINITIALIZED: &str = "node.cloudprovider.kubernetes.io/uninitialized";
/// Taint the lifecycle controller puts on a Node whose instance is shut down.
pub const TAINT_SHUTDOWN: &str = "node.cloudprovider.kubernetes.io/shutdown";
/// Taint key of nodes the cluster autoscaler is about to remove.
pub const TAINT_TO_BE_DELETED_BY_AUTOSCALER: &str = "ToBeDeletedByClusterAutoscaler";

/// Annotation the kubelet sets from `--node-ip` when running with an external
/// cloud provider (`api/well_known_annotations.go`).
pub const ANNOTATION_PROVIDED_NODE_IP: &str = "alpha.kubernetes.io/provided-node-ip";

pub const LABEL_INSTANCE_TYPE: &str = "node.kubernetes.io/instance-type";
pub const LABEL_INSTANCE_TYPE_BETA: &str = "beta.kubernetes.io/instance-type";
pub const LABEL_ZONE: &str = "topology.kubernetes.io/zone";
pub const LABEL_ZONE_BETA: &str = "failure-domain.beta.kubernetes.io/zone";
pub const LABEL_REGION: &str = "topology.kubernetes.io/region";
pub const LABEL_REGION_BETA: &str = "failure-domain.beta.kubernetes.io/region";
/// Nodes with this label set to true are left out of load balancers.
pub const LABEL_EXCLUDE_FROM_EXTERNAL_LOAD_BALANCERS: &str =
    "node.kubernetes.io/exclude-from-external-load-balancers";

/// Finalizer that keeps a Service until its cloud load balancer is deleted.
pub const FINALIZER_LOAD_BALANCER_CLEANUP: &str = "service.kubernetes.io/load-balancer-cleanup";

/// Upstream's controller names (`names/controller_names.go`) and their aliases,
/// as `--controllers` and leader migration use them.
pub mod controllers {
    pub const CLOUD_NODE: &str = "cloud-node-controller";
    pub const CLOUD_NODE_LIFECYCLE: &str = "cloud-node-lifecycle-controller";
    pub const SERVICE_LB: &str = "service-lb-controller";
    pub const NODE_ROUTE: &str = "node-route-controller";
    pub const NODE_IPAM: &str = "node-ipam-controller";

    pub const CLOUD_NODE_ALIAS: &str = "cloud-node";
    pub const CLOUD_NODE_LIFECYCLE_ALIAS: &str = "cloud-node-lifecycle";
    pub const SERVICE_LB_ALIAS: &str = "service";
    pub const NODE_ROUTE_ALIAS: &str = "route";
    pub const NODE_IPAM_ALIAS: &str = "nodeipam";
}

/// Event reasons, as upstream's controllers record them.
pub mod reasons {
    // cloud-node-controller
    pub const SYNCED: &str = "Synced";
    /// Overcast's own: upstream only logs a provided-node-ip that matches no
    /// cloud address, and the Node silently stays uninitialised.
    pub const PROVIDED_NODE_IP_NOT_FOUND: &str = "ProvidedNodeIPNotFound";
    // cloud-node-lifecycle-controller
    pub const DELETING_NODE: &str = "DeletingNode";
    pub const DELETING_NODE_FAILED: &str = "DeletingNodeFailed";
    // service-lb-controller
    pub const ENSURING_LOAD_BALANCER: &str = "EnsuringLoadBalancer";
    pub const ENSURED_LOAD_BALANCER: &str = "EnsuredLoadBalancer";
    pub const UPDATED_LOAD_BALANCER: &str = "UpdatedLoadBalancer";
    pub const UPDATE_LOAD_BALANCER_FAILED: &str = "UpdateLoadBalancerFailed";
    pub const DELETING_LOAD_BALANCER: &str = "DeletingLoadBalancer";
    pub const DELETED_LOAD_BALANCER: &str = "DeletedLoadBalancer";
    pub const DELETE_LOAD_BALANCER_FAILED: &str = "DeleteLoadBalancerFailed";
    pub const SYNC_LOAD_BALANCER_FAILED: &str = "SyncLoadBalancerFailed";
    pub const UNAVAILABLE_LOAD_BALANCER: &str = "UnAvailableLoadBalancer";
    // node-route-controller
    pub const FAILED_TO_CREATE_ROUTE: &str = "FailedToCreateRoute";
    pub const ROUTE_CREATED: &str = "RouteCreated";
    pub const NO_ROUTE_CREATED: &str = "NoRouteCreated";
    // node-ipam
    pub const CIDR_NOT_AVAILABLE: &str = "CIDRNotAvailable";
    pub const CIDR_ASSIGNMENT_FAILED: &str = "CIDRAssignmentFailed";
}
