//! A real cluster for end-to-end tests: the [`ControlPlane`] plus
//! kube-scheduler and kube-controller-manager (no cloud provider, as a cluster
//! with an external CCM runs it), and nodes that each run their own containerd,
//! a kubelet with `--cloud-provider=external`, and kube-proxy, in a network
//! namespace of their own joined to a bridge on the host.
//!
//! ```no_run
//! # async fn example() -> Result<(), overcast_testenv::Error> {
//! let cluster = overcast_testenv::Cluster::start(2).await?;
//! let client = cluster.plane().client().await?;
//! // Nodes are registered and Ready, tainted uninitialized until a CCM runs.
//! # Ok(()) }
//! ```
//!
//! Everything stays on this machine: the nodes (10.250.k.10+i) and the host
//! (10.250.k.1, where the apiserver listens) meet on a bridge; nodes have no
//! default route and the host must not forward. Pods get no nameserver and
//! images are imported, never pulled. All of it is stopped and removed on drop;
//! what a killed test left behind is removed by the next cluster to start (see
//! the slot module).

mod cgroups;
mod images;
mod net;
mod node;
mod registry;
mod slot;
pub(crate) mod sys;

pub use images::{ECHO_SERVER, PAUSE};
pub use registry::RegistryOptions;

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;

use crate::process::Supervised;
use crate::{ControlPlane, Error, StartOptions, binary};
use node::{Binaries, NodeSpec, RunningNode};
use slot::Slot;

/// How long nodes may take to register and become Ready. About 3 s each on
/// this machine; the margin is for a loaded CI machine.
const NODES_READY_TIMEOUT: Duration = Duration::from_secs(120);

/// The network namespace standing for a client outside the cluster.
const OUTSIDE: &str = "out";

/// One node of [`ClusterOptions`].
#[derive(Debug, Clone)]
pub struct NodeOptions {
    pub name: String,
    /// More kubelet flags, e.g. `--image-credential-provider-config`.
    pub kubelet_args: Vec<String>,
}

/// What [`Cluster::start_with`] builds.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// The nodes; node `i` (1-based) gets InternalIP 10.250.k.(10+i).
    pub nodes: Vec<NodeOptions>,
    /// A password-protected registry on the host's bridge address that every
    /// node may pull from over HTTP ([`Cluster::push_image`]).
    pub registry: Option<RegistryOptions>,
    /// kube-controller-manager's `--node-monitor-grace-period`: how long a
    /// silent kubelet's Node stays Ready. Upstream's default is 50 s; tests
    /// that stop a kubelet want less.
    pub node_monitor_grace_period: Duration,
    /// Names each node after its InternalIP, in place of its
    /// [`NodeOptions::name`]: for a cloud that names machines by address
    /// (EC2's private DNS names, `ip-10-250-3-11.ec2.internal`), whose
    /// addresses are known only once the cluster has its slot.
    pub name_by_address: Option<fn(Ipv4Addr) -> String>,
    /// More kube-apiserver flags (an audit policy, say).
    pub apiserver_args: Vec<String>,
}

impl ClusterOptions {
    /// `count` nodes named `node-1`…`node-N`.
    pub fn nodes(count: usize) -> ClusterOptions {
        ClusterOptions {
            nodes: (1..=count)
                .map(|i| NodeOptions {
                    name: format!("node-{i}"),
                    kubelet_args: Vec::new(),
                })
                .collect(),
            registry: None,
            node_monitor_grace_period: Duration::from_secs(20),
            name_by_address: None,
            apiserver_args: Vec::new(),
        }
    }
}

/// A running cluster; stopped and removed when dropped.
#[derive(Debug)]
pub struct Cluster {
    plane: ControlPlane,
    names: Vec<String>,
    addressing: net::Addressing,
    running: Mutex<Option<Running>>,
}

#[derive(Debug)]
struct Running {
    // Stopped in this order by `Cluster::stop`.
    nodes: Vec<RunningNode>,
    registry: Option<registry::Registry>,
    controller_manager: Supervised,
    scheduler: Supervised,
    slot: Slot,
}

