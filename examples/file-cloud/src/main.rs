//! filecloud-ccm: a cloud-controller-manager for "filecloud", a made-up
//! cloud whose API is a directory, written as a vendor would: against the
//! published API of overcast-ccm and overcast-cloud-provider only.
//!
//! The cloud config (`--cloud-config`) is JSON:
//! `{"state": "/var/lib/filecloud", "addresses": ["192.0.2.10", "192.0.2.11"]}`.
//! - `<state>/machines/<node>.json` is a machine:
//!   `{"type": "f1.small", "zone": "zone-a", "region": "r1", "ip": "10.0.0.1"}`;
//!   a Node without one is gone from the cloud (and deleted).
//! - `<state>/balancers/<name>.json` is a load balancer the CCM writes: its
//!   address (the first of `addresses` no other balancer has), ports and
//!   backends.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use overcast_cloud_provider::k8s_openapi::api::core::v1::{
    LoadBalancerIngress, LoadBalancerStatus, Node, NodeAddress, Service,
};
use overcast_cloud_provider::{
    CloudError, CloudProvider, InstanceMetadata, InstancesV2, LoadBalancer, Result,
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    state: PathBuf,
    /// The addresses balancers get, in order.
    addresses: Vec<Ipv4Addr>,
}

#[derive(Debug, Deserialize)]
struct Machine {
    r#type: String,
    zone: String,
    region: String,
    ip: Ipv4Addr,
}

#[derive(Debug, Serialize, Deserialize)]
struct Balancer {
    address: Ipv4Addr,
    /// `protocol/port -> nodePort`.
    ports: Vec<String>,
    /// The Nodes' InternalIPs, sorted.
    backends: BTreeSet<Ipv4Addr>,
}

#[derive(Debug)]
struct FileCloud {
    config: Config,
    /// Held across read-allocate-write, so two syncs never take one address.
    allocating: Mutex<()>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CloudError + '_ {
    move |e| CloudError::other(format!("{}: {e}", path.display()))
}

/// The JSON file at `path`, or `None` when there is none.
fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| CloudError::other(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path)(e)),
    }
}

impl FileCloud {
    fn from_config(config: Option<&[u8]>) -> Result<Self> {
        let config: Config = serde_json::from_slice(config.unwrap_or_default())
            .map_err(|e| CloudError::other(format!("cloud config: {e}")))?;
        for dir in ["machines", "balancers"] {
            let dir = config.state.join(dir);
            std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        }
        Ok(Self {
            config,
            allocating: Mutex::new(()),
        })
    }

    fn machine(&self, node: &Node) -> Result<Option<Machine>> {
        let name = node.metadata.name.as_deref().unwrap_or_default();
        read_json(&self.config.state.join(format!("machines/{name}.json")))
    }

    fn balancer_path(&self, cluster: &str, svc: &Service) -> PathBuf {
        let name = self.get_load_balancer_name(cluster, svc);
        self.config.state.join(format!("balancers/{name}.json"))
    }

