//! overcast-ccm --cloud-provider=local against the real apiserver: the
//! inventory drives Nodes, pools give Services VIPs, and the built-in proxy
//! carries real traffic to backends listening on the Nodes' NodePorts.
//!
//! Each test uses its own 127.x.y.0/24 for Node and VIP addresses (all of
//! 127/8 is loopback on Linux), so tests running at once never collide.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::{Event, Namespace, Node, Service, ServicePort, ServiceSpec};
use kube::Api;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use overcast_cloud_provider::names::{
    LABEL_INSTANCE_TYPE, LABEL_REGION, LABEL_ZONE, TAINT_SHUTDOWN,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

const SHARED: &str = "local.overcast.dev/allow-shared-ip";
const IPS: &str = "local.overcast.dev/load-balancer-ips";
const POOL: &str = "local.overcast.dev/address-pool";

async fn env(config: &str) -> CloudEnv {
    CloudEnv::start("local", "local.yaml", config).await
}

impl CloudEnv {
    /// Replaces the config file atomically, as a ConfigMap update does.
    fn write_config(&self, text: &str) {
        let tmp = self.dir.path().join("local.yaml.new");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &self.config).unwrap();
    }

    fn services(&self, namespace: &str) -> Api<Service> {
        Api::namespaced(self.client.clone(), namespace)
    }

    async fn namespace(&self, name: &str) {
        Api::<Namespace>::all(self.client.clone())
            .create(
                &PostParams::default(),
                &Namespace {
                    metadata: ObjectMeta {
                        name: Some(name.into()),
                        ..Default::default()
                    },
                    ..Default::default()
                },
            )
            .await
            .unwrap();
    }

    async fn create_service(
        &self,
        namespace: &str,
        name: &str,
        annotations: &[(&str, &str)],
        ports: &[(&str, i32)],
    ) -> Service {
        let svc = Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect::<BTreeMap<_, _>>(),
                ),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                type_: Some("LoadBalancer".into()),
                selector: Some([("app".to_string(), name.to_string())].into()),
                ports: Some(
                    ports
                        .iter()
                        .enumerate()
                        .map(|(i, (protocol, port))| ServicePort {
                            name: Some(format!("p{i}")),
                            protocol: Some(protocol.to_string()),
                            port: *port,
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.services(namespace)
            .create(&PostParams::default(), &svc)
            .await
            .unwrap()
    }

    /// The Service's first ingress IP, once the CCM has written one.
    async fn vip(&self, namespace: &str, name: &str) -> String {
        let api = self.services(namespace);
        eventually(&format!("{namespace}/{name} gets a VIP"), SOON, || {
            let api = api.clone();
            async move {
                let svc = api.get(name).await.ok()?;
                let ingress = svc.status?.load_balancer?.ingress?;
                ingress.first()?.ip.clone()
            }
        })
        .await
    }

    /// The Service's Events with `reason` now, as (message, count).
    async fn events_now(&self, namespace: &str, name: &str, reason: &str) -> Vec<(String, i32)> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), namespace);
        api.list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| {
                e.reason.as_deref() == Some(reason)
                    && e.involved_object.name.as_deref() == Some(name)
            })
            .map(|e| (e.message.unwrap_or_default(), e.count.unwrap_or(1)))
            .collect()
    }

    /// The message of the Service's first Event with `reason`.
    async fn event(&self, namespace: &str, name: &str, reason: &str) -> String {
        let api: Api<Event> = Api::namespaced(self.client.clone(), namespace);
        eventually(
            &format!("{reason} Event for {namespace}/{name}"),
            SOON,
            || {
                let api = api.clone();
                async move {
                    api.list(&Default::default())
                        .await
                        .ok()?
                        .items
                        .into_iter()
                        .find(|e| {
                            e.reason.as_deref() == Some(reason)
                                && e.involved_object.name.as_deref() == Some(name)
                        })
                        .and_then(|e| e.message)
                }
            },
        )
        .await
    }

    /// Registers node-1…node-`count` as kubelets do and waits until the
    /// CCM has initialised them.
    async fn register_nodes(&self, count: usize) {
        for i in 1..=count {
            create_tainted_node(&self.client, &format!("node-{i}")).await;
        }
        for i in 1..=count {
            initialised(&self.client, &format!("node-{i}")).await;
        }
    }

    async fn node_exists(&self, name: &str) -> bool {
        Api::<Node>::all(self.client.clone())
            .get_opt(name)
            .await
            .unwrap()
            .is_some()
    }
}

/// An inventory of `machines` nodes on `<net>.1`…, a pool on
/// `<net>.100-110`, and health checks every `interval` (one probe decides).
fn loopback_cluster(net: &str, machines: usize, interval: &str) -> String {
    let mut config = String::from("instances:\n");
    for i in 1..=machines {
        config += &format!(
            "  - name: node-{i}\n    addresses: [{{type: InternalIP, address: {net}.{i}}}]\n"
        );
    }
    config + &format!(
        "loadBalancer:
  pools: [{{name: default, addresses: [{net}.100-{net}.110]}}]
  healthCheck: {{interval: {interval}, timeout: {interval}, healthyThreshold: 1, unhealthyThreshold: 1}}
"
    )
}

fn has_taint(node: &Node, key: &str) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|t| t.iter().any(|t| t.key == key))
}

