//! A driver process for the tests: overcast-csi on a socket in a temporary
//! directory, and checks that it left nothing on the node.
#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

pub struct Driver {
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    /// Where the CSI socket is, if not in `dir`.
    socket: Option<PathBuf>,
    node: String,
    extra: Vec<String>,
}

impl Driver {
    /// Starts overcast-csi for node `node-a` with its state under a new
    /// temporary directory; `env` is passed to it (e.g. a crash point).
    pub fn start(env: &[(&str, &str)]) -> Driver {
        let dir = tempfile::Builder::new()
            .prefix("overcast-csi-")
            .tempdir()
            .expect("temp dir");
        let mut driver = Driver {
            dir,
            child: None,
            socket: None,
            node: "node-a".into(),
            extra: Vec::new(),
        };
        driver.restart(env);
        driver
    }

    pub fn socket(&self) -> PathBuf {
        self.socket
            .clone()
            .unwrap_or_else(|| self.dir.path().join("csi.sock"))
    }

    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("driver.log")).unwrap_or_default()
    }

    /// Starts overcast-csi as a node's plugin: its socket in the kubelet's
    /// plugins directory under `kubelet_root`, registered through its
    /// plugins_registry, as the DaemonSet deploys it.
    pub fn start_for_kubelet(node: &str, kubelet_root: &Path) -> Driver {
        let dir = tempfile::Builder::new()
            .prefix("overcast-csi-")
            .tempdir()
            .expect("temp dir");
        let socket = kubelet_root.join("plugins/local.csi.overcast.dev/csi.sock");
        let mut driver = Driver {
            dir,
            child: None,
            socket: Some(socket.clone()),
            node: node.to_string(),
            extra: vec![
                "--registration-dir".into(),
                kubelet_root.join("plugins_registry").display().to_string(),
            ],
        };
        driver.restart(&[]);
        driver
    }

    /// Starts overcast-csi with more flags (state under a new temporary directory).
    pub fn start_with_args(args: &[&str]) -> Driver {
        let dir = tempfile::Builder::new()
            .prefix("overcast-csi-")
            .tempdir()
            .expect("temp dir");
        let extra = args.iter().map(|a| a.to_string()).collect();
        let mut driver = Driver {
            dir,
            child: None,
            socket: None,
            node: "node-a".into(),
            extra,
        };
        driver.restart(&[]);
        driver
    }

    /// (Re)starts the process on the same state and socket.
    pub fn restart(&mut self, env: &[(&str, &str)]) {
        self.stop();
        let _ = std::fs::remove_file(self.socket());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("driver.log"))
            .expect("driver log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_overcast-csi"));
        command
            .arg("--endpoint")
            .arg(format!("unix://{}", self.socket().display()))
            .arg("--node-id")
            .arg(&self.node)
            .arg("--state-dir")
            .arg(self.state())
            .args(&self.extra)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log);
        self.child = Some(command.spawn().expect("overcast-csi starts"));
        for _ in 0..200 {
            // Accepting, not only there: bind(2) makes the file before
            // listen(2), and a connect in between is refused.
            if std::os::unix::net::UnixStream::connect(self.socket()).is_ok() {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("overcast-csi exited at start ({status}):\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!(
            "overcast-csi did not accept on its socket in 5 s:\n{}",
            self.log()
        );
    }

    /// Waits for the process to end by itself (a crash point aborts it).
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("driver runs");
        for _ in 0..400 {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let _ = child.kill();
        panic!("overcast-csi did not exit in 10 s:\n{}", self.log());
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.stop();
        // Whatever a failed test left mounted or attached under its directory.
        for mount in mounts_under(self.dir.path()).into_iter().rev() {
            let _ = Command::new("umount").arg("-l").arg(&mount).status();
        }
        for dev in loop_devices_under(self.dir.path()) {
            let _ = Command::new("losetup").arg("-d").arg(&dev).status();
        }
    }
}

/// Mount points under `dir`, from mountinfo.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect()
}

/// Loop devices whose backing file is under `dir`.
pub fn loop_devices_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/sys/block")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Ok(backing) = std::fs::read_to_string(entry.path().join("loop/backing_file"))
            && Path::new(backing.trim_end()).starts_with(dir)
        {
            found.push(format!("/dev/{name}"));
        }
    }
    found
}

/// The entries of a state subdirectory (volumes, snapshots, staging, deleting).
pub fn entries(state: &Path, sub: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(state.join(sub))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// A sidecar (or any helper) process, killed when dropped; its output in a
/// log file beside it.
pub struct Process {
    pub name: String,
    child: Child,
    log: PathBuf,
}

impl Process {
    pub fn spawn(name: &str, mut command: Command, log_dir: &Path) -> Process {
        let log = log_dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        command
            .stdout(file.try_clone().expect("log file"))
            .stderr(file);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Process {
            name: name.to_string(),
            child,
            log,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics with the log if the process has exited.
    pub fn check_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited ({status}):\n{}", self.name, self.log());
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A gRPC channel to a driver's unix socket.
pub async fn connect(socket: &Path) -> tonic::transport::Channel {
    let socket = socket.to_path_buf();
    tonic::transport::Endpoint::from_static("http://overcast-csi.invalid")
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                tokio::net::UnixStream::connect(socket)
                    .await
                    .map(hyper_util::rt::TokioIo::new)
            }
        }))
        .await
        .expect("connects to the driver's socket")
}

