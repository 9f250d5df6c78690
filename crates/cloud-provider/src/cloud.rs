use std::collections::BTreeMap;

use std::sync::Arc;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{LoadBalancerStatus, Node, NodeAddress, Service};

use crate::context::ProviderContext;
use crate::controller::{FlagValues, NodeController};
use crate::error::{CloudError, Result};

/// A cloud provider: upstream's `cloudprovider.Interface`.
///
/// Each accessor returns the part of the cloud this provider supports, or `None`
/// (upstream's `(impl, false)`); a controller whose part is missing is skipped.
/// Objects passed to any method are read-only snapshots.
#[async_trait]
pub trait CloudProvider: std::fmt::Debug + Send + Sync + 'static {
    /// The name the provider is registered under, also the scheme of its
    /// provider IDs (`<name>://...`).
    fn provider_name(&self) -> &str;

    /// Whether the provider was configured with a cluster ID. Upstream refuses
    /// to start without one unless `--allow-untagged-cloud` is set.
    fn has_cluster_id(&self) -> bool {
        true
    }

    /// Called once before any controller starts (upstream's `Initialize`
    /// with its client builder and `SetInformers`), with what the provider
    /// may keep of the cluster: see [`ProviderContext`]. Shadow mode
    /// (`--shadow`) calls it too, while another implementation is in
    /// charge: take nothing here that only the one in charge may hold (an
    /// address to serve); do that in the calls that act.
    async fn initialize(&self, _ctx: &ProviderContext) -> Result<()> {
        Ok(())
    }

    /// The `--cloud-config` file changed; `config` is its new contents. A
    /// provider that reloads validates them and either applies them whole or
    /// answers an error naming the bad field (the old config stays in force).
    /// The default, [`CloudError::NotImplemented`], means "restart to apply".
    async fn reload_config(&self, _config: &[u8]) -> Result<()> {
        Err(CloudError::NotImplemented)
    }

    /// This process stops running the controllers (SIGTERM, or a lost lease):
    /// release what only the leader may hold, such as addresses it serves.
    async fn shutdown(&self) {}

    /// Instances by Node object; preferred over [`CloudProvider::instances`].
    fn instances_v2(&self) -> Option<&dyn InstancesV2> {
        None
    }
    /// Instances by name or providerID (upstream's older interface).
    fn instances(&self) -> Option<&dyn Instances> {
        None
    }
    /// Load balancers for `type: LoadBalancer` Services.
    fn load_balancer(&self) -> Option<&dyn LoadBalancer> {
        None
    }
    /// Routes for the Nodes' pod CIDRs.
    fn routes(&self) -> Option<&dyn Routes> {
        None
    }
    /// Zones, used only without [`CloudProvider::instances_v2`].
    fn zones(&self) -> Option<&dyn Zones> {
        None
    }
    /// Clusters (no controller calls it; upstream keeps it for API parity).
    fn clusters(&self) -> Option<&dyn Clusters> {
        None
    }

    /// The provider's own controller `name` (declared by a
    /// [`crate::ControllerSpec`] given to the CCM's builder), built from its
    /// flag values; `None` when this provider has no such controller, and
    /// the CCM skips it, saying so. An error (a flag value the controller
    /// cannot run with) stops the CCM at start-up. Called after
    /// [`CloudProvider::initialize`], once the controller is enabled and
    /// this process leads; never in shadow mode.
    fn node_controller(
        self: Arc<Self>,
        _name: &str,
        _flags: &FlagValues,
    ) -> Option<Result<Arc<dyn NodeController>>> {
        None
    }
}

/// What the cloud knows about a Node's machine (`cloudprovider.InstanceMetadata`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct InstanceMetadata {
    /// `<provider>://<id>`; empty means "use the Node's spec.providerID".
    pub provider_id: String,
    /// The `node.kubernetes.io/instance-type` label; empty: not set.
    pub instance_type: String,
    /// The Node's `status.addresses`, in the order to write them.
    pub node_addresses: Vec<NodeAddress>,
    /// The `topology.kubernetes.io/zone` label; empty: not set.
    pub zone: String,
    /// The `topology.kubernetes.io/region` label; empty: not set.
    pub region: String,
    /// Labels to add to the Node. Keys under kubernetes.io / k8s.io are ignored,
    /// and labels already on the Node are never overwritten.
    pub additional_labels: BTreeMap<String, String>,
}

