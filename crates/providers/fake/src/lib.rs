//! An in-memory cloud for tests and benchmarks: instances, load balancers and
//! routes live in a map; every call is recorded; any call can be made to fail
//! (once, n times, or until healed) or to answer slowly.
//!
//! Provider IDs are `fake://<node name>` unless an instance says otherwise.

pub mod config;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::LazyLock;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use overcast_cloud_provider::k8s_openapi::api::core::v1::{
    LoadBalancerIngress, LoadBalancerStatus, Node, NodeAddress, Service,
};
use overcast_cloud_provider::{
    CloudError, CloudProvider, Clusters, InstanceMetadata, Instances, InstancesV2, LoadBalancer,
    LoadBalancerPreview, Result, Route, Routes, Zone, Zones,
};

pub const PROVIDER_NAME: &str = "fake";

/// One machine of the fake cloud.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FakeInstance {
    /// Empty means `fake://<node name>`.
    pub provider_id: String,
    pub instance_type: String,
    pub addresses: Vec<NodeAddress>,
    pub zone: String,
    pub region: String,
    pub additional_labels: BTreeMap<String, String>,
    pub shutdown: bool,
}

/// Which parts of the cloud interface the fake offers (all by default).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    pub instances_v2: bool,
    pub instances: bool,
    pub load_balancer: bool,
    pub routes: bool,
    pub zones: bool,
    pub clusters: bool,
}

impl Default for Capabilities {
    fn default() -> Self {
        Self {
            instances_v2: true,
            instances: true,
            load_balancer: true,
            routes: true,
            zones: true,
            clusters: true,
        }
    }
}

/// How a call is made to fail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// A plain (transient) error with this message.
    Error(String),
    /// `CloudError::Retry` with this delay.
    Retry(Duration),
    InstanceNotFound,
    NotImplemented,
    ImplementedElsewhere,
}

impl Failure {
    fn to_error(&self, op: &str) -> CloudError {
        match self {
            Failure::Error(msg) => CloudError::other(format!("fake {op}: {msg}")),
            Failure::Retry(after) => CloudError::retry(format!("fake {op}: try later"), *after),
            Failure::InstanceNotFound => CloudError::InstanceNotFound,
            Failure::NotImplemented => CloudError::NotImplemented,
            Failure::ImplementedElsewhere => CloudError::ImplementedElsewhere,
        }
    }
}

/// A load balancer the fake has made.
#[derive(Clone, Debug, PartialEq)]
pub struct Balancer {
    pub name: String,
    /// `namespace/name` of the Service.
    pub service: String,
    /// Names of the Nodes it sends traffic to, sorted.
    pub hosts: Vec<String>,
    pub status: LoadBalancerStatus,
}

/// One recorded EnsureLoadBalancer or UpdateLoadBalancer call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadBalancerCall {
    /// "ensure" or "update".
    pub op: &'static str,
    pub service: String,
    pub hosts: Vec<String>,
}

static REQUEST_DURATION: LazyLock<prometheus::HistogramVec> = LazyLock::new(|| {
    prometheus::HistogramVec::new(
        prometheus::HistogramOpts::new(
            "cloudprovider_fake_api_request_duration_seconds",
            "Latency of the fake cloud's API calls",
        ),
        &["request"],
    )
    .expect("a valid metric")
});
static REQUEST_ERRORS: LazyLock<prometheus::IntCounterVec> = LazyLock::new(|| {
    prometheus::IntCounterVec::new(
        prometheus::Opts::new(
            "cloudprovider_fake_api_request_errors",
            "Failed calls to the fake cloud's API",
        ),
        &["request"],
    )
    .expect("a valid metric")
});