#[tokio::test]
async fn the_inventory_drives_nodes_and_edits_apply_without_a_restart() {
    let inventory = |worker_2_state: &str, with_worker_1: bool| {
        let worker_1 = "  - name: worker-1
    instanceType: bm.large
    region: eu-home
    zone: rack-1
    labels: {example.com/rack: r1}
    addresses:
      - {type: InternalIP, address: 127.0.11.1}
      - {type: Hostname, address: worker-1.lan}
";
        format!(
            "instances:\n{}  - name: worker-2\n    providerID: local://machine-2\n    state: {worker_2_state}\n",
            if with_worker_1 { worker_1 } else { "" }
        )
    };
    let env = env(&inventory("running", true)).await;
    let ccm = env.ccm(&[]);
    create_tainted_node(&env.client, "worker-1").await;
    create_tainted_node(&env.client, "worker-2").await;
    create_tainted_node(&env.client, "stranger").await;

    let n = initialised(&env.client, "worker-1").await;
    assert_eq!(
        n.spec.as_ref().unwrap().provider_id.as_deref(),
        Some("local://worker-1")
    );
    let labels = n.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get(LABEL_INSTANCE_TYPE).map(String::as_str),
        Some("bm.large")
    );
    assert_eq!(labels.get(LABEL_ZONE).map(String::as_str), Some("rack-1"));
    assert_eq!(
        labels.get(LABEL_REGION).map(String::as_str),
        Some("eu-home")
    );
    assert_eq!(
        labels.get("example.com/rack").map(String::as_str),
        Some("r1")
    );
    let addresses = node_addresses(&n);
    assert!(
        addresses.contains(&("InternalIP".into(), "127.0.11.1".into())),
        "{addresses:?}"
    );
    let n2 = initialised(&env.client, "worker-2").await;
    assert_eq!(
        n2.spec.unwrap().provider_id.as_deref(),
        Some("local://machine-2")
    );
    // A machine not in the inventory stays uninitialised (and, NotReady,
    // is deleted as a machine that does not exist).
    eventually("the unlisted Node is deleted", SOON, || async {
        (!env.node_exists("stranger").await).then_some(())
    })
    .await;

    // A bad edit is refused with the field named; the last good config stays.
    env.write_config("instances:\n  - name: worker-1\n    state: paused\n");
    eventually("the bad edit is logged", SOON, || async {
        ccm.log_text()
            .contains("instances[0].state: \"paused\" is not running or stopped")
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(env.node_exists("worker-1").await && env.node_exists("worker-2").await);

    // stopped → the shutdown taint.
    env.write_config(&inventory("stopped", true));
    eventually("worker-2 gets the shutdown taint", SOON, || async {
        let n = Api::<Node>::all(env.client.clone())
            .get("worker-2")
            .await
            .ok()?;
        has_taint(&n, TAINT_SHUTDOWN).then_some(())
    })
    .await;

    // Removed from the inventory → the NotReady Node is deleted.
    env.write_config(&inventory("stopped", false));
    eventually("worker-1 is deleted", SOON, || async {
        (!env.node_exists("worker-1").await).then_some(())
    })
    .await;
    assert!(
        env.node_exists("worker-2").await,
        "a stopped machine still exists"
    );
    drop(ccm);
}

const POOLS: &str = "loadBalancer:
  pools:
    - name: team
      addresses: [127.0.12.200-127.0.12.201]
      namespaces: [team]
    - name: default
      addresses: [127.0.12.0/30]
";

#[tokio::test]
async fn vips_are_allocated_shared_released_and_survive_a_restart() {
    let env = env(POOLS).await;
    env.namespace("team").await;
    let mut ccm = env.ccm_with_env(&[], &[("NODE_NAME", "machine-7")]);

    env.create_service("default", "a", &[], &[("TCP", 80)])
        .await;
    let a = env.vip("default", "a").await;
    assert_eq!(a, "127.0.12.0");
    // Namespace pools: "team" gets its own pool first.
    env.create_service("team", "t", &[], &[("TCP", 80)]).await;
    assert_eq!(env.vip("team", "t").await, "127.0.12.200");
    // Which pool and which node serve it, as Events on the Service (MetalLB's
    // IPAllocated and nodeAssigned).
    assert_eq!(
        env.event("team", "t", "IPAllocated").await,
        "Assigned IP [\"127.0.12.200\"] from address pool \"team\""
    );
    let served = env.event("team", "t", "nodeAssigned").await;
    assert!(
        served.starts_with("serving from node \"machine-7\""),
        "{served}"
    );
    // A pool the namespace may not use.
    env.create_service("default", "sneaky", &[(POOL, "team")], &[("TCP", 80)])
        .await;
    let msg = env
        .event("default", "sneaky", "SyncLoadBalancerFailed")
        .await;
    assert!(
        msg.contains("address pool \"team\" does not allow namespace \"default\""),
        "{msg}"
    );
    // An explicit address.
    env.create_service("default", "pinned", &[(IPS, "127.0.12.3")], &[("TCP", 80)])
        .await;
    assert_eq!(env.vip("default", "pinned").await, "127.0.12.3");
    // Sharing: same key, different ports → one address; a clash → another.
    env.create_service("default", "web-http", &[(SHARED, "web")], &[("TCP", 8080)])
        .await;
    let shared = env.vip("default", "web-http").await;
    env.create_service("default", "web-dns", &[(SHARED, "web")], &[("UDP", 8053)])
        .await;
    assert_eq!(env.vip("default", "web-dns").await, shared);
    assert_ne!(shared, a);
    // The pool (4 addresses: a, pinned, shared, one left) runs out.
    env.create_service("default", "b", &[], &[("TCP", 80)])
        .await;
    let b = env.vip("default", "b").await;
    env.create_service("default", "c", &[], &[("TCP", 80)])
        .await;
    let msg = env.event("default", "c", "SyncLoadBalancerFailed").await;
    assert!(msg.contains("no free IPv4 address"), "{msg}");
    let taken: BTreeSet<String> =
        [a.clone(), b.clone(), shared.clone(), "127.0.12.3".into()].into();
    assert_eq!(taken.len(), 4, "every VIP is distinct: {taken:?}");
    // The pools' gauges, as MetalLB's metallb_allocator_addresses_*.
    let metrics = ccm.get("/metrics").unwrap().1;
    for line in [
        "overcast_local_allocator_addresses_total{pool=\"default\"} 4",
        "overcast_local_allocator_addresses_in_use_total{pool=\"default\"} 4",
        "overcast_local_allocator_addresses_total{pool=\"team\"} 2",
        "overcast_local_allocator_addresses_in_use_total{pool=\"team\"} 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
    }

    // A restart recovers every allocation from Service status: nothing is
    // handed out twice. While the CCM is down, "b" gets an annotation that
    // fails its sync (so it never re-claims its address) and "d" arrives;
    // neither "c" nor "d" may get b's address (or anyone's).
    ccm.signal(libc::SIGTERM);
    ccm.wait_exit(Duration::from_secs(20));
    env.services("default")
        .patch(
            "b",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"annotations": {IPS: "not-an-ip"}}})),
        )
        .await
        .unwrap();
    env.create_service("default", "d", &[], &[("TCP", 80)])
        .await;
    let _ccm = env.ccm_with_env(&[], &[("NODE_NAME", "machine-8")]);
    let msg = env.event("default", "d", "SyncLoadBalancerFailed").await;
    assert!(msg.contains("no free IPv4 address"), "{msg}");
    let msg = env.event("default", "b", "SyncLoadBalancerFailed").await;
    assert!(msg.contains("\"not-an-ip\" is not an IP address"), "{msg}");
    for (name, vip) in [
        ("a", &a),
        ("b", &b),
        ("pinned", &"127.0.12.3".to_string()),
        ("web-http", &shared),
        ("web-dns", &shared),
    ] {
        assert_eq!(&env.vip("default", name).await, vip, "{name} kept its VIP");
    }
    // The new process serves "pinned" from its node and tells so; the
    // address it kept is not announced as newly assigned.
    eventually("pinned served from machine-8", SOON, || async {
        let served = env.events_now("default", "pinned", "nodeAssigned").await;
        served
            .iter()
            .any(|(m, _)| m.contains("\"machine-8\""))
            .then_some(())
    })
    .await;
    assert_eq!(
        env.events_now("default", "pinned", "IPAllocated").await,
        [(
            "Assigned IP [\"127.0.12.3\"] from address pool \"default\"".to_string(),
            1
        )]
    );
    for name in ["c", "d"] {
        let svc = env.services("default").get(name).await.unwrap();
        let ingress = svc.status.and_then(|s| s.load_balancer?.ingress);
        assert!(
            ingress.as_ref().is_none_or(|i| i.is_empty()),
            "{name} got {ingress:?}"
        );
    }

    // Deleting a Service releases its address for a waiting one.
    env.services("default")
        .delete("a", &DeleteParams::default())
        .await
        .unwrap();
    let next = eventually("c or d gets a's address", SOON, || async {
        for name in ["c", "d"] {
            let svc = env.services("default").get(name).await.ok()?;
            if let Some(ip) = svc
                .status
                .and_then(|s| s.load_balancer?.ingress?.first()?.ip.clone())
            {
                return Some(ip);
            }
        }
        None
    })
    .await;
    assert_eq!(next, a);
    // A sharer leaving keeps the address for the other.
    env.services("default")
        .delete("web-http", &DeleteParams::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(env.vip("default", "web-dns").await, shared);
}