impl Cluster {
    /// `count` nodes, `node-1`…`node-N`, from [`crate::bin_dir`].
    pub async fn start(count: usize) -> Result<Cluster, Error> {
        Self::start_with(&ClusterOptions::nodes(count)).await
    }

    pub async fn start_with(options: &ClusterOptions) -> Result<Cluster, Error> {
        let bin_dir = crate::bin_dir();
        let scheduler_bin = binary(&bin_dir, "kube-scheduler")?;
        let controller_manager_bin = binary(&bin_dir, "kube-controller-manager")?;
        let bins = Binaries {
            kubelet: binary(&bin_dir, "kubelet")?,
            kube_proxy: binary(&bin_dir, "kube-proxy")?,
            images: images::archives(&bin_dir)?,
        };
        for tool in ["containerd", "ctr", "runc", "ip", "iptables"] {
            which(tool)?;
        }
        net::check_host_does_not_forward()?;

        let slot = tokio::task::spawn_blocking(Slot::take)
            .await
            .map_err(|e| Error::io("taking a cluster slot")(std::io::Error::other(e)))??;
        let a = slot.addressing;
        net::create_bridge(a)?;
        let plane = ControlPlane::start_with(
            &bin_dir,
            &StartOptions {
                bind_address: Some(a.host()),
                service_accounts: true,
                apiserver_args: options.apiserver_args.clone(),
                ..StartOptions::default()
            },
        )
        .await?;
        let kubeconfig = plane.kubeconfig_path().to_path_buf();
        let scheduler = start_scheduler(&plane, &scheduler_bin)?;
        let controller_manager =
            start_controller_manager(&plane, &controller_manager_bin, options)?;

        let registry = match &options.registry {
            Some(r) => Some(registry::Registry::start(
                a.host(),
                r,
                &slot.dir.join("registry"),
            )?),
            None => None,
        };
        let registry_hosts: Vec<(String, String)> = registry
            .iter()
            .map(|r| (r.host.clone(), r.hosts_toml()))
            .collect();
        // A client's place outside the cluster: on the bridge, not a node.
        net::create_attached_netns(a, OUTSIDE, a.outside())?;
        let mut nodes = Vec::new();
        let count = options.nodes.len();
        let names: Vec<String> = options
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| match options.name_by_address {
                Some(name) => name(a.node(i + 1)),
                None => n.name.clone(),
            })
            .collect();
        for (i, node) in options.nodes.iter().enumerate() {
            let index = i + 1;
            net::create_attached_netns(a, &format!("n{index}"), a.node(index))?;
            net::route_node(a, index, count)?;
            let spec = NodeSpec {
                index,
                name: names[i].clone(),
                kubelet_args: node.kubelet_args.clone(),
                registry_hosts: registry_hosts.clone(),
                address: a.node(index),
                pod_subnet: a.pod_subnet(index),
            };
            let (bins, slot_dir, kubeconfig) = (bins.clone(), slot.dir.clone(), kubeconfig.clone());
            let node = tokio::task::spawn_blocking(move || {
                RunningNode::start(a, spec, &slot_dir, &kubeconfig, &bins)
            });
            nodes.push(
                node.await
                    .map_err(|e| Error::io("starting a node")(std::io::Error::other(e)))??,
            );
        }
        let cluster = Cluster {
            plane,
            names,
            addressing: a,
            running: Mutex::new(Some(Running {
                nodes,
                registry,
                controller_manager,
                scheduler,
                slot,
            })),
        };
        cluster.wait_nodes_ready().await?;
        Ok(cluster)
    }

    async fn wait_nodes_ready(&self) -> Result<(), Error> {
        let client = self.plane.client().await?;
        let api: kube::Api<Node> = kube::Api::all(client);
        let deadline = Instant::now() + NODES_READY_TIMEOUT;
        loop {
            self.check_alive()?;
            let mut waiting = Vec::new();
            for name in &self.names {
                let ready = api
                    .get_opt(name)
                    .await
                    .ok()
                    .flatten()
                    .is_some_and(|n| is_ready(&n));
                if !ready {
                    waiting.push(name.as_str());
                }
            }
            if waiting.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Io {
                    what: format!("waiting for nodes {} to be Ready", waiting.join(", ")),
                    source: std::io::Error::other(format!(
                        "not Ready after {NODES_READY_TIMEOUT:?}; logs are in {}",
                        self.dir().display()
                    )),
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Fails with the log of the first component that has exited.
    pub fn check_alive(&self) -> Result<(), Error> {
        let mut guard = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(running) = guard.as_mut() {
            running.scheduler.check_running()?;
            running.controller_manager.check_running()?;
            for node in &mut running.nodes {
                node.check_alive()?;
            }
        }
        Ok(())
    }

    /// The control plane: clients, kubectl, the kubeconfig.
    pub fn plane(&self) -> &ControlPlane {
        &self.plane
    }

    /// The nodes' names, in order.
    pub fn node_names(&self) -> &[String] {
        &self.names
    }

    fn index(&self, node: &str) -> usize {
        1 + self
            .names
            .iter()
            .position(|n| n == node)
            .unwrap_or_else(|| panic!("no node {node} in this cluster"))
    }

    /// The address node `node`'s kubelet was given with `--node-ip`.
    pub fn node_ip(&self, node: &str) -> Ipv4Addr {
        self.addressing.node(self.index(node))
    }

    /// The host's address on the cluster's bridge (the apiserver's).
    pub fn host_ip(&self) -> Ipv4Addr {
        self.addressing.host()
    }

    /// The bridge the nodes and the host share: where a load balancer on
    /// the host adds its VIPs.
    pub fn bridge(&self) -> String {
        self.addressing.bridge()
    }

    /// Addresses on the bridge's subnet that nothing uses, for VIP pools.
    pub fn free_addresses(&self) -> (Ipv4Addr, Ipv4Addr) {
        self.addressing.vip_range()
    }

    /// A command run as a client outside the cluster: in a network namespace
    /// on the bridge at [`Cluster::outside_ip`], that is neither a node nor the host.
    pub fn from_outside(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.addressing.netns(OUTSIDE), program]);
        cmd
    }

    /// A command run on node `node`'s host network (its network namespace,
    /// where its interface is `eth0`), as a `hostNetwork` Pod of that node runs.
    pub fn on_node(&self, node: &str, program: &str) -> Command {
        let netns = self.addressing.netns(&format!("n{}", self.index(node)));
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &netns, program]);
        cmd
    }

    /// The outside client's address.
    pub fn outside_ip(&self) -> Ipv4Addr {
        self.addressing.outside()
    }

    /// Stops node `node`'s kubelet (its containers keep running), as a
    /// machine that stopped answering: the Node goes NotReady after the grace
    /// period.
    pub fn stop_kubelet(&self, node: &str) {
        let index = self.index(node);
        let mut guard = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(running) = guard.as_mut() {
            running.nodes[index - 1].stop_kubelet();
        }
    }

    /// Restarts node `node`'s kubelet (stopped, then started with the same
    /// flags and directories); its Pods keep running meanwhile.
    pub fn restart_kubelet(&self, node: &str) -> Result<(), Error> {
        let index = self.index(node);
        let mut guard = self.running.lock().unwrap_or_else(|p| p.into_inner());
        match guard.as_mut() {
            Some(running) => running.nodes[index - 1].restart_kubelet(),
            None => Ok(()),
        }
    }

    /// Imports an OCI image archive (e.g. one made by testenv/images.sh) into
    /// every node's containerd, so Pods run it with `imagePullPolicy: Never`.
    pub fn import_image(&self, archive: &Path) -> Result<(), Error> {
        let guard = self.running.lock().unwrap_or_else(|p| p.into_inner());
        for node in &guard.as_ref().expect("cluster stopped").nodes {
            node.import(archive)?;
        }
        Ok(())
    }

    /// Pushes the image `source` (one every node has, e.g. [`ECHO_SERVER`])
    /// to the registry as `<registry>/<repository>:<tag>`, with the
    /// registry's credentials, from the first node's containerd, and removes
    /// that name there again: no node has it until it pulls it. Returns the
    /// pushed reference.
    pub fn push_image(&self, source: &str, repository_and_tag: &str) -> Result<String, Error> {
        let guard = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let running = guard.as_ref().expect("cluster stopped");
        let registry = running.registry.as_ref().ok_or_else(|| Error::Io {
            what: "pushing an image".into(),
            source: std::io::Error::other("the cluster was started without a registry"),
        })?;
        let target = format!("{}/{repository_and_tag}", registry.host);
        let user = format!(
            "{}:{}",
            registry.options.username, registry.options.password
        );
        let steps: [&[&str]; 3] = [
            &["images", "tag", source, &target],
            &["images", "push", "--plain-http", "--user", &user, &target],
            &["images", "rm", &target],
        ];
        for args in steps {
            net::run_checked(
                running.nodes[0].ctr().args(args),
                &format!("ctr {}", args[..2].join(" ")),
            )?;
        }
        Ok(target)
    }

    /// The directory holding the nodes' configuration and logs.
    pub fn dir(&self) -> std::path::PathBuf {
        let guard = self.running.lock().unwrap_or_else(|p| p.into_inner());
        guard
            .as_ref()
            .map(|r| r.slot.dir.clone())
            .unwrap_or_default()
    }

    /// Stops everything and removes what it made. Idempotent; also on drop.
    pub fn stop(&self) {
        let running = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(Running {
            nodes,
            registry,
            controller_manager,
            scheduler,
            slot,
        }) = running
        {
            drop(nodes);
            drop(registry);
            drop(controller_manager);
            drop(scheduler);
            self.plane.stop();
            drop(slot);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Ready as the scheduler sees it: the kubelet reports Ready and the node
/// lifecycle controller has lifted the `not-ready`/`unreachable` taints it put
/// on while the kubelet was starting (it does so one monitor period later, so a
/// Node can be Ready and still tainted for a moment).
fn is_ready(node: &Node) -> bool {
    let condition_ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let lifecycle_tainted = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|taints| {
            taints.iter().any(|t| {
                t.key == "node.kubernetes.io/not-ready" || t.key == "node.kubernetes.io/unreachable"
            })
        });
    condition_ready && !lifecycle_tainted
}

fn which(tool: &'static str) -> Result<(), Error> {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
        .unwrap_or(false)
        || Path::new("/usr/sbin").join(tool).is_file()
        || Path::new("/sbin").join(tool).is_file();
    if found {
        Ok(())
    } else {
        Err(Error::Io {
            what: format!("looking for {tool}"),
            source: std::io::Error::other(
                "not installed: the test cluster's nodes need Debian's containerd, runc, iproute2 and \
                 iptables (`make node-packages`, which `make test` runs, installs them)",
            ),
        })
    }
}

fn start_scheduler(plane: &ControlPlane, bin: &Path) -> Result<Supervised, Error> {
    let mut cmd = Command::new(bin);
    cmd.args([
        format!("--kubeconfig={}", plane.kubeconfig_path().display()),
        "--leader-elect=false".to_string(),
        "--secure-port=0".to_string(),
    ]);
    Supervised::spawn(
        "kube-scheduler",
        cmd,
        &plane.dir().join("kube-scheduler.log"),
    )
}

fn start_controller_manager(
    plane: &ControlPlane,
    bin: &Path,
    options: &ClusterOptions,
) -> Result<Supervised, Error> {
    let mut cmd = Command::new(bin);
    cmd.args([
        format!("--kubeconfig={}", plane.kubeconfig_path().display()),
        "--leader-elect=false".to_string(),
        "--secure-port=0".to_string(),
        // The kube-root-ca.crt ConfigMap every Pod mounts is published from it.
        format!("--root-ca-file={}", plane.ca_path().display()),
        format!(
            "--service-account-private-key-file={}",
            plane.service_account_key_path().display()
        ),
        "--use-service-account-credentials=false".to_string(),
        format!(
            "--node-monitor-grace-period={}s",
            options.node_monitor_grace_period.as_secs()
        ),
    ]);
    Supervised::spawn(
        "kube-controller-manager",
        cmd,
        &plane.dir().join("kube-controller-manager.log"),
    )
}
