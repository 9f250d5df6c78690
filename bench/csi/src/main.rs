//! CSI provisioning benchmark (`make bench-csi`): how fast claims become
//! Bound and their Pods Running, and how much memory the provisioning side
//! takes, for overcast-csi (the driver and the upstream external-provisioner
//! beside it, as its DaemonSet runs them) and for rancher's
//! local-path-provisioner, the provisioner the users run today
//! (csi-driver-host-path and TopoLVM cannot be had here: the Go module proxy
//! refuses both).
//!
//! One real node. For each provisioner, in a namespace of its own: N claims
//! of a WaitForFirstConsumer class and N Pods using them are created at once;
//! the scheduler places the Pods, the provisioner makes the volumes, the
//! kubelet mounts them. Measured: each claim's time from its creation to
//! Bound (polled every 50 ms), the time until all are Bound and all Pods
//! Running, the time to delete Pods and claims until no PV of the class is
//! left, and the peak RSS (VmHWM) of each provisioning process.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::{CSINode, CSIStorageCapacity};
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use overcast_testenv::Cluster;

const POLL: Duration = Duration::from_millis(50);
const WAIT: Duration = Duration::from_secs(300);
const NODE: &str = "node-1";

struct Args {
    csi: PathBuf,
    local_path: Option<PathBuf>,
    claims: usize,
    out: Option<PathBuf>,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        csi: PathBuf::new(),
        local_path: None,
        claims: 30,
        out: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--csi" => a.csi = value()?.into(),
            "--local-path" => a.local_path = Some(value()?.into()),
            "--claims" => a.claims = value()?.parse().context("--claims")?,
            "--out" => a.out = Some(value()?.into()),
            other => bail!("unknown flag {other}"),
        }
    }
    if a.csi.as_os_str().is_empty() {
        bail!("--csi <overcast-csi binary> is required");
    }
    if !(1..=200).contains(&a.claims) {
        bail!("--claims must be 1 to 200 (the node takes 250 Pods, helper Pods included)");
    }
    Ok(a)
}

/// A process of the benchmark, killed when dropped; its log in `dir`.
struct Process {
    name: String,
    child: Child,
}

impl Process {
    fn spawn(name: &str, mut command: Command, dir: &Path) -> anyhow::Result<Process> {
        let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
        let child = command
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Process {
            name: name.to_string(),
            child,
        })
    }

    /// VmHWM, the peak resident set, in KiB.
    fn peak_rss_kib(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .with_context(|| format!("{} is not running", self.name))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("VmHWM in /proc/PID/status")
    }

    fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited: {status}", self.name);
        }
        Ok(())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn eventually<T, F, Fut>(what: &str, check: F) -> anyhow::Result<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {WAIT:?} waiting for {what}");
        }
        tokio::time::sleep(POLL).await;
    }
}

struct Measured {
    provisioner: String,
    bound: Vec<Duration>,
    all_bound: Duration,
    all_running: Duration,
    all_deleted: Duration,
    /// (process, peak RSS in KiB)
    memory: Vec<(String, u64)>,
}

fn object<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).expect("a valid object")
}