/// A node's backend: replies with the node's name on connect, then echoes.
async fn tcp_backend(addr: SocketAddr, name: &'static str) -> tokio::task::JoinHandle<()> {
    let listener = TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                if s.write_all(format!("{name}\n").as_bytes()).await.is_err() {
                    return;
                }
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    })
}

async fn udp_backend(addr: SocketAddr, name: &'static str) -> tokio::task::JoinHandle<()> {
    let socket = UdpSocket::bind(addr).await.unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let reply = format!("{name}:{}", String::from_utf8_lossy(&buf[..n]));
            let _ = socket.send_to(reply.as_bytes(), from).await;
        }
    })
}

/// Connects through the VIP and reads which backend answered.
async fn who_answers(vip: SocketAddr) -> Result<(String, BufReader<TcpStream>), String> {
    let stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(vip))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line))
        .await
        .map_err(|_| "no reply".to_string())?
        .map_err(|e| e.to_string())?;
    if line.is_empty() {
        return Err("closed without a reply".into());
    }
    Ok((line.trim().to_string(), reader))
}

#[tokio::test]
async fn traffic_through_the_vip_reaches_every_backend_and_avoids_a_killed_one() {
    let env = env(&loopback_cluster("127.0.13", 4, "500ms")).await;
    let _ccm = env.ccm(&[]);
    env.register_nodes(3).await;
    let svc = env
        .create_service("default", "echo", &[], &[("TCP", 8080), ("UDP", 8053)])
        .await;
    let ports = svc.spec.unwrap().ports.unwrap();
    let (tcp_port, udp_port) = (
        ports[0].node_port.unwrap() as u16,
        ports[1].node_port.unwrap() as u16,
    );
    const NAMES: [&str; 4] = ["node-1", "node-2", "node-3", "node-4"];
    let mut backends = Vec::new();
    for (i, name) in NAMES.iter().enumerate().take(3) {
        let ip = format!("127.0.13.{}", i + 1);
        backends.push(tcp_backend(format!("{ip}:{tcp_port}").parse().unwrap(), name).await);
        udp_backend(format!("{ip}:{udp_port}").parse().unwrap(), name).await;
    }
    let vip: SocketAddr = format!("{}:8080", env.vip("default", "echo").await)
        .parse()
        .unwrap();

    // Every backend gets connections.
    let seen = eventually(
        "all three backends answer through the VIP",
        SOON,
        || async {
            let mut seen = BTreeSet::new();
            for _ in 0..12 {
                seen.insert(who_answers(vip).await.ok()?.0);
            }
            (seen.len() == 3).then_some(seen)
        },
    )
    .await;
    assert_eq!(
        seen,
        BTreeSet::from(["node-1", "node-2", "node-3"].map(String::from))
    );

    // UDP flows reach backends and come back.
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let udp_vip: SocketAddr = SocketAddr::new(vip.ip(), 8053);
    client.send_to(b"ping", udp_vip).await.unwrap();
    let mut buf = [0u8; 64];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf))
        .await
        .expect("a UDP reply through the VIP")
        .unwrap();
    let reply = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(
        reply.ends_with(":ping") && reply.starts_with("node-"),
        "{reply}"
    );

    // An established connection survives a node-set change.
    let (first, mut long_lived) = who_answers(vip).await.unwrap();
    backends.push(tcp_backend(format!("127.0.13.4:{tcp_port}").parse().unwrap(), NAMES[3]).await);
    create_tainted_node(&env.client, "node-4").await;
    initialised(&env.client, "node-4").await;
    let joined = eventually("node-4 answers through the VIP", SOON, || async {
        for _ in 0..12 {
            if who_answers(vip).await.ok()?.0 == "node-4" {
                return Some(true);
            }
        }
        None
    })
    .await;
    assert!(joined);
    long_lived
        .get_mut()
        .write_all(b"still here\n")
        .await
        .unwrap();
    let mut echo = String::new();
    tokio::time::timeout(Duration::from_secs(5), long_lived.read_line(&mut echo))
        .await
        .expect("the old connection still answers")
        .unwrap();
    assert_eq!(
        echo, "still here\n",
        "connection to {first} kept across the change"
    );

    // A killed backend is avoided: every connection still succeeds.
    backends[1].abort();
    let _ = (&mut backends[1]).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut answered = BTreeSet::new();
    for i in 0..40 {
        let (who, _) = who_answers(vip)
            .await
            .unwrap_or_else(|e| panic!("connection {i} through the VIP failed: {e}"));
        answered.insert(who);
    }
    assert!(!answered.contains("node-2"), "{answered:?}");
    assert_eq!(answered.len(), 3, "the others share the load: {answered:?}");

    // Deleting the Service closes the listener.
    env.services("default")
        .delete("echo", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the VIP stops accepting", SOON, || async {
        TcpStream::connect(vip).await.is_err().then_some(())
    })
    .await;
}