#[derive(Debug, Default)]
struct State {
    instances: BTreeMap<String, FakeInstance>,
    /// When set, every Node name without an instance of its own exists with these answers.
    any_instance: Option<FakeInstance>,
    calls: Vec<String>,
    lb_calls: Vec<LoadBalancerCall>,
    balancers: BTreeMap<String, Balancer>,
    routes: BTreeMap<String, Route>,
    fail_next: HashMap<String, VecDeque<Failure>>,
    fail_always: HashMap<String, Failure>,
    delay: Duration,
    next_ip: u32,
    no_metadata: bool,
    blank_provider_ids: bool,
    /// Off when the fake serves overcast-ccm from a config file: a long run
    /// must not grow a log of every call (and the benchmark's Go peer keeps none).
    quiet: bool,
    clusters: Vec<String>,
}

/// The fake cloud. Cheap to clone: clones share one state, so a test keeps a
/// handle while the controllers hold another.
#[derive(Clone, Debug)]
pub struct FakeCloud {
    name: String,
    capabilities: Capabilities,
    state: Arc<Mutex<State>>,
}

impl Default for FakeCloud {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeCloud {
    pub fn new() -> Self {
        Self::with_capabilities(Capabilities::default())
    }

    pub fn with_capabilities(capabilities: Capabilities) -> Self {
        Self {
            name: PROVIDER_NAME.to_string(),
            capabilities,
            state: Arc::new(Mutex::new(State {
                clusters: vec!["kubernetes".to_string()],
                ..Default::default()
            })),
        }
    }