/// Creates the claims and Pods in `namespace` at once and measures them
/// until all are Bound and Running, then deletes them until no PV of
/// `class` is left.
async fn provision(
    client: &kube::Client,
    namespace: &str,
    class: &str,
    claims: usize,
    provisioner: &str,
    processes: &mut [Process],
) -> anyhow::Result<Measured> {
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let started = Instant::now();
    let mut created = Vec::with_capacity(claims);
    for i in 0..claims {
        let name = format!("claim-{i}");
        created.push(Instant::now());
        pvcs.create(
            &PostParams::default(),
            &object(serde_json::json!({
                "metadata": {"name": name},
                "spec": {"storageClassName": class, "accessModes": ["ReadWriteOnce"],
                         "resources": {"requests": {"storage": "64Mi"}}},
            })),
        )
        .await?;
        pods.create(
            &PostParams::default(),
            &object(serde_json::json!({
                "metadata": {"name": format!("pod-{i}")},
                "spec": {
                    "tolerations": [{"operator": "Exists"}],
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{
                        "name": "app", "image": overcast_testenv::cluster::ECHO_SERVER,
                        "imagePullPolicy": "Never",
                        "command": ["/bin/sh", "-c", "echo ok > /data/file && sleep 3600"],
                        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                    }],
                    "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": name}}],
                },
            })),
        )
        .await?;
    }
    let mut bound: Vec<Option<Duration>> = vec![None; claims];
    let deadline = Instant::now() + WAIT;
    while bound.iter().any(Option::is_none) {
        for p in processes.iter_mut() {
            p.check_running()?;
        }
        if Instant::now() > deadline {
            bail!("claims not Bound after {WAIT:?}");
        }
        for pvc in pvcs.list(&ListParams::default()).await?.items {
            let phase = pvc.status.and_then(|s| s.phase);
            let i: usize = pvc
                .metadata
                .name
                .as_deref()
                .and_then(|n| n.strip_prefix("claim-"))
                .and_then(|n| n.parse().ok())
                .context("a claim of the benchmark")?;
            if phase.as_deref() == Some("Bound") && bound[i].is_none() {
                bound[i] = Some(created[i].elapsed());
            }
        }
        tokio::time::sleep(POLL).await;
    }
    let all_bound = started.elapsed();
    eventually("every Pod Running", || async {
        let list = pods.list(&ListParams::default()).await.ok()?;
        (list.items.len() == claims
            && list
                .items
                .iter()
                .all(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")))
        .then_some(())
    })
    .await?;
    let all_running = started.elapsed();

    let deleting = Instant::now();
    pods.delete_collection(&DeleteParams::default(), &ListParams::default())
        .await?;
    eventually("the Pods gone", || async {
        pods.list(&ListParams::default())
            .await
            .ok()?
            .items
            .is_empty()
            .then_some(())
    })
    .await?;
    pvcs.delete_collection(&DeleteParams::default(), &ListParams::default())
        .await?;
    eventually("every PV of the class deleted", || async {
        let list = pvs.list(&ListParams::default()).await.ok()?;
        (!list.items.iter().any(|pv| {
            pv.spec
                .as_ref()
                .and_then(|s| s.storage_class_name.as_deref())
                == Some(class)
        }))
        .then_some(())
    })
    .await?;
    let all_deleted = deleting.elapsed();
    Ok(Measured {
        provisioner: provisioner.to_string(),
        bound: bound.into_iter().map(|b| b.expect("all bound")).collect(),
        all_bound,
        all_running,
        all_deleted,
        memory: peak_memory(processes)?,
    })
}

fn namespace(cluster: &Cluster, name: &str) -> anyhow::Result<()> {
    cluster
        .plane()
        .kubectl_apply(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}}}\n"
        ))
        .with_context(|| format!("namespace {name}"))
}