/// A veth pair, deleted on drop; `None` when this host may not create one.
struct Veth {
    name: String,
    peer: String,
}

impl Veth {
    fn create() -> Option<Veth> {
        // Unique per test too: tests of one binary share the pid.
        static PAIRS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let pair = PAIRS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = std::process::id() % 100_000;
        let (name, peer) = (format!("ovc{id}-{pair}a"), format!("ovc{id}-{pair}b"));
        let out = std::process::Command::new("ip")
            .args(["link", "add", &name, "type", "veth", "peer", "name", &peer])
            .output()
            .expect("run ip (iproute2)");
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            // Only a missing privilege skips; anything else is a failure.
            assert!(
                err.contains("Operation not permitted"),
                "creating a veth pair: {err}"
            );
            return None;
        }
        let veth = Veth { name, peer };
        for dev in [&veth.name, &veth.peer] {
            ip(&["link", "set", dev, "up"]);
        }
        Some(veth)
    }

    fn addresses(&self) -> String {
        let out = std::process::Command::new("ip")
            .args(["-o", "addr", "show", "dev", &self.name])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.name])
            .output();
    }
}

fn ip(args: &[&str]) {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Receives frames of one ethertype on an interface (AF_PACKET), for the
/// announcements.
#[allow(unsafe_code)]
mod capture {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    pub struct Capture(OwnedFd);

    impl Capture {
        /// `ethertype`: `libc::ETH_P_ARP` or `libc::ETH_P_IPV6`.
        pub fn open(interface: &str, ethertype: i32) -> Capture {
            let index: i32 = std::fs::read_to_string(format!("/sys/class/net/{interface}/ifindex"))
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            let protocol = (ethertype as u16).to_be();
            // SAFETY: socket(2), bind(2) and setsockopt(2) with valid,
            // correctly sized arguments; the descriptor is owned at once.
            unsafe {
                let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(protocol));
                assert!(fd >= 0, "{}", std::io::Error::last_os_error());
                let fd = OwnedFd::from_raw_fd(fd);
                let mut addr: libc::sockaddr_ll = std::mem::zeroed();
                addr.sll_family = libc::AF_PACKET as u16;
                addr.sll_protocol = protocol;
                addr.sll_ifindex = index;
                let rc = libc::bind(
                    fd.as_raw_fd(),
                    (&raw const addr).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                );
                assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
                let timeout = libc::timeval {
                    tv_sec: 1,
                    tv_usec: 0,
                };
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    (&raw const timeout).cast(),
                    std::mem::size_of::<libc::timeval>() as u32,
                );
                Capture(fd)
            }
        }

        /// The next frame, or `None` after a second without one.
        pub fn next(&self) -> Option<Vec<u8>> {
            let mut buf = vec![0u8; 1500];
            // SAFETY: the buffer is valid for its length.
            let n =
                unsafe { libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            (n > 0).then(|| {
                buf.truncate(n as usize);
                buf
            })
        }
    }
}