/// Instances by Node object (upstream's `InstancesV2`). When a provider has it,
/// the node controllers never call [`Instances`] or [`Zones`].
#[async_trait]
pub trait InstancesV2: Send + Sync {
    /// `Ok(false)` means the instance definitely does not exist, and the
    /// lifecycle controller deletes the Node. Return an error, never `false`,
    /// when unsure. [`CloudError::InstanceNotFound`] is also read as "does not
    /// exist".
    async fn instance_exists(&self, node: &Node) -> Result<bool>;
    /// Whether the instance exists but is shut down.
    async fn instance_shutdown(&self, node: &Node) -> Result<bool>;
    /// The instance's metadata; `Ok(None)` leaves the Node uninitialised for now.
    async fn instance_metadata(&self, node: &Node) -> Result<Option<InstanceMetadata>>;
}

/// Instances by name or provider ID (upstream's legacy `Instances`).
/// Only the calls a provider supports need overriding; the rest answer
/// [`CloudError::NotImplemented`].
#[async_trait]
pub trait Instances: Send + Sync {
    /// The addresses of the Node named `node_name`.
    async fn node_addresses(&self, _node_name: &str) -> Result<Vec<NodeAddress>> {
        Err(CloudError::NotImplemented)
    }
    /// The addresses of the instance `provider_id` names.
    async fn node_addresses_by_provider_id(&self, _provider_id: &str) -> Result<Vec<NodeAddress>> {
        Err(CloudError::NotImplemented)
    }
    /// The cloud's ID for the instance, without the `<provider>://` prefix.
    async fn instance_id(&self, _node_name: &str) -> Result<String> {
        Err(CloudError::NotImplemented)
    }
    /// The instance type of the Node named `node_name`.
    async fn instance_type(&self, _node_name: &str) -> Result<String> {
        Err(CloudError::NotImplemented)
    }
    /// The instance type of the instance `provider_id` names.
    async fn instance_type_by_provider_id(&self, _provider_id: &str) -> Result<String> {
        Err(CloudError::NotImplemented)
    }
    /// Upstream's; no controller calls it.
    async fn add_ssh_key_to_all_instances(&self, _user: &str, _key: &[u8]) -> Result<()> {
        Err(CloudError::NotImplemented)
    }
    /// The Node name of the machine with this hostname.
    async fn current_node_name(&self, hostname: &str) -> Result<String> {
        Ok(hostname.to_string())
    }
    /// `Ok(false)` deletes the Node; a stopped machine must answer `true`.
    async fn instance_exists_by_provider_id(&self, _provider_id: &str) -> Result<bool> {
        Err(CloudError::NotImplemented)
    }
    /// Whether the instance `provider_id` names is shut down.
    async fn instance_shutdown_by_provider_id(&self, _provider_id: &str) -> Result<bool> {
        Err(CloudError::NotImplemented)
    }
}

/// `type: LoadBalancer` Services (upstream's `LoadBalancer`).
#[async_trait]
pub trait LoadBalancer: Send + Sync {
    /// The balancer's status, or `None` when nothing of it exists. Report it
    /// as existing (an empty status will do) while *any* cloud resource made
    /// for the Service remains, not only its front end: the service
    /// controller asks this before a cleanup and drops the Service's
    /// finalizer without calling `ensure_load_balancer_deleted` when it says
    /// `None`, so a deletion interrupted half-way (a crash, a resource still
    /// detaching) would otherwise leak the rest.
    async fn get_load_balancer(
        &self,
        cluster_name: &str,
        service: &Service,
    ) -> Result<Option<LoadBalancerStatus>>;

    /// The cloud name of the Service's balancer; upstream's default is
    /// [`default_load_balancer_name`].
    fn get_load_balancer_name(&self, _cluster_name: &str, service: &Service) -> String {
        default_load_balancer_name(service)
    }

    /// Creates or updates the balancer so it serves the Service through `nodes`;
    /// returns the status to write. Must be idempotent.
    async fn ensure_load_balancer(
        &self,
        cluster_name: &str,
        service: &Service,
        nodes: &[&Node],
    ) -> Result<LoadBalancerStatus>;

    /// What [`LoadBalancer::ensure_load_balancer`] would do for the Service
    /// now, found with read calls only, changing nothing in the cloud or in
    /// the provider: for the preflight check and shadow mode before a
    /// migration, which compare it with the Service's status.
    /// [`LoadBalancer::restore`] has been called first. The default,
    /// [`CloudError::NotImplemented`], means the provider cannot tell without
    /// acting.
    async fn preview_load_balancer(
        &self,
        _cluster_name: &str,
        _service: &Service,
        _nodes: &[&Node],
    ) -> Result<LoadBalancerPreview> {
        Err(CloudError::NotImplemented)
    }

    /// Annotations on the Service that another implementation honours and
    /// this provider does not, each with what to use instead: a preflight
    /// check lists them, since a user counting on one would lose its effect.
    fn unhonoured_annotations(&self, _service: &Service) -> Vec<String> {
        Vec::new()
    }