/// overcast-csi as its DaemonSet runs it: the driver registered with the
/// kubelet, and external-provisioner beside it with the manifest's flags.
async fn overcast(cluster: &Cluster, args: &Args) -> anyhow::Result<Measured> {
    let plane = cluster.plane();
    let client = plane.client().await?;
    let dir = cluster.dir().join("bench-overcast-csi");
    std::fs::create_dir_all(&dir)?;
    let manifest = std::fs::read_to_string(
        overcast_testenv::workspace_root().join("deploy/csi/overcast-csi.yaml"),
    )?;
    let csi_driver = manifest
        .split("\n---\n")
        .find(|doc| doc.contains("\nkind: CSIDriver\n"))
        .context("deploy/csi/overcast-csi.yaml has a CSIDriver")?;
    plane.kubectl_apply(csi_driver)?;
    plane.kubectl_apply(
        "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {name: bench-overcast}\n\
         provisioner: local.csi.overcast.dev\nvolumeBindingMode: WaitForFirstConsumer\nreclaimPolicy: Delete\n",
    )?;
    let kubelet = cluster.dir().join(NODE).join("kubelet");
    let socket = kubelet.join("plugins/local.csi.overcast.dev/csi.sock");
    let mut driver = Command::new(&args.csi);
    driver
        .arg(format!("--endpoint=unix://{}", socket.display()))
        .arg(format!("--node-id={NODE}"))
        .arg(format!("--state-dir={}", dir.join("state").display()))
        .arg(format!(
            "--registration-dir={}",
            kubelet.join("plugins_registry").display()
        ));
    let driver = Process::spawn("overcast-csi", driver, &dir)?;
    eventually("the driver's socket", || async {
        socket.exists().then_some(())
    })
    .await?;
    let mut provisioner = Command::new(overcast_testenv::bin_dir().join("csi-provisioner"));
    provisioner
        .arg(format!("--csi-address={}", socket.display()))
        .arg(format!(
            "--kubeconfig={}",
            plane.kubeconfig_path().display()
        ))
        .args([
            "--node-deployment",
            "--strict-topology",
            "--extra-create-metadata",
            "--enable-capacity",
            // No Pod owns this process.
            "--capacity-ownerref-level=-1",
            "--leader-election=false",
        ])
        .env("NODE_NAME", NODE)
        .env("NAMESPACE", "kube-system");
    let provisioner = Process::spawn("csi-provisioner", provisioner, &dir)?;
    let csi_nodes: Api<CSINode> = Api::all(client.clone());
    eventually("the driver registered", || async {
        let node = csi_nodes.get(NODE).await.ok()?;
        node.spec
            .drivers
            .iter()
            .any(|d| d.name == "local.csi.overcast.dev")
            .then_some(())
    })
    .await?;
    let capacities: Api<CSIStorageCapacity> = Api::namespaced(client.clone(), "kube-system");
    eventually("CSIStorageCapacity for the class", || async {
        let list = capacities.list(&ListParams::default()).await.ok()?;
        list.items
            .iter()
            .any(|c| c.storage_class_name == "bench-overcast")
            .then_some(())
    })
    .await?;
    namespace(cluster, "bench-overcast")?;
    let mut processes = [driver, provisioner];
    provision(
        &client,
        "bench-overcast",
        "bench-overcast",
        args.claims,
        "overcast-csi + external-provisioner v6.4.0",
        &mut processes,
    )
    .await
}