#[tokio::test]
async fn with_an_interface_the_vip_is_added_announced_and_removed_on_stop_or_a_lost_lease() {
    let Some(veth) = Veth::create() else {
        eprintln!("SKIPPED: creating network interfaces needs CAP_NET_ADMIN");
        return;
    };
    let config = format!(
        "instances:
  - name: node-1
    addresses: [{{type: InternalIP, address: 127.0.14.1}}]
loadBalancer:
  interface: {}
  garpInterval: 1s
  pools: [{{name: default, addresses: [10.254.14.8/30]}}]
",
        veth.name
    );
    let capture = capture::Capture::open(&veth.peer, libc::ETH_P_ARP);
    let env = env(&config).await;
    let mut ccm = env.ccm(&[]);
    create_tainted_node(&env.client, "node-1").await;
    initialised(&env.client, "node-1").await;
    let svc = env
        .create_service("default", "web", &[], &[("TCP", 8080)])
        .await;
    let node_port = svc.spec.unwrap().ports.unwrap()[0].node_port.unwrap() as u16;
    let _backend = tcp_backend(format!("127.0.14.1:{node_port}").parse().unwrap(), "node-1").await;
    let vip = env.vip("default", "web").await;
    assert_eq!(vip, "10.254.14.8");
    assert!(
        veth.addresses().contains("10.254.14.8/32"),
        "{}",
        veth.addresses()
    );

    // The gratuitous ARP: an ARP request for the VIP from the VIP.
    let vip_octets = [10u8, 254, 14, 8];
    let announced = (0..10).filter_map(|_| capture.next()).find(|f| {
        f.len() >= 42
            && f[12..14] == [0x08, 0x06]
            && f[28..32] == vip_octets
            && f[38..42] == vip_octets
    });
    let frame = announced.expect("a gratuitous ARP for the VIP on the link");
    assert_eq!(&frame[..6], [0xff; 6], "broadcast");
    // Announced again every garpInterval (1 s here) while served: in 4 s,
    // more than the two left of the first announcement's three.
    let started = std::time::Instant::now();
    let mut again = 0;
    while started.elapsed() < Duration::from_secs(4) {
        if capture
            .next()
            .is_some_and(|f| f.len() >= 42 && f[28..32] == vip_octets && f[38..42] == vip_octets)
        {
            again += 1;
        }
    }
    assert!(again >= 4, "{again} announcements in 4 s");

    let (who, _) = who_answers(format!("{vip}:8080").parse().unwrap())
        .await
        .unwrap();
    assert_eq!(who, "node-1");

    // Stopping (as on a handover) takes the VIP off the interface.
    ccm.signal(libc::SIGTERM);
    assert!(
        ccm.wait_exit(Duration::from_secs(20)).success(),
        "{}",
        ccm.log_text()
    );
    assert!(
        !veth.addresses().contains("10.254.14.8"),
        "{}",
        veth.addresses()
    );

    // A lost lease also lets go of the VIP before the process exits.
    let mut ccm = env.ccm(&[]);
    eventually("the VIP is back on the interface", SOON, || async {
        veth.addresses().contains("10.254.14.8/32").then_some(())
    })
    .await;
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(env.client.clone(), "kube-system");
    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
        k8s_openapi::jiff::Timestamp::now(),
    );
    leases
        .patch(
            "cloud-controller-manager",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {
                "holderIdentity": "another-replica",
                "leaseDurationSeconds": 60,
                "renewTime": now,
            }})),
        )
        .await
        .unwrap();
    let status = ccm.wait_exit(Duration::from_secs(20));
    assert_eq!(
        status.code(),
        Some(1),
        "a lost lease exits 1: {}",
        ccm.log_text()
    );
    assert!(
        !veth.addresses().contains("10.254.14.8"),
        "{}",
        veth.addresses()
    );
}

/// A leader killed with SIGKILL cannot remove its VIPs. They carry the
/// provider's mark (a renewed lifetime, `noprefixroute`, the `:ovc` label),
/// so a restarted leader adopts them (and removes them on SIGTERM), and with
/// none coming back they expire by themselves within `vipLifetime`. An
/// address someone else put on the interface is served and left alone.
#[tokio::test]
async fn a_killed_leaders_vip_is_adopted_on_restart_or_expires_and_a_foreign_one_is_kept() {
    let Some(veth) = Veth::create() else {
        eprintln!("SKIPPED: creating network interfaces needs CAP_NET_ADMIN");
        return;
    };
    let config = format!(
        "instances:
  - name: node-1
    addresses: [{{type: InternalIP, address: 127.0.15.1}}]
loadBalancer:
  interface: {}
  vipLifetime: 2s
  pools: [{{name: default, addresses: [10.254.15.8/30]}}]
",
        veth.name
    );
    // Someone else's address, inside the pool.
    ip(&["addr", "add", "10.254.15.10/32", "dev", &veth.name]);
    let env = env(&config).await;
    let mut ccm = env.ccm(&["--leader-elect=false"]);
    create_tainted_node(&env.client, "node-1").await;
    initialised(&env.client, "node-1").await;
    env.create_service("default", "web", &[], &[("TCP", 8080)])
        .await;
    env.create_service(
        "default",
        "theirs",
        &[("local.overcast.dev/load-balancer-ips", "10.254.15.10")],
        &[("TCP", 8081)],
    )
    .await;
    assert_eq!(env.vip("default", "web").await, "10.254.15.8");
    assert_eq!(env.vip("default", "theirs").await, "10.254.15.10");
    let ours = |addresses: &str| {
        addresses
            .lines()
            .find(|l| l.contains("10.254.15.8/32"))
            .map(str::to_string)
    };
    let line = eventually("the VIP on the interface", SOON, || async {
        ours(&veth.addresses())
    })
    .await;
    assert!(
        line.contains(&format!("{}:ovc", veth.name)) && line.contains("valid_lft 2sec"),
        "marked and with a lifetime: {line}"
    );
    // Renewed while the leader lives: still there after twice its lifetime.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(ours(&veth.addresses()).is_some(), "{}", veth.addresses());

    // SIGKILL: nothing is removed; a restart adopts the leftover, so its
    // SIGTERM removes it (and only it). Without leader election the restart
    // serves at once, within the lifetime; with it, the lease outlasts the
    // default lifetime and the leftover is gone before anyone takes over.
    ccm.signal(libc::SIGKILL);
    ccm.wait_exit(Duration::from_secs(10));
    assert!(ours(&veth.addresses()).is_some(), "{}", veth.addresses());
    let mut ccm = env.ccm(&["--leader-elect=false"]);
    eventually("the restarted leader adopts the VIP", SOON, || async {
        ccm.log_text().contains("adopted").then_some(())
    })
    .await;
    ccm.signal(libc::SIGTERM);
    assert!(
        ccm.wait_exit(Duration::from_secs(20)).success(),
        "{}",
        ccm.log_text()
    );
    let after = veth.addresses();
    assert!(
        ours(&after).is_none(),
        "the adopted VIP removed on SIGTERM: {after}"
    );
    assert!(
        after.contains("10.254.15.10/32"),
        "the foreign address kept: {after}"
    );

    // SIGKILL with no restart: the address expires by itself.
    let mut ccm = env.ccm(&["--leader-elect=false"]);
    eventually("the VIP back on the interface", SOON, || async {
        ours(&veth.addresses())
    })
    .await;
    ccm.signal(libc::SIGKILL);
    ccm.wait_exit(Duration::from_secs(10));
    eventually(
        "the dead leader's VIP expires",
        Duration::from_secs(10),
        || async { ours(&veth.addresses()).is_none().then_some(()) },
    )
    .await;
    assert!(
        veth.addresses().contains("10.254.15.10/32"),
        "{}",
        veth.addresses()
    );
}

