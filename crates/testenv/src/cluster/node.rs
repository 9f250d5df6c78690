//! One node of the test cluster: its own containerd (root, state, socket), a
//! kubelet with `--cloud-provider=external`, and kube-proxy, all in the node's
//! network namespace and cgroup tree. The settings are the ones this machine
//! needs (../shared/reference/real-nodes.md); each says why.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::Error;
use crate::cluster::net::{self, Addressing, POD_CIDR};
use crate::cluster::{cgroups, images};
use crate::process::{Placement, Supervised};

/// What a node is started with.
#[derive(Debug, Clone)]
pub(crate) struct NodeSpec {
    pub index: usize,
    pub name: String,
    pub address: Ipv4Addr,
    pub pod_subnet: String,
    pub kubelet_args: Vec<String>,
    /// (host:port, hosts.toml) of registries containerd reaches over HTTP.
    pub registry_hosts: Vec<(String, String)>,
}

#[derive(Debug)]
pub(crate) struct RunningNode {
    pub spec: NodeSpec,
    pub dir: PathBuf,
    pub cgroup: String,
    pub containerd_socket: PathBuf,
    // Drop order: the node's processes go first (kube-proxy, then the kubelet,
    // then the runtime under them).
    kube_proxy: Option<Supervised>,
    kubelet: Option<Supervised>,
    containerd: Option<Supervised>,
    /// How the kubelet was started (kubeconfig, placement, binary), to
    /// start it again.
    kubelet_launch: Option<(PathBuf, Placement, PathBuf)>,
}

#[derive(Debug, Clone)]
pub(crate) struct Binaries {
    pub kubelet: PathBuf,
    pub kube_proxy: PathBuf,
    pub images: Vec<PathBuf>,
}

impl RunningNode {
    pub(crate) fn start(
        a: Addressing,
        spec: NodeSpec,
        slot_dir: &Path,
        kubeconfig: &Path,
        bins: &Binaries,
    ) -> Result<RunningNode, Error> {
        let dir = slot_dir.join(&spec.name);
        for sub in [
            "containerd",
            "kubelet",
            "pod-logs",
            "cni/net.d",
            "cni/ipam",
            "volume-plugins",
        ] {
            let path = dir.join(sub);
            std::fs::create_dir_all(&path)
                .map_err(Error::io(format!("creating {}", path.display())))?;
        }
        let netns = a.netns(&format!("n{}", spec.index));
        let cgroup = netns.clone(); // one name for the node's namespace and cgroup tree
        let placement = Placement {
            netns: Some(net::netns_path(&netns)),
            cgroup_procs: cgroups::create(&cgroup)?,
        };
        let mut node = RunningNode {
            containerd_socket: dir.join("containerd/containerd.sock"),
            spec,
            dir,
            cgroup,
            kube_proxy: None,
            kubelet: None,
            containerd: None,
            kubelet_launch: None,
        };
        node.start_containerd(a, &placement, &bins.images)?;
        node.start_kubelet(kubeconfig, &placement, &bins.kubelet)?;
        node.start_kube_proxy(kubeconfig, &placement, &bins.kube_proxy)?;
        Ok(node)
    }

    fn write(&self, name: &str, contents: &str) -> Result<PathBuf, Error> {
        let path = self.dir.join(name);
        std::fs::write(&path, contents)
            .map_err(Error::io(format!("writing {}", path.display())))?;
        Ok(path)
    }

