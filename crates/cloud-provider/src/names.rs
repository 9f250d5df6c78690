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

/// The instance type label the node controller sets.
pub const LABEL_INSTANCE_TYPE: &str = "node.kubernetes.io/instance-type";
/// Its deprecated beta spelling, still set as upstream does.
pub const LABEL_INSTANCE_TYPE_BETA: &str = "beta.kubernetes.io/instance-type";
/// The zone label the node controller sets.
pub const LABEL_ZONE: &str = "topology.kubernetes.io/zone";
/// Its deprecated beta spelling, still set as upstream does.
pub const LABEL_ZONE_BETA: &str = "failure-domain.beta.kubernetes.io/zone";
/// The region label the node controller sets.
pub const LABEL_REGION: &str = "topology.kubernetes.io/region";
/// Its deprecated beta spelling, still set as upstream does.
pub const LABEL_REGION_BETA: &str = "failure-domain.beta.kubernetes.io/region";
/// Nodes with this label set to true are left out of load balancers.
pub const LABEL_EXCLUDE_FROM_EXTERNAL_LOAD_BALANCERS: &str =
    "node.kubernetes.io/exclude-from-external-load-balancers";

/// Finalizer that keeps a Service until its cloud load balancer is deleted.
pub const FINALIZER_LOAD_BALANCER_CLEANUP: &str = "service.kubernetes.io/load-balancer-cleanup";

/// Upstream's controller names (`names/controller_names.go`) and their aliases,
/// as `--controllers` and leader migration use them.
pub mod controllers {
    /// Initialises Nodes (addresses, labels, providerID, taint).
    pub const CLOUD_NODE: &str = "cloud-node-controller";
    /// Deletes Nodes whose instance is gone, taints shut-down ones.
    pub const CLOUD_NODE_LIFECYCLE: &str = "cloud-node-lifecycle-controller";
    /// Cloud load balancers for `type: LoadBalancer` Services.
    pub const SERVICE_LB: &str = "service-lb-controller";
    /// Cloud routes for the Nodes' pod CIDRs.
    pub const NODE_ROUTE: &str = "node-route-controller";
    /// Assigns the Nodes' pod CIDRs.
    pub const NODE_IPAM: &str = "node-ipam-controller";

    /// `--controllers` alias of [`CLOUD_NODE`].
    pub const CLOUD_NODE_ALIAS: &str = "cloud-node";
    /// `--controllers` alias of [`CLOUD_NODE_LIFECYCLE`].
    pub const CLOUD_NODE_LIFECYCLE_ALIAS: &str = "cloud-node-lifecycle";
    /// `--controllers` alias of [`SERVICE_LB`].
    pub const SERVICE_LB_ALIAS: &str = "service";
    /// `--controllers` alias of [`NODE_ROUTE`].
    pub const NODE_ROUTE_ALIAS: &str = "route";
    /// `--controllers` alias of [`NODE_IPAM`].
    pub const NODE_IPAM_ALIAS: &str = "nodeipam";
}

/// Event reasons, as upstream's controllers record them.
pub mod reasons {
    // cloud-node-controller
    /// A Node initialised.
    pub const SYNCED: &str = "Synced";
    /// Overcast's own: upstream only logs a provided-node-ip that matches no
    /// cloud address, and the Node silently stays uninitialised.
    pub const PROVIDED_NODE_IP_NOT_FOUND: &str = "ProvidedNodeIPNotFound";
    // cloud-node-lifecycle-controller
    /// A Node whose instance is gone is being deleted.
    pub const DELETING_NODE: &str = "DeletingNode";
    /// Deleting such a Node failed.
    pub const DELETING_NODE_FAILED: &str = "DeletingNodeFailed";
    // service-lb-controller
    /// A Service's balancer is being created or updated.
    pub const ENSURING_LOAD_BALANCER: &str = "EnsuringLoadBalancer";
    /// It was.
    pub const ENSURED_LOAD_BALANCER: &str = "EnsuredLoadBalancer";
    /// A balancer's backends were updated for a node change.
    pub const UPDATED_LOAD_BALANCER: &str = "UpdatedLoadBalancer";
    /// That update failed.
    pub const UPDATE_LOAD_BALANCER_FAILED: &str = "UpdateLoadBalancerFailed";
    /// A Service's balancer is being deleted.
    pub const DELETING_LOAD_BALANCER: &str = "DeletingLoadBalancer";
    /// It was.
    pub const DELETED_LOAD_BALANCER: &str = "DeletedLoadBalancer";
    /// Deleting the balancer of a Service gone from the API failed.
    pub const DELETE_LOAD_BALANCER_FAILED: &str = "DeleteLoadBalancerFailed";
    /// A Service's sync failed (retried with back-off).
    pub const SYNC_LOAD_BALANCER_FAILED: &str = "SyncLoadBalancerFailed";
    /// A balancer has no Node to send traffic to.
    pub const UNAVAILABLE_LOAD_BALANCER: &str = "UnAvailableLoadBalancer";
    // node-route-controller
    /// A Node's route could not be created.
    pub const FAILED_TO_CREATE_ROUTE: &str = "FailedToCreateRoute";
    /// It was created (the Node's NetworkUnavailable condition says so).
    pub const ROUTE_CREATED: &str = "RouteCreated";
    /// No route was created for the Node.
    pub const NO_ROUTE_CREATED: &str = "NoRouteCreated";
    // node-ipam
    /// No pod CIDR is left to assign to a Node.
    pub const CIDR_NOT_AVAILABLE: &str = "CIDRNotAvailable";
    /// Assigning a Node's pod CIDR failed.
    pub const CIDR_ASSIGNMENT_FAILED: &str = "CIDRAssignmentFailed";
}