/// kube-proxy's health check server for a node: 200 with a local endpoint,
/// 503 without.
async fn health_server(addr: SocketAddr, healthy: bool) -> tokio::task::JoinHandle<()> {
    let listener = TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let status = if healthy {
                    "200 OK"
                } else {
                    "503 Service Unavailable"
                };
                let _ = s
                    .write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .await;
            });
        }
    })
}

/// A backend that reads a PROXY v2 header and answers with the client
/// address it carries.
async fn proxy_protocol_backend(addr: SocketAddr) -> tokio::task::JoinHandle<()> {
    let listener = TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = [0u8; 16];
                if s.read_exact(&mut head).await.is_err() {
                    return;
                }
                let reply = if &head[..12] != b"\r\n\r\n\0\r\nQUIT\n"
                    || head[12] != 0x21
                    || head[13] != 0x11
                {
                    "no PROXY v2 header\n".to_string()
                } else {
                    let mut addrs = [0u8; 12];
                    let _ = s.read_exact(&mut addrs).await;
                    let ip = std::net::Ipv4Addr::new(addrs[0], addrs[1], addrs[2], addrs[3]);
                    let port = u16::from_be_bytes([addrs[8], addrs[9]]);
                    format!("{ip}:{port}\n")
                };
                let _ = s.write_all(reply.as_bytes()).await;
            });
        }
    })
}

#[tokio::test]
async fn local_traffic_policy_health_checks_proxy_protocol_and_draining() {
    let env = env(&loopback_cluster("127.0.15", 3, "300ms")).await;
    let _ccm = env.ccm(&[]);
    env.register_nodes(3).await;
    const NAMES: [&str; 3] = ["node-1", "node-2", "node-3"];

    // externalTrafficPolicy: Local: only nodes whose health check answers 200.
    let mut svc = Service {
        metadata: ObjectMeta {
            name: Some("local".into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("LoadBalancer".into()),
            external_traffic_policy: Some("Local".into()),
            ports: Some(vec![ServicePort {
                port: 9000,
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    svc = env
        .services("default")
        .create(&PostParams::default(), &svc)
        .await
        .unwrap();
    let spec = svc.spec.unwrap();
    let node_port = spec.ports.unwrap()[0].node_port.unwrap();
    let health_port = spec
        .health_check_node_port
        .expect("Local gets a healthCheckNodePort");
    let mut health = Vec::new();
    for (i, name) in NAMES.iter().enumerate() {
        let ip = format!("127.0.15.{}", i + 1);
        tcp_backend(format!("{ip}:{node_port}").parse().unwrap(), name).await;
        // node-2 has no local endpoint.
        health.push(health_server(format!("{ip}:{health_port}").parse().unwrap(), i != 1).await);
    }
    let vip: SocketAddr = format!("{}:9000", env.vip("default", "local").await)
        .parse()
        .unwrap();
    eventually("only nodes with endpoints get traffic", SOON, || async {
        let mut seen = BTreeSet::new();
        for _ in 0..20 {
            seen.insert(who_answers(vip).await.ok()?.0);
        }
        (seen == BTreeSet::from(["node-1".to_string(), "node-3".to_string()])).then_some(())
    })
    .await;
    // node-2 gains an endpoint: its health check passes and it is back.
    health[1].abort();
    let _ = (&mut health[1]).await;
    health_server(format!("127.0.15.2:{health_port}").parse().unwrap(), true).await;
    eventually(
        "node-2 is back after its health check passes",
        SOON,
        || async {
            for _ in 0..20 {
                if who_answers(vip).await.ok()?.0 == "node-2" {
                    return Some(());
                }
            }
            None
        },
    )
    .await;

    // Draining: a node leaving the backend set keeps its open connection.
    let (first, mut open) = eventually("a connection to node-3", SOON, || async {
        let (who, conn) = who_answers(vip).await.ok()?;
        (who == "node-3").then_some((who, conn))
    })
    .await;
    Api::<Node>::all(env.client.clone())
        .patch(
            &first,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"labels": {
                "node.kubernetes.io/exclude-from-external-load-balancers": "true"
            }}})),
        )
        .await
        .unwrap();
    eventually("node-3 gets no new connections", SOON, || async {
        let mut seen = BTreeSet::new();
        for _ in 0..20 {
            seen.insert(who_answers(vip).await.ok()?.0);
        }
        (!seen.contains("node-3")).then_some(())
    })
    .await;
    open.get_mut().write_all(b"draining\n").await.unwrap();
    let mut echo = String::new();
    tokio::time::timeout(Duration::from_secs(5), open.read_line(&mut echo))
        .await
        .expect("the drained connection still answers")
        .unwrap();
    assert_eq!(echo, "draining\n");

    // PROXY protocol v2: the backend learns the client's address.
    let svc = env
        .create_service(
            "default",
            "pp",
            &[("local.overcast.dev/proxy-protocol", "v2")],
            &[("TCP", 9100)],
        )
        .await;
    let node_port = svc.spec.unwrap().ports.unwrap()[0].node_port.unwrap();
    for i in 1..=3 {
        proxy_protocol_backend(format!("127.0.15.{i}:{node_port}").parse().unwrap()).await;
    }
    let vip: SocketAddr = format!("{}:9100", env.vip("default", "pp").await)
        .parse()
        .unwrap();
    let client = tokio::net::TcpSocket::new_v4().unwrap();
    client.bind("127.0.15.77:0".parse().unwrap()).unwrap();
    let stream = client.connect(vip).await.unwrap();
    let local = stream.local_addr().unwrap();
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).await.unwrap();
    assert_eq!(line.trim(), local.to_string());
}

#[tokio::test]
async fn an_ipv6_vip_is_usable_at_once_announced_by_neighbour_advertisement_and_removed() {
    let Some(veth) = Veth::create() else {
        eprintln!("SKIPPED: creating network interfaces needs CAP_NET_ADMIN");
        return;
    };
    let mac: Vec<u8> = std::fs::read_to_string(format!("/sys/class/net/{}/address", veth.name))
        .unwrap()
        .trim()
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect();
    let vip: std::net::Ipv6Addr = "fd00:0:0:14::8".parse().unwrap();
    let capture = capture::Capture::open(&veth.peer, libc::ETH_P_IPV6);
    let vips = overcast_provider_local::vip::Vips::new(
        &veth.name,
        overcast_provider_local::vip::DEFAULT_LIFETIME,
        Duration::ZERO,
    );
    vips.acquire(vip.into()).await.unwrap();
    let added = veth.addresses();
    let line = added
        .lines()
        .find(|l| l.contains("fd00:0:0:14::8/128"))
        .unwrap_or_else(|| panic!("the VIP on the interface: {added}"));
    assert!(
        line.contains("nodad") && !line.contains("tentative"),
        "usable at once, without DAD: {line}"
    );

    // Ethernet (14) + IPv6 (40): ICMPv6 type 136, the override flag, the VIP
    // as target and the interface's MAC as target link-layer address.
    let advertised = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            let Some(frame) = capture.next() else {
                continue;
            };
            if frame.len() >= 86
                && frame[20] == 58
                && frame[54] == 136
                && frame[62..78] == vip.octets()
            {
                return Some(frame);
            }
        }
        None
    })
    .await
    .unwrap()
    .expect("a neighbour advertisement for the VIP on the peer");
    assert_eq!(
        &advertised[6..12],
        mac.as_slice(),
        "sent from the interface"
    );
    assert_eq!(advertised[21], 255, "hop limit 255, or receivers drop it");
    assert_eq!(
        &advertised[38..54],
        &[0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]
    );
    assert_eq!(advertised[58] & 0x20, 0x20, "override flag");
    assert_eq!(
        &advertised[78..80],
        &[2, 1],
        "target link-layer address option"
    );
    assert_eq!(&advertised[80..86], mac.as_slice());

    vips.release(vip.into()).await;
    let left = veth.addresses();
    assert!(!left.contains("fd00:0:0:14::8"), "{left}");
}