    /// Builds the fake cloud from a `--cloud-config` file (see [`config`]).
    pub fn from_config(bytes: Option<&[u8]>) -> Result<Self, config::ConfigError> {
        let cloud = Self::new();
        cloud.state().quiet = true;
        if let Some(bytes) = bytes {
            let cfg = config::parse(bytes)?;
            let mut state = cloud.state();
            for (name, i) in &cfg.instances {
                state.instances.insert(name.clone(), i.to_instance());
            }
            state.any_instance = cfg
                .any_instance
                .as_ref()
                .map(config::InstanceConfig::to_instance);
        }
        Ok(cloud)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds (or replaces) the instance behind the Node `node_name`.
    pub fn add_instance(&self, node_name: &str, instance: FakeInstance) {
        self.state()
            .instances
            .insert(node_name.to_string(), instance);
    }

    /// Removes the instance: the cloud now says it does not exist.
    pub fn remove_instance(&self, node_name: &str) {
        self.state().instances.remove(node_name);
    }

    pub fn set_shutdown(&self, node_name: &str, shutdown: bool) {
        if let Some(i) = self.state().instances.get_mut(node_name) {
            i.shutdown = shutdown;
        }
    }

    pub fn set_addresses(&self, node_name: &str, addresses: Vec<NodeAddress>) {
        if let Some(i) = self.state().instances.get_mut(node_name) {
            i.addresses = addresses;
        }
    }

    /// Makes InstancesV2's metadata answer "nothing yet" (`Ok(None)`).
    pub fn set_no_metadata(&self, none: bool) {
        self.state().no_metadata = none;
    }

    /// Makes InstancesV2's metadata carry no providerID (a provider bug
    /// upstream untainted Nodes for, kubernetes#123713).
    pub fn set_blank_provider_ids(&self, blank: bool) {
        self.state().blank_provider_ids = blank;
    }

    /// The next `times` calls of `op` fail with `failure`.
    pub fn fail_next(&self, op: &str, times: usize, failure: Failure) {
        let mut state = self.state();
        let queue = state.fail_next.entry(op.to_string()).or_default();
        queue.extend(std::iter::repeat_n(failure, times));
    }

    /// Every call of `op` fails with `failure` until [`FakeCloud::heal`].
    pub fn fail_always(&self, op: &str, failure: Failure) {
        self.state().fail_always.insert(op.to_string(), failure);
    }

    /// Ends the failures of `op`.
    pub fn heal(&self, op: &str) {
        let mut state = self.state();
        state.fail_always.remove(op);
        state.fail_next.remove(op);
    }

    /// Every call sleeps this long before answering.
    pub fn set_delay(&self, delay: Duration) {
        self.state().delay = delay;
    }

    /// The names of the calls made so far, in order (upstream fake's names:
    /// "instance-metadata", "create", "update", "delete", "create-route", ...).
    pub fn calls(&self) -> Vec<String> {
        self.state().calls.clone()
    }

    pub fn count(&self, op: &str) -> usize {
        self.state().calls.iter().filter(|c| *c == op).count()
    }

    pub fn clear_calls(&self) {
        let mut state = self.state();
        state.calls.clear();
        state.lb_calls.clear();
    }

    pub fn load_balancer_calls(&self) -> Vec<LoadBalancerCall> {
        self.state().lb_calls.clone()
    }

    /// Balancers by name.
    pub fn balancers(&self) -> BTreeMap<String, Balancer> {
        self.state().balancers.clone()
    }

    pub fn routes(&self) -> Vec<Route> {
        self.state().routes.values().cloned().collect()
    }

    /// Puts a route into the cloud directly, as if someone else had made it.
    pub fn insert_route(&self, cluster_name: &str, route: Route) {
        let key = route_key(cluster_name, &route);
        self.state().routes.insert(key, route);
    }

    /// Records an Ensure/Update call with its hosts, unless quiet; returns
    /// the hosts to keep on the balancer (none when quiet).
    fn record_lb_call(&self, op: &'static str, service: &Service, nodes: &[&Node]) -> Vec<String> {
        let mut state = self.state();
        if state.quiet {
            return Vec::new();
        }
        let hosts = host_names(nodes);
        state.lb_calls.push(LoadBalancerCall {
            op,
            service: service_key(service),
            hosts: hosts.clone(),
        });
        hosts
    }

    /// Records the call, then sleeps and fails as configured.
    async fn enter(&self, op: &str) -> Result<()> {
        let (delay, failure) = {
            let mut state = self.state();
            if !state.quiet {
                state.calls.push(op.to_string());
            }
            let failure = match state.fail_next.get_mut(op).and_then(VecDeque::pop_front) {
                Some(f) => Some(f),
                None => state.fail_always.get(op).cloned(),
            };
            (state.delay, failure)
        };
        let timer = REQUEST_DURATION.with_label_values(&[op]).start_timer();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        timer.observe_duration();
        match failure {
            Some(f) => {
                REQUEST_ERRORS.with_label_values(&[op]).inc();
                Err(f.to_error(op))
            }
            None => Ok(()),
        }
    }

    fn instance_id_of(&self, node_name: &str, instance: &FakeInstance) -> String {
        if instance.provider_id.is_empty() {
            format!("{}://{node_name}", self.name)
        } else {
            instance.provider_id.clone()
        }
    }

    /// The instance behind a Node: by its providerID when set, else by name.
    fn find_for_node(&self, node: &Node) -> Option<(String, FakeInstance)> {
        let pid = node
            .spec
            .as_ref()
            .and_then(|s| s.provider_id.as_deref())
            .unwrap_or_default();
        if pid.is_empty() {
            let name = node.metadata.name.as_deref().unwrap_or_default();
            return self.by_name(name).map(|i| (name.to_string(), i));
        }
        self.find_by_provider_id(pid)
    }

    fn by_name(&self, name: &str) -> Option<FakeInstance> {
        let state = self.state();
        state
            .instances
            .get(name)
            .or(state.any_instance.as_ref())
            .cloned()
    }

    fn find_by_provider_id(&self, provider_id: &str) -> Option<(String, FakeInstance)> {
        let state = self.state();
        let own = state
            .instances
            .iter()
            .find(|(name, i)| self.instance_id_of(name, i) == provider_id)
            .map(|(n, i)| (n.clone(), i.clone()));
        if own.is_some() {
            return own;
        }
        // With anyInstance, fake://<name> names a machine of that name.
        let any = state.any_instance.as_ref()?;
        let name = provider_id.strip_prefix(&format!("{}://", self.name))?;
        (!name.is_empty() && !state.instances.contains_key(name))
            .then(|| (name.to_string(), any.clone()))
    }

    fn metadata_of(&self, name: &str, instance: &FakeInstance) -> InstanceMetadata {
        InstanceMetadata {
            provider_id: self.instance_id_of(name, instance),
            instance_type: instance.instance_type.clone(),
            node_addresses: instance.addresses.clone(),
            zone: instance.zone.clone(),
            region: instance.region.clone(),
            additional_labels: instance.additional_labels.clone(),
        }
    }
}

fn service_key(service: &Service) -> String {
    format!(
        "{}/{}",
        service.metadata.namespace.as_deref().unwrap_or_default(),
        service.metadata.name.as_deref().unwrap_or_default()
    )
}

fn host_names(nodes: &[&Node]) -> Vec<String> {
    let mut hosts: Vec<String> = nodes
        .iter()
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    hosts.sort();
    hosts
}

fn route_key(cluster_name: &str, route: &Route) -> String {
    format!(
        "{cluster_name}-{}-{}",
        route.target_node, route.destination_cidr
    )
}

#[async_trait]
impl CloudProvider for FakeCloud {
    fn provider_name(&self) -> &str {
        &self.name
    }
    async fn initialize(&self, ctx: &overcast_cloud_provider::ProviderContext) -> Result<()> {
        overcast_cloud_provider::metrics::register_all(
            ctx.metrics(),
            vec![
                Box::new(REQUEST_DURATION.clone()),
                Box::new(REQUEST_ERRORS.clone()),
            ],
        )
        .map_err(CloudError::from_err)
    }
    fn instances_v2(&self) -> Option<&dyn InstancesV2> {
        self.capabilities.instances_v2.then_some(self as _)
    }
    fn instances(&self) -> Option<&dyn Instances> {
        self.capabilities.instances.then_some(self as _)
    }
    fn load_balancer(&self) -> Option<&dyn LoadBalancer> {
        self.capabilities.load_balancer.then_some(self as _)
    }
    fn routes(&self) -> Option<&dyn Routes> {
        self.capabilities.routes.then_some(self as _)
    }
    fn zones(&self) -> Option<&dyn Zones> {
        self.capabilities.zones.then_some(self as _)
    }
    fn clusters(&self) -> Option<&dyn Clusters> {
        self.capabilities.clusters.then_some(self as _)
    }
}

#[async_trait]
impl InstancesV2 for FakeCloud {
    async fn instance_exists(&self, node: &Node) -> Result<bool> {
        self.enter("instance-exists").await?;
        Ok(self.find_for_node(node).is_some())
    }