    /// Writes the balancer: its address kept, or the first free one.
    fn write(&self, cluster: &str, svc: &Service, nodes: &[&Node]) -> Result<Ipv4Addr> {
        let _held = self.allocating.lock().unwrap_or_else(|p| p.into_inner());
        let path = self.balancer_path(cluster, svc);
        let address = match read_json::<Balancer>(&path)? {
            Some(existing) => existing.address,
            None => {
                let dir = self.config.state.join("balancers");
                let mut taken = BTreeSet::new();
                for entry in std::fs::read_dir(&dir).map_err(io_err(&dir))? {
                    let entry = entry.map_err(io_err(&dir))?;
                    taken.extend(read_json::<Balancer>(&entry.path())?.map(|b| b.address));
                }
                let free = self.config.addresses.iter().find(|a| !taken.contains(a));
                *free.ok_or_else(|| CloudError::other("no free address: all are in use"))?
            }
        };
        let ports = svc.spec.iter().flat_map(|s| s.ports.iter().flatten());
        let balancer = Balancer {
            address,
            ports: ports
                .map(|p| {
                    let protocol = p.protocol.as_deref().unwrap_or("TCP");
                    format!("{protocol}/{} -> {}", p.port, p.node_port.unwrap_or(0))
                })
                .collect(),
            backends: nodes
                .iter()
                .flat_map(|n| n.status.iter().flat_map(|s| s.addresses.iter().flatten()))
                .filter(|a| a.type_ == "InternalIP")
                .filter_map(|a| a.address.parse().ok())
                .collect(),
        };
        // Written whole, then renamed: a crash never leaves half a file.
        let partial = path.with_extension("partial");
        let json = serde_json::to_vec_pretty(&balancer).expect("a balancer serialises");
        std::fs::write(&partial, json).map_err(io_err(&partial))?;
        std::fs::rename(&partial, &path).map_err(io_err(&path))?;
        Ok(address)
    }
}

fn status(address: Ipv4Addr) -> LoadBalancerStatus {
    let ip = Some(address.to_string());
    LoadBalancerStatus {
        ingress: Some(vec![LoadBalancerIngress {
            ip,
            ..Default::default()
        }]),
    }
}

impl CloudProvider for FileCloud {
    fn provider_name(&self) -> &str {
        "filecloud"
    }
    fn instances_v2(&self) -> Option<&dyn InstancesV2> {
        Some(self)
    }
    fn load_balancer(&self) -> Option<&dyn LoadBalancer> {
        Some(self)
    }
}

#[async_trait]
impl InstancesV2 for FileCloud {
    async fn instance_exists(&self, node: &Node) -> Result<bool> {
        Ok(self.machine(node)?.is_some())
    }
    async fn instance_shutdown(&self, _node: &Node) -> Result<bool> {
        Ok(false)
    }
    async fn instance_metadata(&self, node: &Node) -> Result<Option<InstanceMetadata>> {
        let name = node.metadata.name.clone().unwrap_or_default();
        let address = |type_: &str, address: String| NodeAddress {
            type_: type_.into(),
            address,
        };
        Ok(self.machine(node)?.map(|m| InstanceMetadata {
            provider_id: format!("filecloud://{name}"),
            instance_type: m.r#type,
            node_addresses: vec![
                address("InternalIP", m.ip.to_string()),
                address("Hostname", name),
            ],
            zone: m.zone,
            region: m.region,
            ..Default::default()
        }))
    }
}

#[async_trait]
impl LoadBalancer for FileCloud {
    async fn get_load_balancer(
        &self,
        cluster: &str,
        svc: &Service,
    ) -> Result<Option<LoadBalancerStatus>> {
        let balancer = read_json::<Balancer>(&self.balancer_path(cluster, svc))?;
        Ok(balancer.map(|b| status(b.address)))
    }
    async fn ensure_load_balancer(
        &self,
        cluster: &str,
        svc: &Service,
        nodes: &[&Node],
    ) -> Result<LoadBalancerStatus> {
        self.write(cluster, svc, nodes).map(status)
    }
    async fn update_load_balancer(
        &self,
        cluster: &str,
        svc: &Service,
        nodes: &[&Node],
    ) -> Result<()> {
        self.write(cluster, svc, nodes).map(|_| ())
    }
    async fn ensure_load_balancer_deleted(&self, cluster: &str, svc: &Service) -> Result<()> {
        let path = self.balancer_path(cluster, svc);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err(&path)(e)),
            _ => Ok(()),
        }
    }
}

fn main() -> ExitCode {
    overcast_ccm::Ccm::builder()
        .name("filecloud-ccm")
        .version(env!("CARGO_PKG_VERSION"))
        .provider("filecloud", |config| {
            Ok(Arc::new(FileCloud::from_config(config)?) as Arc<dyn CloudProvider>)
        })
        .run()
}