/// A connection to `vip` from `source`: the backend's name, or `None` when
/// the proxy refuses it.
async fn answer_from(source: &str, vip: SocketAddr) -> Option<String> {
    let socket = tokio::net::TcpSocket::new_v4().ok()?;
    socket.bind(format!("{source}:0").parse().ok()?).ok()?;
    let stream = tokio::time::timeout(Duration::from_secs(3), socket.connect(vip))
        .await
        .ok()?
        .ok()?;
    let mut line = String::new();
    let mut reader = BufReader::new(stream);
    tokio::time::timeout(Duration::from_secs(3), reader.read_line(&mut line))
        .await
        .ok()?
        .ok()?;
    Some(line.trim().to_string()).filter(|l| !l.is_empty())
}

/// loadBalancerSourceRanges (the spec field, else the annotation) decide
/// which clients the VIP serves, in the proxy itself: with `ipMode: Proxy`
/// kube-proxy does not enforce them for the VIP. sessionAffinity ClientIP,
/// which the proxy does not do, is refused with an Event, not ignored.
#[tokio::test]
async fn source_ranges_limit_the_clients_and_client_ip_affinity_is_refused() {
    let env = env(&loopback_cluster("127.0.18", 1, "500ms")).await;
    let _ccm = env.ccm(&[]);
    env.register_nodes(1).await;
    let svc = env
        .create_service(
            "default",
            "ranged",
            &[(
                "service.beta.kubernetes.io/load-balancer-source-ranges",
                "127.0.19.0/24, 127.0.21.9/32",
            )],
            &[("TCP", 8080)],
        )
        .await;
    let node_port = svc.spec.unwrap().ports.unwrap()[0].node_port.unwrap();
    let _backend = tcp_backend(format!("127.0.18.1:{node_port}").parse().unwrap(), "node-1").await;
    let vip: SocketAddr = format!("{}:8080", env.vip("default", "ranged").await)
        .parse()
        .unwrap();
    eventually("an allowed client is served", SOON, || async {
        answer_from("127.0.19.5", vip)
            .await
            .filter(|n| n == "node-1")
    })
    .await;
    assert_eq!(
        answer_from("127.0.21.9", vip).await.as_deref(),
        Some("node-1")
    );
    assert_eq!(
        answer_from("127.0.20.5", vip).await,
        None,
        "outside the ranges"
    );

    // The spec field wins over the annotation; host bits are ignored.
    env.services("default")
        .patch(
            "ranged",
            &PatchParams::default(),
            &Patch::Merge(
                serde_json::json!({"spec": {"loadBalancerSourceRanges": ["127.0.20.1/24"]}}),
            ),
        )
        .await
        .unwrap();
    eventually("the new ranges apply", SOON, || async {
        (answer_from("127.0.20.5", vip).await.is_some()
            && answer_from("127.0.19.5", vip).await.is_none())
        .then_some(())
    })
    .await;

    env.create_service("default", "sticky", &[], &[("TCP", 8081)])
        .await;
    env.services("default")
        .patch(
            "sticky",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"sessionAffinity": "ClientIP"}})),
        )
        .await
        .unwrap();
    let msg = env
        .event("default", "sticky", "SyncLoadBalancerFailed")
        .await;
    assert!(
        msg.contains("spec.sessionAffinity: ClientIP is not supported"),
        "{msg}"
    );
}