    async fn instance_shutdown(&self, node: &Node) -> Result<bool> {
        self.enter("instance-shutdown").await?;
        match self.find_for_node(node) {
            Some((_, i)) => Ok(i.shutdown),
            None => Err(CloudError::InstanceNotFound),
        }
    }

    async fn instance_metadata(&self, node: &Node) -> Result<Option<InstanceMetadata>> {
        self.enter("instance-metadata").await?;
        if self.state().no_metadata {
            return Ok(None);
        }
        let blank = self.state().blank_provider_ids;
        match self.find_for_node(node) {
            Some((name, i)) => {
                let mut meta = self.metadata_of(&name, &i);
                if blank {
                    meta.provider_id.clear();
                }
                Ok(Some(meta))
            }
            None => Err(CloudError::InstanceNotFound),
        }
    }
}

#[async_trait]
impl Instances for FakeCloud {
    async fn node_addresses(&self, node_name: &str) -> Result<Vec<NodeAddress>> {
        self.enter("node-addresses").await?;
        let state = self.state();
        let i = state
            .instances
            .get(node_name)
            .ok_or(CloudError::InstanceNotFound)?;
        Ok(i.addresses.clone())
    }

    async fn node_addresses_by_provider_id(&self, provider_id: &str) -> Result<Vec<NodeAddress>> {
        self.enter("node-addresses-by-provider-id").await?;
        let (_, i) = self
            .find_by_provider_id(provider_id)
            .ok_or(CloudError::InstanceNotFound)?;
        Ok(i.addresses)
    }