    fn start_containerd(
        &mut self,
        a: Addressing,
        placement: &Placement,
        images: &[PathBuf],
    ) -> Result<(), Error> {
        let cni = format!(
            r#"{{
  "cniVersion": "0.4.0",
  "name": "{network}",
  "plugins": [{{
    "type": "bridge",
    "bridge": "cni0",
    "isGateway": true,
    "isDefaultGateway": true,
    "ipMasq": true,
    "hairpinMode": true,
    "ipam": {{
      "type": "host-local",
      "ranges": [[{{"subnet": "{subnet}"}}]],
      "dataDir": "{ipam}"
    }}
  }}]
}}
"#,
            network = a.netns(&format!("n{}", self.spec.index)),
            subnet = self.spec.pod_subnet,
            ipam = self.dir.join("cni/ipam").display(),
        );
        self.write("cni/net.d/10-bridge.conflist", &cni)?;
        for (host, toml) in &self.spec.registry_hosts {
            let dir = self.dir.join("certs.d").join(host);
            std::fs::create_dir_all(&dir)
                .map_err(Error::io(format!("creating {}", dir.display())))?;
            std::fs::write(dir.join("hosts.toml"), toml).map_err(Error::io(format!(
                "writing {}",
                dir.join("hosts.toml").display()
            )))?;
        }
        let root = self.dir.join("containerd");
        let config = format!(
            r#"version = 2
root = "{root}/root"
state = "{root}/state"
# Snapshotters this machine cannot run would only log errors.
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "{socket}"
[ttrpc]
  address = "{root}/containerd.sock.ttrpc"
[debug]
  level = "warn"

[plugins."io.containerd.internal.v1.opt"]
  path = "{root}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  # No CAP_SYS_RESOURCE here: runc cannot lower a sandbox's oom_score_adj.
  restrict_oom_score_adj = true
  # Pod network namespaces live under this node's state, not /var/run/netns.
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{dir}/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      # runc's state under this node, not /run/containerd/runc.
      Root = "{root}/runc"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{dir}/certs.d"
"#,
            root = root.display(),
            socket = self.containerd_socket.display(),
            dir = self.dir.display(),
            pause = images::PAUSE,
        );
        let config_path = self.write("containerd/config.toml", &config)?;
        let mut cmd = Command::new("containerd");
        cmd.arg(format!("--config={}", config_path.display()));
        let name = format!("containerd ({})", self.spec.name);
        self.containerd = Some(Supervised::spawn_placed(
            &name,
            cmd,
            &self.dir.join("containerd.log"),
            placement,
        )?);
        self.wait_for_containerd()?;
        for image in images {
            self.import(image)?;
        }
        Ok(())
    }

    /// Imports an OCI image archive into this node's containerd, for the CRI.
    pub(crate) fn import(&self, archive: &Path) -> Result<(), Error> {
        let what = format!(
            "importing {} into {}'s containerd",
            archive.display(),
            self.spec.name
        );
        net::run_checked(self.ctr().args(["images", "import"]).arg(archive), &what).map(drop)
    }

    /// `ctr` pointed at this node's containerd, in the namespace the CRI uses.
    pub(crate) fn ctr(&self) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg(format!("--address={}", self.containerd_socket.display()))
            .args(["--namespace", "k8s.io"]);
        cmd
    }

    fn wait_for_containerd(&mut self) -> Result<(), Error> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(c) = self.containerd.as_mut() {
                c.check_running()?;
            }
            if self
                .ctr()
                .arg("version")
                .output()
                .is_ok_and(|o| o.status.success())
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Io {
                    what: format!("waiting for {}'s containerd", self.spec.name),
                    source: std::io::Error::other(crate::process::tail(
                        &self.dir.join("containerd.log"),
                    )),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn start_kubelet(
        &mut self,
        kubeconfig: &Path,
        placement: &Placement,
        kubelet: &Path,
    ) -> Result<(), Error> {
        // An empty resolv.conf: Pods get no nameserver, so nothing they run can
        // send a DNS query off the machine.
        let resolv = self.write("resolv.conf", "")?;
        let config = format!(
            r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# No systemd here; each node has its own cgroup tree, made in every hierarchy.
cgroupDriver: cgroupfs
cgroupRoot: /{cgroup}
failSwapOn: false
containerRuntimeEndpoint: unix://{socket}
podLogsDir: {dir}/pod-logs
volumePluginDir: {dir}/volume-plugins
# Else a KUBE-FIREWALL rule dropping 127/8 is left behind.
makeIPTablesUtilChains: false
# Without CAP_SYS_RESOURCE the kubelet cannot lower its own score.
oomScoreAdj: 0
resolvConf: {resolv}
address: {address}
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
# The apiserver reaches the kubelet (logs, exec) without a client certificate.
authentication:
  anonymous: {{enabled: true}}
  webhook: {{enabled: false}}
authorization:
  mode: AlwaysAllow
# Several kubelets share one disk and its free space: never evict for it.
evictionHard:
  memory.available: "1Mi"
  nodefs.available: "0%"
  imagefs.available: "0%"
  nodefs.inodesFree: "0%"
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
maxPods: 30
"#,
            cgroup = self.cgroup,
            socket = self.containerd_socket.display(),
            dir = self.dir.display(),
            resolv = resolv.display(),
            address = self.spec.address,
        );
        let config_path = self.write("kubelet.yaml", &config)?;
        let mut cmd = Command::new(kubelet);
        cmd.args([
            format!("--config={}", config_path.display()),
            format!("--kubeconfig={}", kubeconfig.display()),
            "--cloud-provider=external".to_string(),
            format!("--node-ip={}", self.spec.address),
            format!("--hostname-override={}", self.spec.name),
            format!("--root-dir={}", self.dir.join("kubelet").display()),
            format!("--cert-dir={}", self.dir.join("kubelet/pki").display()),
        ]);
        cmd.args(&self.spec.kubelet_args);
        self.kubelet_launch = Some((
            kubeconfig.to_path_buf(),
            placement.clone(),
            kubelet.to_path_buf(),
        ));
        let name = format!("kubelet ({})", self.spec.name);
        self.kubelet = Some(Supervised::spawn_placed(
            &name,
            cmd,
            &self.dir.join("kubelet.log"),
            placement,
        )?);
        Ok(())
    }

    fn start_kube_proxy(
        &mut self,
        kubeconfig: &Path,
        placement: &Placement,
        kube_proxy: &Path,
    ) -> Result<(), Error> {
        let config = format!(
            r#"apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: {kubeconfig}
hostnameOverride: {name}
mode: iptables
clusterCIDR: {POD_CIDR}
bindAddress: 0.0.0.0
# The load balancer's health checks for externalTrafficPolicy: Local come here.
healthzBindAddress: 0.0.0.0:10256
metricsBindAddress: 127.0.0.1:10249
# Conntrack limits are the host's (not per namespace): leave them alone.
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
"#,
            kubeconfig = kubeconfig.display(),
            name = self.spec.name,
        );
        let config_path = self.write("kube-proxy.yaml", &config)?;
        let mut cmd = Command::new(kube_proxy);
        cmd.arg(format!("--config={}", config_path.display()));
        let name = format!("kube-proxy ({})", self.spec.name);
        self.kube_proxy = Some(Supervised::spawn_placed(
            &name,
            cmd,
            &self.dir.join("kube-proxy.log"),
            placement,
        )?);
        Ok(())
    }

    /// Fails with the log of whichever of the node's processes has exited.
    pub(crate) fn check_alive(&mut self) -> Result<(), Error> {
        for process in [
            &mut self.containerd,
            &mut self.kubelet,
            &mut self.kube_proxy,
        ]
        .into_iter()
        .flatten()
        {
            process.check_running()?;
        }
        Ok(())
    }

    /// Stops the kubelet alone, as a machine that went away: its Node goes
    /// NotReady, its containers are left as they were.
    pub(crate) fn stop_kubelet(&mut self) {
        self.kubelet.take();
    }

    /// Stops the kubelet and starts it again with the same configuration,
    /// as a kubelet upgrade or a crash-restart does: Pods keep running.
    pub(crate) fn restart_kubelet(&mut self) -> Result<(), Error> {
        self.kubelet.take();
        let (kubeconfig, placement, kubelet) = self
            .kubelet_launch
            .clone()
            .expect("the kubelet was started");
        self.start_kubelet(&kubeconfig, &placement, &kubelet)
    }
}

impl Drop for RunningNode {
    fn drop(&mut self) {
        self.kube_proxy.take();
        self.kubelet.take();
        self.containerd.take();
        // Shims and containers outlive containerd: the cgroup tree finds them.
        cgroups::kill_and_remove(&self.cgroup);
    }
}