/// The proxy's bounds: connections beyond loadBalancer.maxConnections are
/// closed at once, an idle connection is closed after tcpIdleTimeout, and
/// datagrams from sources beyond maxUDPFlows are dropped; a flood of either
/// leaves the process's descriptors where they were.
#[tokio::test]
async fn a_flood_of_connections_or_udp_sources_stays_within_the_bounds() {
    let config = loopback_cluster("127.0.22", 1, "500ms")
        + "  maxConnections: 5\n  tcpIdleTimeout: 2s\n  maxUDPFlows: 3\n  udpIdleTimeout: 30s\n";
    let env = env(&config).await;
    let ccm = env.ccm(&[]);
    env.register_nodes(1).await;
    let svc = env
        .create_service("default", "bounded", &[], &[("TCP", 8080), ("UDP", 8053)])
        .await;
    let ports = svc.spec.unwrap().ports.unwrap();
    let (tcp_port, udp_port) = (
        ports[0].node_port.unwrap() as u16,
        ports[1].node_port.unwrap() as u16,
    );
    let _tcp = tcp_backend(format!("127.0.22.1:{tcp_port}").parse().unwrap(), "node-1").await;
    let _udp = udp_backend(format!("127.0.22.1:{udp_port}").parse().unwrap(), "node-1").await;
    let ip = env.vip("default", "bounded").await;
    let vip: SocketAddr = format!("{ip}:8080").parse().unwrap();
    eventually("served", SOON, || async { who_answers(vip).await.ok() }).await;
    // That connection's slot is released once the proxy sees it closed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fds = || {
        std::fs::read_dir(format!("/proc/{}/fd", ccm.child.id()))
            .unwrap()
            .count()
    };
    let before = fds();

    // Five held open are served; the sixth to twentieth are closed at once.
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(who_answers(vip).await.expect("within the bound"));
    }
    for i in 0..15 {
        assert!(
            who_answers(vip).await.is_err(),
            "connection {} beyond the bound was served",
            6 + i
        );
    }
    // Idle for the timeout: the proxy closes them, and the slots free up.
    for (_, reader) in &mut held {
        let mut rest = String::new();
        let read = tokio::time::timeout(Duration::from_secs(10), reader.read_line(&mut rest)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "closed after the idle timeout: {read:?}"
        );
    }
    drop(held);
    eventually("a slot is free again", SOON, || async {
        who_answers(vip).await.ok()
    })
    .await;

    // UDP: three sources get flows, the other seven get nothing.
    let udp_vip: SocketAddr = format!("{ip}:8053").parse().unwrap();
    let mut answered = 0;
    for i in 0..10 {
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client
            .send_to(format!("ping {i}").as_bytes(), udp_vip)
            .await
            .unwrap();
        let mut buf = [0u8; 64];
        if tokio::time::timeout(Duration::from_millis(500), client.recv_from(&mut buf))
            .await
            .is_ok()
        {
            answered += 1;
        }
    }
    assert_eq!(answered, 3, "flows beyond maxUDPFlows");
    // Three flows hold one socket each; nothing else stays behind.
    assert!(
        fds() <= before + 3,
        "descriptors: {before} before, {} after",
        fds()
    );
    let metrics = ccm.get("/metrics").unwrap().1;
    for line in [
        "overcast_local_proxy_refused_total{protocol=\"TCP\",reason=\"max_connections\"} 15",
        "overcast_local_proxy_refused_total{protocol=\"UDP\",reason=\"max_udp_flows\"} 7",
        "overcast_local_proxy_idle_timeouts_total{protocol=\"TCP\"} 5",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
}

/// --load-balancer-class lets overcast-ccm run beside another LB
/// implementation: it serves its class, and with
/// --serve-classless-load-balancers=false leaves class-less Services (and
/// every other class) untouched: no finalizer, no status, no Event.
#[tokio::test]
async fn a_load_balancer_class_is_served_and_other_services_are_left_alone() {
    let env = env(&loopback_cluster("127.0.23", 1, "500ms")).await;
    let _ccm = env.ccm(&[
        "--load-balancer-class=overcast.dev/local",
        "--serve-classless-load-balancers=false",
    ]);
    env.register_nodes(1).await;
    let with_class = |name: &str, class: Option<&str>| Service {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("LoadBalancer".into()),
            load_balancer_class: class.map(str::to_string),
            ports: Some(vec![ServicePort {
                port: 80,
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let services = env.services("default");
    for (name, class) in [
        ("classless", None),
        ("metallb", Some("metallb.io/metallb")),
        ("ours", Some("overcast.dev/local")),
    ] {
        services
            .create(&PostParams::default(), &with_class(name, class))
            .await
            .unwrap();
    }
    env.vip("default", "ours").await;
    // Give the others every chance: a full resync round of the queue.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for name in ["classless", "metallb"] {
        let svc = services.get(name).await.unwrap();
        assert!(
            svc.metadata.finalizers.unwrap_or_default().is_empty(),
            "{name}: a finalizer"
        );
        let ingress = svc
            .status
            .and_then(|s| s.load_balancer)
            .and_then(|l| l.ingress);
        assert!(ingress.unwrap_or_default().is_empty(), "{name}: an address");
        let events: Api<Event> = Api::namespaced(env.client.clone(), "default");
        let about = events
            .list(&kube::api::ListParams::default().fields(&format!("involvedObject.name={name}")))
            .await
            .unwrap();
        assert!(
            about.items.is_empty(),
            "{name}: Events {:?}",
            about.items.iter().map(|e| &e.reason).collect::<Vec<_>>()
        );
    }
}
