//! The `local` provider, for machines their operators own (bare metal, edge,
//! kind, k3s): Node initialisation and lifecycle from an inventory, VIPs for
//! LoadBalancer Services from address pools, and a built-in L4 load balancer
//! that serves them. The config file is reloaded when it changes.
//!
//! See docs/local-provider.md for the config keys and annotations.

pub mod allocator;
mod balancer;
pub mod config;
pub mod import;
mod instances;
mod metrics;
pub mod pool;
pub mod proxy;
pub mod vip;

use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use overcast_cloud_provider::{
    CloudError, CloudProvider, InstancesV2, LoadBalancer, ProviderContext, Recorder,
    Result as CloudResult,
};

pub use config::{ConfigError, LocalConfig};

use allocator::Allocator;
use proxy::{DataPlane, Settings};

pub const PROVIDER_NAME: &str = "local";

/// The source component of the provider's own Events.
pub const EVENT_SOURCE: &str = "local-load-balancer";

/// The annotations a Service may carry for the local provider.
pub mod annotations {
    /// Comma-separated addresses to use (one per IP family), like
    /// MetalLB's `metallb.universe.tf/loadBalancerIPs`; overrides the
    /// deprecated spec.loadBalancerIP.
    pub const LOAD_BALANCER_IPS: &str = "local.overcast.dev/load-balancer-ips";
    /// The name of the address pool to allocate from.
    pub const ADDRESS_POOL: &str = "local.overcast.dev/address-pool";
    /// A sharing key: Services with the same key may share a VIP when their
    /// ports do not clash.
    pub const ALLOW_SHARED_IP: &str = "local.overcast.dev/allow-shared-ip";
    /// "v2": send a PROXY protocol v2 header to the backends (TCP ports).
    pub const PROXY_PROTOCOL: &str = "local.overcast.dev/proxy-protocol";

    /// The incumbents' annotations of the same meaning, honoured so that a
    /// Service moved from MetalLB or kube-vip keeps what it asked for:
    /// MetalLB's current (`metallb.io/`) and older (`metallb.universe.tf/`)
    /// prefixes, and kube-vip's (kube-vip-cloud-provider writes it with the
    /// address it gave).
    pub const METALLB_LOAD_BALANCER_IPS: &str = "metallb.io/loadBalancerIPs";
    pub const METALLB_LEGACY_LOAD_BALANCER_IPS: &str = "metallb.universe.tf/loadBalancerIPs";
    pub const KUBE_VIP_LOAD_BALANCER_IPS: &str = "kube-vip.io/loadbalancerIPs";
    pub const METALLB_ADDRESS_POOL: &str = "metallb.io/address-pool";
    pub const METALLB_LEGACY_ADDRESS_POOL: &str = "metallb.universe.tf/address-pool";
    pub const METALLB_ALLOW_SHARED_IP: &str = "metallb.io/allow-shared-ip";
    pub const METALLB_LEGACY_ALLOW_SHARED_IP: &str = "metallb.universe.tf/allow-shared-ip";

    /// Where a Service asks for addresses, most specific first.
    pub const ADDRESS_REQUESTS: [&str; 4] = [
        LOAD_BALANCER_IPS,
        METALLB_LOAD_BALANCER_IPS,
        METALLB_LEGACY_LOAD_BALANCER_IPS,
        KUBE_VIP_LOAD_BALANCER_IPS,
    ];
    /// Where a Service names its pool.
    pub const POOL_REQUESTS: [&str; 3] = [
        ADDRESS_POOL,
        METALLB_ADDRESS_POOL,
        METALLB_LEGACY_ADDRESS_POOL,
    ];
    /// Where a Service gives its sharing key.
    pub const SHARING_REQUESTS: [&str; 3] = [
        ALLOW_SHARED_IP,
        METALLB_ALLOW_SHARED_IP,
        METALLB_LEGACY_ALLOW_SHARED_IP,
    ];
}