    /// Updates the balancer's backends to `nodes`.
    async fn update_load_balancer(
        &self,
        cluster_name: &str,
        service: &Service,
        nodes: &[&Node],
    ) -> Result<()>;

    /// Called once after the caches have synced and before the first sync,
    /// with every Service of type LoadBalancer as stored (status included), so
    /// a provider that keeps state derived from Services (an address
    /// allocator) rebuilds it before it hands anything out. An error is
    /// retried with back-off; no Service is synced until this succeeds.
    async fn restore(&self, _cluster_name: &str, _services: &[Service]) -> Result<()> {
        Ok(())
    }

    /// Deletes the balancer; `Ok(())` when it is already gone. Must not
    /// answer [`CloudError::ImplementedElsewhere`].
    async fn ensure_load_balancer_deleted(
        &self,
        cluster_name: &str,
        service: &Service,
    ) -> Result<()>;
}

/// What ensuring a Service's balancer would do ([`LoadBalancer::preview_load_balancer`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoadBalancerPreview {
    /// The status ensure would answer; `None`: a new balancer would be
    /// made, its address not known in advance.
    pub status: Option<LoadBalancerStatus>,
    /// Changes to an existing balancer's parts beyond its address (a target
    /// group replaced, a listener changed), one short phrase each.
    pub changes: Vec<String>,
}

/// Upstream's `DefaultLoadBalancerName`: "a" + the Service UID without dashes,
/// cut to 32 characters (a limit some clouds impose).
pub fn default_load_balancer_name(service: &Service) -> String {
    let uid = service.metadata.uid.as_deref().unwrap_or_default();
    let mut name: String = std::iter::once('a')
        .chain(uid.chars().filter(|c| *c != '-'))
        .collect();
    name.truncate(32);
    name
}

/// A route for a Node's pod CIDR (`cloudprovider.Route`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Route {
    /// The cloud's name for the route; ignored by `create_route`.
    pub name: String,
    /// The Node the route sends the CIDR to.
    pub target_node: String,
    /// Whether the cloud routes to node addresses instead of node names.
    pub enable_node_addresses: bool,
    /// The Node's addresses, when `enable_node_addresses`.
    pub target_node_addresses: Vec<NodeAddress>,
    /// The pod CIDR.
    pub destination_cidr: String,
    /// A route whose target is gone; the route controller deletes it.
    pub blackhole: bool,
}

/// Routes for pod CIDRs (upstream's `Routes`).
#[async_trait]
pub trait Routes: Send + Sync {
    /// Each route's `target_node` names a Node; a provider whose cloud
    /// targets something else (an instance ID) finds the Node in
    /// [`ProviderContext::nodes`], as upstream providers read their Node
    /// informer.
    async fn list_routes(&self, cluster_name: &str) -> Result<Vec<Route>>;
    /// `name_hint` is the Node's UID, unique and stable for naming the route.
    async fn create_route(&self, cluster_name: &str, name_hint: &str, route: &Route) -> Result<()>;
    /// Deletes `route`; `Ok(())` when it is already gone.
    async fn delete_route(&self, cluster_name: &str, route: &Route) -> Result<()>;
}

/// A failure domain (`cloudprovider.Zone`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Zone {
    /// The zone.
    pub failure_domain: String,
    /// The region.
    pub region: String,
}

/// Zones (deprecated upstream; used only without [`InstancesV2`]).
#[async_trait]
pub trait Zones: Send + Sync {
    /// The zone of the machine the CCM runs on.
    async fn get_zone(&self) -> Result<Zone>;
    /// The zone of the instance `provider_id` names.
    async fn get_zone_by_provider_id(&self, provider_id: &str) -> Result<Zone>;
    /// The zone of the Node named `node_name`.
    async fn get_zone_by_node_name(&self, node_name: &str) -> Result<Zone>;
}

/// Clusters (upstream's `Clusters`).
#[async_trait]
pub trait Clusters: Send + Sync {
    /// The clusters' names.
    async fn list_clusters(&self) -> Result<Vec<String>>;
    /// The address of the cluster's control plane.
    async fn master(&self, cluster_name: &str) -> Result<String>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    #[test]
    fn default_load_balancer_name_is_a_plus_uid_without_dashes_cut_to_32() {
        let svc = Service {
            metadata: ObjectMeta {
                uid: Some("3b2c4d5e-1f2a-4b3c-8d9e-0a1b2c3d4e5f".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let name = default_load_balancer_name(&svc);
        assert_eq!(name, "a3b2c4d5e1f2a4b3c8d9e0a1b2c3d4e5");
        assert_eq!(name.len(), 32);
    }

    #[test]
    fn default_load_balancer_name_of_a_service_without_uid_is_a() {
        assert_eq!(default_load_balancer_name(&Service::default()), "a");
    }
}
