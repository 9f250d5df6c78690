//! The cluster's network, all of it on this machine: a bridge in the host's
//! namespace, one network namespace per node joined to it by a veth pair, and
//! routes between the nodes' Pod subnets. Nothing routes off the machine: the
//! nodes have no default route and the host does not forward.

use std::net::Ipv4Addr;
use std::process::Command;

use crate::Error;

/// The addresses of one cluster slot `k`: `10.250.k.0/24` on the bridge.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Addressing {
    pub slot: u8,
}

/// The Service ClusterIP range the control plane hands out
/// (`--service-cluster-ip-range`).
pub(crate) const SERVICE_CIDR: &str = "10.96.0.0/12";
/// Every node's Pod subnet lies in here (kube-proxy's `clusterCIDR`).
pub(crate) const POD_CIDR: &str = "10.244.0.0/16";

impl Addressing {
    /// The host's address on the bridge: where the apiserver listens.
    pub fn host(self) -> Ipv4Addr {
        Ipv4Addr::new(10, 250, self.slot, 1)
    }
    /// Node `i`'s (1-based) InternalIP.
    pub fn node(self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 250, self.slot, 10 + i as u8)
    }
    /// An address for a namespace standing for a client outside the cluster.
    pub fn outside(self) -> Ipv4Addr {
        Ipv4Addr::new(10, 250, self.slot, 2)
    }
    /// Addresses free for load-balancer VIPs: `.200`–`.239`.
    pub fn vip_range(self) -> (Ipv4Addr, Ipv4Addr) {
        (
            Ipv4Addr::new(10, 250, self.slot, 200),
            Ipv4Addr::new(10, 250, self.slot, 239),
        )
    }
    /// Node `i`'s Pod subnet.
    pub fn pod_subnet(self, i: usize) -> String {
        format!("10.244.{i}.0/24")
    }
    pub fn bridge(self) -> String {
        format!("ovc{}-br", self.slot)
    }
    pub fn host_veth(self, name: &str) -> String {
        format!("ovc{}-{name}", self.slot)
    }
    /// The network namespace `name` of this slot (a node's, `n<i>`, or `out`).
    pub fn netns(self, name: &str) -> String {
        format!("ovc{}-{name}", self.slot)
    }
    /// Every link and namespace of this slot starts with this.
    pub fn prefix(self) -> String {
        format!("ovc{}-", self.slot)
    }
}

/// Runs `ip` with `args`; an error names the command and its stderr.
pub(crate) fn ip(args: &[&str]) -> Result<(), Error> {
    run("ip", args)
}

pub(crate) fn run(program: &str, args: &[&str]) -> Result<(), Error> {
    let what = format!("{program} {}", args.join(" "));
    run_checked(Command::new(program).args(args), &what).map(drop)
}

/// Runs `cmd`; its output, or an error naming `what`, the exit status and stderr.
pub(crate) fn run_checked(cmd: &mut Command, what: &str) -> Result<std::process::Output, Error> {
    let out = cmd.output().map_err(Error::io(format!("running {what}")))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(Error::Io {
            what: format!("{what} ({})", out.status),
            source: std::io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_string()),
        })
    }
}

/// Refuses to build a cluster on a host that forwards IPv4: a node's packet
/// for an address nothing here serves could then leave the machine.
pub(crate) fn check_host_does_not_forward() -> Result<(), Error> {
    let forwarding = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
        .map_err(Error::io("reading /proc/sys/net/ipv4/ip_forward"))?;
    if forwarding.trim() == "0" {
        Ok(())
    } else {
        Err(Error::Io {
            what: "checking the host network".into(),
            source: std::io::Error::other(
                "net.ipv4.ip_forward is on: the test cluster's traffic could be routed off \
                 this machine; turn it off (sysctl -w net.ipv4.ip_forward=0) to run it",
            ),
        })
    }
}

/// The bridge the nodes and the host meet on.
pub(crate) fn create_bridge(a: Addressing) -> Result<(), Error> {
    let bridge = a.bridge();
    ip(&["link", "add", &bridge, "type", "bridge"])?;
    ip(&["addr", "add", &format!("{}/24", a.host()), "dev", &bridge])?;
    ip(&["link", "set", &bridge, "up"])
}

/// A network namespace `name` joined to the bridge as `eth0` with `address`,
/// and loopback up. No default route.
pub(crate) fn create_attached_netns(
    a: Addressing,
    name: &str,
    address: Ipv4Addr,
) -> Result<(), Error> {
    let netns = a.netns(name);
    let host_side = a.host_veth(name);
    ip(&["netns", "add", &netns])?;
    ip(&[
        "link", "add", &host_side, "type", "veth", "peer", "name", "eth0", "netns", &netns,
    ])?;
    ip(&["link", "set", &host_side, "master", &a.bridge(), "up"])?;
    ip(&[
        "-n",
        &netns,
        "addr",
        "add",
        &format!("{address}/24"),
        "dev",
        "eth0",
    ])?;
    ip(&["-n", &netns, "link", "set", "eth0", "up"])?;
    ip(&["-n", &netns, "link", "set", "lo", "up"])
}

/// Node `i` of `count`: routes to the other nodes' Pod subnets through them,
/// ClusterIPs towards the host (kube-proxy rewrites them before they get
/// there), and forwarding on for its Pods.
pub(crate) fn route_node(a: Addressing, i: usize, count: usize) -> Result<(), Error> {
    let netns = a.netns(&format!("n{i}"));
    for j in (1..=count).filter(|&j| j != i) {
        ip(&[
            "-n",
            &netns,
            "route",
            "add",
            &a.pod_subnet(j),
            "via",
            &a.node(j).to_string(),
        ])?;
    }
    ip(&[
        "-n",
        &netns,
        "route",
        "add",
        SERVICE_CIDR,
        "via",
        &a.host().to_string(),
    ])?;
    run(
        "ip",
        &[
            "netns",
            "exec",
            &netns,
            "sysctl",
            "-q",
            "-w",
            "net.ipv4.ip_forward=1",
        ],
    )
}

/// Path of a namespace made by `ip netns add`.
pub(crate) fn netns_path(netns: &str) -> std::path::PathBuf {
    std::path::Path::new("/run/netns").join(netns)
}

/// Removes everything of slot `a` from the host network: its namespaces (and
/// with them the veths inside) and its links. Best effort; quiet.
pub(crate) fn remove_slot(a: Addressing) {
    let prefix = a.prefix();
    if let Ok(entries) = std::fs::read_dir("/run/netns") {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if name.starts_with(&prefix) {
                let _ = ip(&["netns", "delete", &name]);
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir("/sys/class/net") {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if name.starts_with(&prefix) {
                let _ = ip(&["link", "delete", &name]);
            }
        }
    }
}