/// A single-node-writer filesystem capability (`fs_type` "" for the default).
pub fn fs_capability(fs_type: &str) -> overcast_csi::proto::VolumeCapability {
    use overcast_csi::proto::volume_capability::{
        AccessMode, AccessType, MountVolume, access_mode::Mode,
    };
    overcast_csi::proto::VolumeCapability {
        access_mode: Some(AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
        access_type: Some(AccessType::Mount(MountVolume {
            fs_type: fs_type.into(),
            ..Default::default()
        })),
    }
}

/// A Pod running `script` with claim `claim` at /data, on `node` if named.
pub fn pod(
    name: &str,
    node: Option<&str>,
    claim: &str,
    script: &str,
) -> k8s_openapi::api::core::v1::Pod {
    let mut spec = serde_json::json!({
        // No CCM runs here: the nodes keep the uninitialized taint.
        "tolerations": [{"operator": "Exists"}],
        "terminationGracePeriodSeconds": 1,
        "containers": [{
            "name": "app",
            "image": overcast_testenv::cluster::ECHO_SERVER,
            "imagePullPolicy": "Never",
            "command": ["/bin/sh", "-c", script],
            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
        }],
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}],
    });
    if let Some(node) = node {
        spec["nodeSelector"] = serde_json::json!({"kubernetes.io/hostname": node});
    }
    serde_json::from_value(serde_json::json!({"metadata": {"name": name}, "spec": spec})).unwrap()
}

/// A Pod's log so far ("" while it has none).
pub async fn logs_of(pods: &kube::Api<k8s_openapi::api::core::v1::Pod>, name: &str) -> String {
    pods.logs(name, &kube::api::LogParams::default())
        .await
        .unwrap_or_default()
}

/// deploy/csi/overcast-csi.yaml, the manifest a user applies: its objects.
pub fn shipped_manifest() -> Vec<serde_json::Value> {
    let path = overcast_testenv::workspace_root().join("deploy/csi/overcast-csi.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let docs: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

/// The shipped manifest's one object of `kind`.
pub fn shipped_object<T: serde::de::DeserializeOwned>(kind: &str) -> T {
    let object = shipped_manifest()
        .into_iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("deploy/csi/overcast-csi.yaml has no {kind}"));
    serde_json::from_value(object).unwrap()
}

/// The snapshot CRDs `make testenv` copied from external-snapshotter's
/// client module, applied as a user installs them before the driver.
pub fn apply_snapshot_crds(plane: &overcast_testenv::ControlPlane) {
    let crds = overcast_testenv::bin_dir().join("snapshot-crds");
    let mut files: Vec<_> = std::fs::read_dir(&crds)
        .expect("snapshot CRDs (run `make testenv`)")
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    for file in files {
        plane
            .kubectl_apply(&std::fs::read_to_string(&file).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    }
}

/// `count` nodes whose kubelets re-sync their Pods every 5 s instead of
/// every minute: a kubelet grows a claim's filesystem online when it next
/// syncs the Pod using it (volume manager), which would take the test a
/// minute otherwise.
pub fn quick_sync_nodes(count: usize) -> overcast_testenv::ClusterOptions {
    let mut options = overcast_testenv::ClusterOptions::nodes(count);
    for node in &mut options.nodes {
        node.kubelet_args.push("--sync-frequency=5s".into());
    }
    options
}

/// A ReadWriteOnce claim of `class`, restored from VolumeSnapshot `snapshot` if named.
pub fn claim(
    name: &str,
    class: &str,
    size: &str,
    snapshot: Option<&str>,
) -> k8s_openapi::api::core::v1::PersistentVolumeClaim {
    let mut spec = serde_json::json!({
        "accessModes": ["ReadWriteOnce"],
        "storageClassName": class,
        "resources": {"requests": {"storage": size}},
    });
    if let Some(snapshot) = snapshot {
        spec["dataSource"] = serde_json::json!({"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": snapshot});
    }
    serde_json::from_value(serde_json::json!({"metadata": {"name": name}, "spec": spec})).unwrap()
}

/// Bytes of a quantity as the apiserver writes capacities (`400Mi`, `2Gi`, `1024`).
pub fn quantity_bytes(q: &str) -> i64 {
    let digits: String = q.chars().take_while(char::is_ascii_digit).collect();
    let unit = &q[digits.len()..];
    digits.parse::<i64>().unwrap()
        * match unit {
            "Ki" => 1 << 10,
            "Mi" => 1 << 20,
            "Gi" => 1 << 30,
            _ => 1,
        }
}

type Pods = kube::Api<k8s_openapi::api::core::v1::Pod>;
type Claims = kube::Api<k8s_openapi::api::core::v1::PersistentVolumeClaim>;

/// Runs Pod `name` that writes `text` to the claim's /data/file, and waits
/// until it has; the Pod then.
pub async fn write_file(
    pods: &Pods,
    name: &str,
    node: Option<&str>,
    claim: &str,
    text: &str,
) -> k8s_openapi::api::core::v1::Pod {
    let script = format!("echo {text} > /data/file && sync && echo done && sleep 3600");
    pods.create(&Default::default(), &pod(name, node, claim, &script))
        .await
        .unwrap();
    overcast_testenv::eventually(&format!("{name} wrote its file"), E2E_WAIT, || async {
        logs_of(pods, name).await.contains("done").then_some(())
    })
    .await;
    pods.get(name).await.unwrap()
}

/// Runs Pod `name` that prints the claim's /data/file; what it printed.
pub async fn read_file(pods: &Pods, name: &str, node: Option<&str>, claim: &str) -> String {
    pods.create(
        &Default::default(),
        &pod(name, node, claim, "cat /data/file && sleep 3600"),
    )
    .await
    .unwrap();
    overcast_testenv::eventually(&format!("{name} printed the file"), E2E_WAIT, || async {
        let logs = logs_of(pods, name).await;
        (!logs.is_empty()).then(|| logs.trim().to_string())
    })
    .await
}

/// How long the end-to-end tests wait for the cluster to act.
pub const E2E_WAIT: Duration = Duration::from_secs(120);

/// Asks for claim `name` to be `size` and waits until its status says so
/// (the resizer recorded it and the kubelet grew the filesystem).
pub async fn grow(claims: &Claims, name: &str, size: &str) {
    claims
        .patch(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(
                serde_json::json!({"spec": {"resources": {"requests": {"storage": size}}}}),
            ),
        )
        .await
        .unwrap();
    let wanted = quantity_bytes(size);
    overcast_testenv::eventually(&format!("claim {name} at {size}"), E2E_WAIT, || async {
        let claim = claims.get(name).await.ok()?;
        let capacity = claim.status?.capacity?.get("storage")?.0.clone();
        (quantity_bytes(&capacity) >= wanted).then_some(())
    })
    .await;
}

/// The VolumeSnapshots of `namespace`.
pub fn snapshots(client: &kube::Client, namespace: &str) -> kube::Api<kube::api::DynamicObject> {
    kube::Api::namespaced_with(
        client.clone(),
        namespace,
        &kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
            "snapshot.storage.k8s.io",
            "v1",
            "VolumeSnapshot",
        )),
    )
}