/// rancher's local-path-provisioner, as its deploy/local-path-storage.yaml
/// runs it (its helper Pods made of the node image, which has busybox).
async fn local_path(cluster: &Cluster, binary: &Path, args: &Args) -> anyhow::Result<Measured> {
    let plane = cluster.plane();
    let client = plane.client().await?;
    let dir = cluster.dir().join("bench-local-path");
    std::fs::create_dir_all(&dir)?;
    let volumes = dir.join("volumes");
    std::fs::create_dir_all(&volumes)?;
    namespace(cluster, "local-path-storage")?;
    let config = dir.join("config.json");
    std::fs::write(
        &config,
        serde_json::json!({"nodePathMap": [{"node": "DEFAULT_PATH_FOR_NON_LISTED_NODES",
                                            "paths": [volumes.display().to_string()]}]})
        .to_string(),
    )?;
    let image = overcast_testenv::cluster::ECHO_SERVER;
    let helper_pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: helper-pod\nspec:\n  tolerations: [{{operator: Exists}}]\n  \
         containers:\n  - name: helper-pod\n    image: {image}\n    imagePullPolicy: Never\n"
    );
    let helper_file = dir.join("helperPod.yaml");
    std::fs::write(&helper_file, &helper_pod)?;
    // The helper Pods run the setup and teardown scripts from this ConfigMap.
    plane.kubectl_apply(&serde_json::to_string(&serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "local-path-config", "namespace": "local-path-storage"},
        "data": {
            "setup": "#!/bin/sh\nset -eu\nmkdir -m 0777 -p \"$VOL_DIR\"",
            "teardown": "#!/bin/sh\nset -eu\nrm -rf \"$VOL_DIR\"",
            "helperPod.yaml": helper_pod,
        },
    }))?)?;
    plane.kubectl_apply(
        "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {name: bench-local-path}\n\
         provisioner: rancher.io/local-path\nvolumeBindingMode: WaitForFirstConsumer\nreclaimPolicy: Delete\n",
    )?;
    let mut command = Command::new(binary);
    command
        .arg("start")
        .arg(format!(
            "--kubeconfig={}",
            plane.kubeconfig_path().display()
        ))
        .args(["--namespace", "local-path-storage"])
        .args(["--provisioner-name", "rancher.io/local-path"])
        .args(["--configmap-name", "local-path-config"])
        .args(["--service-account-name", "default"])
        .args(["--helper-image", image])
        .arg(format!("--config={}", config.display()))
        .arg(format!("--helper-pod-file={}", helper_file.display()));
    let provisioner = Process::spawn("local-path-provisioner", command, &dir)?;
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(client.clone(), "local-path-storage");
    eventually("the default ServiceAccount", || async {
        accounts.get_opt("default").await.ok()?.map(|_| ())
    })
    .await?;
    namespace(cluster, "bench-local-path")?;
    let mut processes = [provisioner];
    provision(
        &client,
        "bench-local-path",
        "bench-local-path",
        args.claims,
        "local-path-provisioner v0.0.30",
        &mut processes,
    )
    .await
}

fn peak_memory(processes: &[Process]) -> anyhow::Result<Vec<(String, u64)>> {
    processes
        .iter()
        .map(|p| Ok((p.name.clone(), p.peak_rss_kib()?)))
        .collect()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn report(results: &[Measured], claims: usize) -> String {
    let mut out = format!(
        "{claims} claims (64Mi, WaitForFirstConsumer) and {claims} Pods created at once on one real node.\n\n\
         | provisioner | claim → Bound p50 | p90 | max | all Bound | all Pods Running | Pods and claims deleted, PVs gone | peak RSS |\n\
         |---|---|---|---|---|---|---|---|\n"
    );
    for m in results {
        let mut sorted = m.bound.clone();
        sorted.sort();
        let memory: Vec<String> = m
            .memory
            .iter()
            .map(|(name, kib)| format!("{name} {:.1} MiB", *kib as f64 / 1024.0))
            .collect();
        out += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            m.provisioner,
            secs(percentile(&sorted, 50.0)),
            secs(percentile(&sorted, 90.0)),
            secs(*sorted.last().expect("at least one claim")),
            secs(m.all_bound),
            secs(m.all_running),
            secs(m.all_deleted),
            memory.join(", "),
        );
    }
    out
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args()?;
    // The test cluster's kubelets take 30 Pods; here the claims' Pods and
    // local-path-provisioner's helper Pods must all fit at once.
    let mut options = overcast_testenv::ClusterOptions::nodes(1);
    options.nodes[0].kubelet_args.push("--max-pods=250".into());
    let cluster = Cluster::start_with(&options)
        .await
        .context("the real-node cluster (root; `make testenv-cluster`)")?;
    let mut results = vec![overcast(&cluster, &args).await?];
    if let Some(binary) = &args.local_path {
        results.push(local_path(&cluster, binary, &args).await?);
    }
    let text = report(&results, args.claims);
    print!("{text}");
    if let Some(out) = &args.out {
        use std::io::Write as _;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(out)?
            .write_all(format!("{text}\n").as_bytes())?;
    }
    cluster.stop();
    Ok(())
}