/// The local cloud: config, allocations, and the data plane (which runs
/// only once [`CloudProvider::initialize`] was called, i.e. while leading).
#[derive(Debug)]
pub struct LocalCloud {
    config: RwLock<Arc<LocalConfig>>,
    allocator: Mutex<Allocator>,
    data_plane: DataPlane,
    /// Set in `initialize`: the Services' `IPAllocated` and `nodeAssigned`
    /// Events (none in preflight, which never initialises).
    events: std::sync::OnceLock<Recorder>,
    /// The Node this process runs on, named in `nodeAssigned`.
    node_name: String,
    /// The Services this process has served since it started or last let
    /// go: each gets one `nodeAssigned`, not one per sync.
    served: Mutex<std::collections::HashSet<String>>,
}

impl LocalCloud {
    /// Builds the provider from its `--cloud-config` file; `None` is an
    /// empty inventory with no pools.
    pub fn from_config(bytes: Option<&[u8]>) -> Result<Self, ConfigError> {
        let config = match bytes {
            Some(b) => LocalConfig::parse(b)?,
            None => LocalConfig::default(),
        };
        Ok(Self::new(config))
    }

    pub fn new(config: LocalConfig) -> Self {
        let data_plane = DataPlane::new(settings(&config), &config.load_balancer.interface);
        Self {
            config: RwLock::new(Arc::new(config)),
            allocator: Mutex::new(Allocator::default()),
            data_plane,
            events: std::sync::OnceLock::new(),
            node_name: node_name(),
            served: Mutex::new(Default::default()),
        }
    }

    pub fn config(&self) -> Arc<LocalConfig> {
        Arc::clone(&self.config.read().expect("config lock"))
    }

    pub fn data_plane(&self) -> &DataPlane {
        &self.data_plane
    }

    /// Sets the pool gauges from the config and the allocations now; a
    /// pool no longer configured drops out.
    pub(crate) fn report_pools(&self) {
        let config = self.config();
        let allocator = self.allocator.lock().expect("allocator lock");
        metrics::POOL_SIZE.reset();
        metrics::POOL_IN_USE.reset();
        for pool in &config.load_balancer.pools {
            let used = allocator.in_use().filter(|ip| pool.contains(*ip)).count();
            metrics::POOL_SIZE
                .with_label_values(&[pool.name.as_str()])
                .set(pool.size());
            metrics::POOL_IN_USE
                .with_label_values(&[pool.name.as_str()])
                .set(used as f64);
        }
    }
}

/// The chart sets `NODE_NAME` from the Pod's `spec.nodeName`; elsewhere (a
/// host's service) the hostname, which kubelets register by default.
fn node_name() -> String {
    std::env::var("NODE_NAME")
        .ok()
        .filter(|n| !n.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_lowercase())
        })
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

fn settings(config: &LocalConfig) -> Settings {
    Settings {
        health_check: config.load_balancer.health_check,
        udp_idle_timeout: config.load_balancer.udp_idle_timeout,
        vip_lifetime: config.load_balancer.vip_lifetime,
        garp_interval: config.load_balancer.garp_interval,
        tcp_idle_timeout: config.load_balancer.tcp_idle_timeout,
        max_connections: config.load_balancer.max_connections,
        max_udp_flows: config.load_balancer.max_udp_flows,
    }
}

#[async_trait]
impl CloudProvider for LocalCloud {
    fn provider_name(&self) -> &str {
        PROVIDER_NAME
    }

    async fn reload_config(&self, bytes: &[u8]) -> CloudResult<()> {
        let new = LocalConfig::parse(bytes).map_err(CloudError::from_err)?;
        self.data_plane
            .reconfigure(settings(&new), &new.load_balancer.interface)
            .await
            .map_err(CloudError::from_err)?;
        let mut config = self.config.write().expect("config lock");
        tracing::info!(
            instances = new.instances.len(),
            pools = new.load_balancer.pools.len(),
            "local cloud config applied"
        );
        *config = Arc::new(new);
        drop(config);
        self.report_pools();
        Ok(())
    }

    async fn initialize(&self, ctx: &ProviderContext) -> CloudResult<()> {
        metrics::register(ctx.metrics()).map_err(CloudError::from_err)?;
        let _ = self.events.set(ctx.event_recorder(EVENT_SOURCE));
        Ok(())
    }

    async fn shutdown(&self) {
        self.data_plane.shutdown().await;
        self.served.lock().expect("served lock").clear();
    }

    fn instances_v2(&self) -> Option<&dyn InstancesV2> {
        Some(self)
    }

    fn load_balancer(&self) -> Option<&dyn LoadBalancer> {
        Some(self)
    }
}