/// Takes VolumeSnapshot `name` of `claim` with `class`; whether it became
/// ready to use within the wait.
pub async fn snapshot(
    snapshots: &kube::Api<kube::api::DynamicObject>,
    name: &str,
    claim: &str,
    class: &str,
) -> bool {
    let object: kube::api::DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
        "metadata": {"name": name},
        "spec": {"volumeSnapshotClassName": class, "source": {"persistentVolumeClaimName": claim}},
    }))
    .unwrap();
    snapshots
        .create(&Default::default(), &object)
        .await
        .unwrap();
    overcast_testenv::wait_until(&format!("snapshot {name} ready"), E2E_WAIT, || async {
        let s = snapshots.get(name).await.ok()?;
        (s.data["status"]["readyToUse"] == serde_json::json!(true)).then_some(())
    })
    .await
    .is_ok()
}

/// Deletes the Pods and waits until they are gone.
pub async fn delete_pods(pods: &Pods, names: &[&str]) {
    for name in names {
        pods.delete(name, &Default::default()).await.unwrap();
    }
    overcast_testenv::eventually(&format!("Pods {names:?} gone"), E2E_WAIT, || async {
        for name in names {
            pods.get_opt(name).await.ok()?.is_none().then_some(())?;
        }
        Some(())
    })
    .await;
}

/// The driver's entry in `node`'s CSINode, once the kubelet has registered it.
pub async fn registered_driver(
    client: &kube::Client,
    node: &str,
) -> k8s_openapi::api::storage::v1::CSINodeDriver {
    let csi_nodes: kube::Api<k8s_openapi::api::storage::v1::CSINode> =
        kube::Api::all(client.clone());
    overcast_testenv::eventually(
        &format!(
            "{node}'s CSINode lists {}",
            overcast_csi::DEFAULT_DRIVER_NAME
        ),
        E2E_WAIT,
        || async {
            let csi_node = csi_nodes.get(node).await.ok()?;
            csi_node
                .spec
                .drivers
                .into_iter()
                .find(|d| d.name == overcast_csi::DEFAULT_DRIVER_NAME)
        },
    )
    .await
}

/// Deletes the Pods (waiting until they are gone), then the snapshots and the claims.
pub async fn delete_all(
    (pods, pod_names): (&Pods, &[&str]),
    (snapshots, snapshot_names): (&kube::Api<kube::api::DynamicObject>, &[&str]),
    (claims, claim_names): (&Claims, &[&str]),
) {
    delete_pods(pods, pod_names).await;
    for name in snapshot_names {
        snapshots.delete(name, &Default::default()).await.unwrap();
    }
    for name in claim_names {
        claims.delete(name, &Default::default()).await.unwrap();
    }
}