    async fn instance_id(&self, node_name: &str) -> Result<String> {
        self.enter("instance-id").await?;
        let state = self.state();
        let i = state
            .instances
            .get(node_name)
            .ok_or(CloudError::InstanceNotFound)?;
        let pid = self.instance_id_of(node_name, i);
        Ok(pid
            .strip_prefix(&format!("{}://", self.name))
            .unwrap_or(&pid)
            .to_string())
    }

    async fn instance_type(&self, node_name: &str) -> Result<String> {
        self.enter("instance-type").await?;
        let state = self.state();
        let i = state
            .instances
            .get(node_name)
            .ok_or(CloudError::InstanceNotFound)?;
        Ok(i.instance_type.clone())
    }

    async fn instance_type_by_provider_id(&self, provider_id: &str) -> Result<String> {
        self.enter("instance-type-by-provider-id").await?;
        let (_, i) = self
            .find_by_provider_id(provider_id)
            .ok_or(CloudError::InstanceNotFound)?;
        Ok(i.instance_type)
    }

    async fn instance_exists_by_provider_id(&self, provider_id: &str) -> Result<bool> {
        self.enter("instance-exists-by-provider-id").await?;
        Ok(self.find_by_provider_id(provider_id).is_some())
    }

    async fn instance_shutdown_by_provider_id(&self, provider_id: &str) -> Result<bool> {
        self.enter("instance-shutdown-by-provider-id").await?;
        let (_, i) = self
            .find_by_provider_id(provider_id)
            .ok_or(CloudError::InstanceNotFound)?;
        Ok(i.shutdown)
    }
}

#[async_trait]
impl Zones for FakeCloud {
    async fn get_zone(&self) -> Result<Zone> {
        self.enter("get-zone").await?;
        Err(CloudError::NotImplemented)
    }

    async fn get_zone_by_provider_id(&self, provider_id: &str) -> Result<Zone> {
        self.enter("get-zone-by-provider-id").await?;
        let (_, i) = self
            .find_by_provider_id(provider_id)
            .ok_or(CloudError::InstanceNotFound)?;
        Ok(Zone {
            failure_domain: i.zone,
            region: i.region,
        })
    }

    async fn get_zone_by_node_name(&self, node_name: &str) -> Result<Zone> {
        self.enter("get-zone-by-node-name").await?;
        let state = self.state();
        let i = state
            .instances
            .get(node_name)
            .ok_or(CloudError::InstanceNotFound)?;
        Ok(Zone {
            failure_domain: i.zone.clone(),
            region: i.region.clone(),
        })
    }
}

#[async_trait]
impl LoadBalancer for FakeCloud {
    async fn get_load_balancer(
        &self,
        cluster_name: &str,
        service: &Service,
    ) -> Result<Option<LoadBalancerStatus>> {
        self.enter("get").await?;
        let name = self.get_load_balancer_name(cluster_name, service);
        Ok(self.state().balancers.get(&name).map(|b| b.status.clone()))
    }

    async fn preview_load_balancer(
        &self,
        cluster_name: &str,
        service: &Service,
        _nodes: &[&Node],
    ) -> Result<LoadBalancerPreview> {
        self.enter("get").await?;
        let name = self.get_load_balancer_name(cluster_name, service);
        Ok(LoadBalancerPreview {
            status: self.state().balancers.get(&name).map(|b| b.status.clone()),
            changes: Vec::new(),
        })
    }

    async fn ensure_load_balancer(
        &self,
        cluster_name: &str,
        service: &Service,
        nodes: &[&Node],
    ) -> Result<LoadBalancerStatus> {
        let hosts = self.record_lb_call("ensure", service, nodes);
        self.enter("create").await?;
        let name = self.get_load_balancer_name(cluster_name, service);
        let mut state = self.state();
        let status = match state.balancers.get(&name) {
            Some(existing) => existing.status.clone(),
            None => {
                // Addresses from TEST-NET-2 (RFC 5737), one per balancer.
                state.next_ip += 1;
                let n = state.next_ip;
                LoadBalancerStatus {
                    ingress: Some(vec![LoadBalancerIngress {
                        ip: Some(format!("198.51.{}.{}", 100 + n / 250, n % 250 + 1)),
                        ..Default::default()
                    }]),
                }
            }
        };
        state.balancers.insert(
            name.clone(),
            Balancer {
                name,
                service: service_key(service),
                hosts,
                status: status.clone(),
            },
        );
        Ok(status)
    }

    async fn update_load_balancer(
        &self,
        cluster_name: &str,
        service: &Service,
        nodes: &[&Node],
    ) -> Result<()> {
        let hosts = self.record_lb_call("update", service, nodes);
        self.enter("update").await?;
        let name = self.get_load_balancer_name(cluster_name, service);
        match self.state().balancers.get_mut(&name) {
            Some(b) => {
                b.hosts = hosts;
                Ok(())
            }
            None => Err(CloudError::other(format!(
                "load balancer {name} does not exist"
            ))),
        }
    }

    async fn ensure_load_balancer_deleted(
        &self,
        cluster_name: &str,
        service: &Service,
    ) -> Result<()> {
        self.enter("delete").await?;
        let name = self.get_load_balancer_name(cluster_name, service);
        self.state().balancers.remove(&name);
        Ok(())
    }
}

#[async_trait]
impl Routes for FakeCloud {
    async fn list_routes(&self, cluster_name: &str) -> Result<Vec<Route>> {
        self.enter("list-routes").await?;
        let prefix = format!("{cluster_name}-");
        Ok(self
            .state()
            .routes
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .map(|(_, r)| r.clone())
            .collect())
    }

    async fn create_route(&self, cluster_name: &str, name_hint: &str, route: &Route) -> Result<()> {
        self.enter("create-route").await?;
        let key = route_key(cluster_name, route);
        let mut state = self.state();
        if state.routes.contains_key(&key) {
            return Err(CloudError::other(format!("route {key} already exists")));
        }
        let mut stored = route.clone();
        stored.name = format!("{cluster_name}-{name_hint}");
        state.routes.insert(key, stored);
        Ok(())
    }

    async fn delete_route(&self, cluster_name: &str, route: &Route) -> Result<()> {
        self.enter("delete-route").await?;
        let key = route_key(cluster_name, route);
        match self.state().routes.remove(&key) {
            Some(_) => Ok(()),
            None => Err(CloudError::other(format!("route {key} does not exist"))),
        }
    }
}

#[async_trait]
impl Clusters for FakeCloud {
    async fn list_clusters(&self) -> Result<Vec<String>> {
        self.enter("list-clusters").await?;
        Ok(self.state().clusters.clone())
    }

    async fn master(&self, cluster_name: &str) -> Result<String> {
        self.enter("master").await?;
        Ok(format!("{cluster_name}-master"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use overcast_cloud_provider::k8s_openapi::api::core::v1::NodeSpec;
    use overcast_cloud_provider::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn node(name: &str, provider_id: Option<&str>) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                provider_id: provider_id.map(Into::into),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn instances_are_found_by_provider_id_or_name_and_calls_are_recorded() {
        let cloud = FakeCloud::new();
        cloud.add_instance(
            "n1",
            FakeInstance {
                instance_type: "small".into(),
                ..Default::default()
            },
        );
        let v2 = cloud.instances_v2().unwrap();
        assert!(v2.instance_exists(&node("n1", None)).await.unwrap());
        assert!(
            v2.instance_exists(&node("other", Some("fake://n1")))
                .await
                .unwrap()
        );
        assert!(!v2.instance_exists(&node("n2", None)).await.unwrap());
        let meta = v2
            .instance_metadata(&node("n1", None))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(meta.provider_id, "fake://n1");
        assert_eq!(cloud.count("instance-exists"), 3);
        assert_eq!(cloud.calls().last().unwrap(), "instance-metadata");
        assert_eq!(
            cloud.instances().unwrap().instance_id("n1").await.unwrap(),
            "n1"
        );
    }

    #[tokio::test]
    async fn failures_happen_as_often_as_told() {
        let cloud = FakeCloud::new();
        cloud.add_instance("n1", FakeInstance::default());
        cloud.fail_next("instance-exists", 2, Failure::Error("boom".into()));
        let v2 = cloud.instances_v2().unwrap();
        let n = node("n1", None);
        assert_eq!(
            v2.instance_exists(&n).await.unwrap_err().to_string(),
            "fake instance-exists: boom"
        );
        assert!(v2.instance_exists(&n).await.is_err());
        assert!(v2.instance_exists(&n).await.unwrap());
        cloud.fail_always("instance-exists", Failure::InstanceNotFound);
        assert!(
            v2.instance_exists(&n)
                .await
                .unwrap_err()
                .is_instance_not_found()
        );
        cloud.heal("instance-exists");
        assert!(v2.instance_exists(&n).await.unwrap());
    }

    #[tokio::test]
    async fn balancers_keep_their_address_and_follow_their_hosts() {
        let cloud = FakeCloud::new();
        let lb = cloud.load_balancer().unwrap();
        let svc = Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                uid: Some("1234-5678".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let first = lb
            .ensure_load_balancer("kubernetes", &svc, &[&node("b", None), &node("a", None)])
            .await
            .unwrap();
        let again = lb
            .ensure_load_balancer("kubernetes", &svc, &[])
            .await
            .unwrap();
        assert_eq!(first, again);
        lb.update_load_balancer("kubernetes", &svc, &[&node("c", None)])
            .await
            .unwrap();
        assert_eq!(cloud.balancers()["a12345678"].hosts, vec!["c"]);
        assert_eq!(
            cloud.load_balancer_calls()[0].hosts,
            vec!["a".to_string(), "b".to_string()]
        );
        lb.ensure_load_balancer_deleted("kubernetes", &svc)
            .await
            .unwrap();
        assert!(cloud.balancers().is_empty());
        assert_eq!(
            lb.get_load_balancer("kubernetes", &svc).await.unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn config_files_describe_instances_and_a_template_for_any_other_node() {
        let yaml = b"instances:\n  worker-1:\n    instanceType: big\n    addresses: [{type: InternalIP, address: 10.0.0.1}]\nanyInstance:\n  instanceType: small\n";
        let cloud = FakeCloud::from_config(Some(yaml)).unwrap();
        let v2 = cloud.instances_v2().unwrap();
        let m = v2
            .instance_metadata(&node("worker-1", None))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(m.instance_type, "big");
        assert_eq!(m.node_addresses[0].address, "10.0.0.1");
        let m = v2
            .instance_metadata(&node("node-4711", None))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (m.instance_type.as_str(), m.provider_id.as_str()),
            ("small", "fake://node-4711")
        );
        assert!(
            v2.instance_exists(&node("x", Some("fake://node-9")))
                .await
                .unwrap()
        );

        let err =
            FakeCloud::from_config(Some(b"instances:\n  w:\n    instanceTyp: big\n")).unwrap_err();
        assert!(err.to_string().contains("instanceTyp"), "{err}");
        assert!(FakeCloud::from_config(Some(b"")).is_ok());
    }

    #[tokio::test]
    async fn capabilities_can_be_withheld() {
        let cloud = FakeCloud::with_capabilities(Capabilities {
            instances_v2: false,
            load_balancer: false,
            ..Default::default()
        });
        assert!(cloud.instances_v2().is_none());
        assert!(cloud.load_balancer().is_none());
        assert!(cloud.instances().is_some());
    }
}
