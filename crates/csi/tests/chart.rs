//! deploy/helm/overcast-csi, as a user installs it: `helm lint`, the values
//! schema refusing what it does not know, deploy/csi/overcast-csi.yaml being
//! the chart's default render, and the chart installed with `helm install`
//! on the real-node cluster from images built here (the driver with its host tools, the
//! upstream sidecars): the DaemonSet's driver registers with its kubelet from
//! inside its Pod, publishes capacity, a claim the driver refuses or that fits
//! no node says why, a non-root Pod's fsGroup owns its volume, and a claim is provisioned where the scheduler put its Pod, grown, snapshotted and restored, and deleted again
//! without a volume or loop device left on the node; `helm uninstall`
//! removes the driver.
//! Needs root (the real-node cluster) and `make testenv` (helm, the sidecars).

mod common;

use k8s_openapi::api::{
    core::v1::{Event, PersistentVolume, PersistentVolumeClaim, Pod},
    storage::v1::{CSINode, CSIStorageCapacity},
};
use kube::{
    Api,
    api::{DeleteParams, ListParams, PostParams},
};
use overcast_testenv::{Cluster, eventually};
use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

const SOON: Duration = common::E2E_WAIT;
/// The chart's StorageClass and VolumeSnapshotClass.
const CLASS: &str = "overcast-local";
const DRIVER: &str = overcast_csi::DEFAULT_DRIVER_NAME;

fn chart() -> PathBuf {
    overcast_testenv::workspace_root().join("deploy/helm/overcast-csi")
}

fn helm_output(args: &[&str]) -> Output {
    let helm = overcast_testenv::bin_dir().join("helm");
    assert!(
        helm.is_file(),
        "{} missing: run `make testenv`",
        helm.display()
    );
    Command::new(helm).args(args).output().unwrap()
}

fn helm(args: &[&str]) -> String {
    let out = helm_output(args);
    assert!(
        out.status.success(),
        "helm {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The chart rendered as release overcast-csi in kube-system with `sets`.
fn render(sets: &[&str]) -> String {
    let chart = chart();
    let mut args = vec![
        "template",
        "overcast-csi",
        chart.to_str().unwrap(),
        "--namespace",
        "kube-system",
    ];
    for set in sets {
        args.extend(["--set", set]);
    }
    helm(&args)
}

fn objects(rendered: &str) -> Vec<serde_json::Value> {
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(rendered).unwrap();
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

fn containers(objects: &[serde_json::Value], kind: &str) -> Vec<serde_json::Value> {
    objects
        .iter()
        .filter(|o| o["kind"] == kind)
        .flat_map(|o| {
            o["spec"]["template"]["spec"]["containers"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .collect()
}

fn args_of(container: &serde_json::Value) -> Vec<String> {
    container["args"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect()
}

#[test]
fn the_chart_lints_and_its_default_render_is_the_shipped_manifest() {
    helm(&["lint", "--strict", chart().to_str().unwrap()]);

    // The plain manifest is the chart's defaults, so the two cannot drift.
    let script = overcast_testenv::workspace_root().join("testenv/render-csi-manifest.sh");
    let out = Command::new("bash").arg(&script).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shipped = std::fs::read_to_string(
        overcast_testenv::workspace_root().join("deploy/csi/overcast-csi.yaml"),
    )
    .unwrap();
    assert!(
        String::from_utf8(out.stdout).unwrap() == shipped,
        "deploy/csi/overcast-csi.yaml is not the chart's default render: run `make csi-manifest`"
    );

    // A value the chart does not know, or a wrong one, is refused by name.
    for (set, expected) in [
        (
            "storageClas.create=false",
            "additional properties 'storageClas'",
        ),
        ("defaultFsType=btrfs", "/defaultFsType"),
        ("kubeletDir=var/lib/kubelet", "/kubeletDir"),
        (
            "sidecars.provisioner.image.tags=v1",
            "additional properties 'tags'",
        ),
    ] {
        let chart = chart();
        let out = helm_output(&["template", "x", chart.to_str().unwrap(), "--set", set]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{set} rendered");
        assert!(stderr.contains(expected), "{set}: {stderr}");
    }

    // The kubelet's directory moves every path the kubelet and driver share.
    let moved = objects(&render(&["kubeletDir=/var/lib/k0s/kubelet"]));
    let driver = containers(&moved, "DaemonSet")
        .into_iter()
        .find(|c| c["name"] == "overcast-csi")
        .unwrap();
    assert!(
        args_of(&driver).contains(
            &"--kubelet-registration-path=/var/lib/k0s/kubelet/plugins/local.csi.overcast.dev/csi.sock"
                .to_string()
        ),
        "{driver}"
    );
    let daemonset = moved.iter().find(|o| o["kind"] == "DaemonSet").unwrap();
    let host_paths: Vec<&str> = daemonset["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["hostPath"]["path"].as_str())
        .collect();
    assert_eq!(
        host_paths,
        [
            "/var/lib/k0s/kubelet/plugins/local.csi.overcast.dev",
            "/var/lib/k0s/kubelet/plugins_registry",
            "/var/lib/k0s/kubelet",
            "/dev",
            "/var/lib/overcast-csi",
        ]
    );

    // Without snapshots: no snapshotter, no class, no controller (a cluster
    // without the snapshot CRDs installs the rest).
    let without = objects(&render(&["snapshots.enabled=false"]));
    let kinds: Vec<&str> = without.iter().filter_map(|o| o["kind"].as_str()).collect();
    assert!(!kinds.contains(&"VolumeSnapshotClass"), "{kinds:?}");
    assert!(!kinds.contains(&"Deployment"), "{kinds:?}");
    let names: Vec<String> = containers(&without, "DaemonSet")
        .iter()
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect();
    assert_eq!(names, ["overcast-csi", "csi-provisioner", "csi-resizer"]);
}

/// An image of `binaries` (the first is the entrypoint) for every node.
fn import_image(cluster: &Cluster, dir: &Path, name: &str, binaries: &[&Path]) -> String {
    let archive = dir.join(format!("{name}.tar"));
    let entrypoint = format!("/{}", binaries[0].file_name().unwrap().to_str().unwrap());
    let status = Command::new("bash")
        .arg(overcast_testenv::workspace_root().join("testenv/images.sh"))
        .arg(&archive)
        .arg(format!("{name}:e2e"))
        .arg(entrypoint)
        .args(binaries)
        .status()
        .unwrap();
    assert!(status.success(), "building the {name} image");
    cluster.import_image(&archive).unwrap();
    format!("127.0.0.1:1/overcast/{name}")
}

/// The free bytes of the filesystem holding `dir` (df).
fn free_bytes(dir: &Path) -> i64 {
    let out = Command::new("df")
        .args(["-B1", "--output=avail"])
        .arg(dir)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("df of {}: {out:?}", dir.display()))
}

/// A host tool the driver runs, for its image.
fn tool(name: &str) -> PathBuf {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!("{name} is missing (make test installs util-linux, e2fsprogs, xfsprogs)")
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_installed_on_real_kubelets_serves_claims_from_its_pods() {
    let cluster = Cluster::start_with(&common::quick_sync_nodes(2))
        .await
        .expect("cluster (run `make testenv`)");
    let plane = cluster.plane();
    let client = plane.client().await.unwrap();
    let work = tempfile::tempdir().unwrap();

    // The images: nothing can be pulled here.
    let driver_tools = [
        "losetup",
        "blkid",
        "mount",
        "fsfreeze",
        "mkfs.ext4",
        "mkfs.ext3",
        "mkfs.ext2",
        "mkfs.xfs",
        "resize2fs",
        "xfs_growfs",
        "dumpe2fs",
        "e2fsck",
    ]
    .map(tool);
    let driver_binary = PathBuf::from(env!("CARGO_BIN_EXE_overcast-csi"));
    let mut driver_image: Vec<&Path> = vec![&driver_binary];
    driver_image.extend(driver_tools.iter().map(PathBuf::as_path));
    let driver_repo = import_image(&cluster, work.path(), "overcast-csi", &driver_image);
    let mut sidecar_repos = Vec::new();
    for name in [
        "csi-provisioner",
        "csi-resizer",
        "csi-snapshotter",
        "snapshot-controller",
    ] {
        let binary = overcast_testenv::bin_dir().join(name);
        assert!(
            binary.is_file(),
            "{} missing: run `make testenv`",
            binary.display()
        );
        sidecar_repos.push(import_image(&cluster, work.path(), name, &[&binary]));
    }

    // Installed as a user would, on node-1 only: this cluster's kubelets
    // share one mount namespace, each with its own --root-dir.
    common::apply_snapshot_crds(plane);
    let kubelet_dir = cluster.dir().join("node-1/kubelet");
    let state_dir = cluster.dir().join("csi-state");
    let sets = [
        format!("image.repository={driver_repo},image.tag=e2e,image.pullPolicy=Never"),
        format!(
            "sidecars.provisioner.image.repository={},sidecars.resizer.image.repository={},sidecars.snapshotter.image.repository={}",
            sidecar_repos[0], sidecar_repos[1], sidecar_repos[2]
        ),
        "sidecars.provisioner.image.tag=e2e,sidecars.resizer.image.tag=e2e,sidecars.snapshotter.image.tag=e2e".into(),
        "sidecars.provisioner.image.pullPolicy=Never,sidecars.resizer.image.pullPolicy=Never,sidecars.snapshotter.image.pullPolicy=Never".into(),
        format!(
            "snapshots.controller.image.repository={},snapshots.controller.image.tag=e2e,snapshots.controller.image.pullPolicy=Never",
            sidecar_repos[3]
        ),
        // No CCM runs here: the nodes keep the uninitialized taint.
        "snapshots.controller.replicas=1,snapshots.controller.tolerations[0].operator=Exists".into(),
        format!("kubeletDir={},stateDir={}", kubelet_dir.display(), state_dir.display()),
        "node.nodeSelector.kubernetes\\.io/hostname=node-1".into(),
        // A mounted ext4 cannot grow on this machine (root lacks
        // CAP_SYS_RESOURCE); xfs can. Capacity polled often, for the pace.
        "storageClass.fsType=xfs,capacityPollInterval=5s".into(),
        format!("capacityBytes={}", 2u64 << 30),
    ];
    let kubeconfig = plane.kubeconfig_path().to_str().unwrap().to_string();
    let chart = chart();
    let mut install = vec![
        "install",
        "overcast-csi",
        chart.to_str().unwrap(),
        "--namespace",
        "kube-system",
        "--kubeconfig",
        &kubeconfig,
    ];
    for set in &sets {
        install.extend(["--set", set.as_str()]);
    }
    let installed = helm(&install);
    assert!(
        installed.contains("overcast-csi is installed"),
        "NOTES: {installed}"
    );

    let system_pods: Api<Pod> = Api::namespaced(client.clone(), "kube-system");
    let driver_logs = || async {
        let mut out = String::new();
        let pods = system_pods
            .list(&ListParams::default().labels("app.kubernetes.io/name=overcast-csi"))
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        for pod in pods {
            let name = pod.metadata.name.unwrap_or_default();
            for container in pod.spec.map(|s| s.containers).unwrap_or_default() {
                let log = system_pods
                    .logs(
                        &name,
                        &kube::api::LogParams {
                            container: Some(container.name.clone()),
                            ..Default::default()
                        },
                    )
                    .await
                    .unwrap_or_default();
                out += &format!("\n===== {name}/{} =====\n{log}", container.name);
            }
        }
        out
    };

    // The driver in its Pod registered with node-1's kubelet.
    let registered = common::registered_driver(&client, "node-1").await;
    assert_eq!(registered.node_id, "node-1");
    assert_eq!(
        registered.topology_keys.unwrap_or_default(),
        [overcast_csi::TOPOLOGY_NODE_KEY]
    );

    // Ready: the kubelet's readiness probe got /healthz from the driver.
    let node_pods = ListParams::default()
        .labels("app.kubernetes.io/name=overcast-csi,app.kubernetes.io/component=node");
    eventually("the node Pod Ready", SOON, || async {
        let list = system_pods.list(&node_pods).await.ok()?;
        let pod = list.items.into_iter().next()?;
        pod.status?
            .conditions?
            .into_iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
            .then_some(())
    })
    .await;

    // Its provisioner published node-1's capacity, owned by the DaemonSet.
    let capacities: Api<CSIStorageCapacity> = Api::namespaced(client.clone(), "kube-system");
    let capacity = eventually("CSIStorageCapacity for node-1", SOON, || async {
        let list = capacities.list(&ListParams::default()).await.ok()?;
        list.items.into_iter().find(|c| {
            c.storage_class_name == CLASS
                && c.capacity
                    .as_ref()
                    .is_some_and(|q| common::quantity_bytes(&q.0) > 0)
        })
    })
    .await;
    // GetCapacity is the lesser of capacityBytes and the disk's free space;
    // on a disk with room to spare it is capacityBytes.
    let published = common::quantity_bytes(&capacity.capacity.unwrap().0);
    let disk_free = free_bytes(&state_dir);
    if disk_free > 4 << 30 {
        assert_eq!(published, 2 << 30, "capacityBytes reaches the driver");
    } else {
        assert!(
            published <= 2 << 30,
            "{published} is more than capacityBytes"
        );
    }
    let owner = &capacity.metadata.owner_references.unwrap_or_default()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("DaemonSet", "overcast-csi-node")
    );

    // A Pod with no node named lands where its claim can be provisioned.
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    claims
        .create(
            &PostParams::default(),
            &common::claim("data", CLASS, "300Mi", None),
        )
        .await
        .unwrap();
    let writer = common::write_file(&pods, "writer", None, "data", "from-the-chart").await;
    let mut pod_dirs = vec![kubelet_dir.join("pods").join(writer.metadata.uid.unwrap())];
    assert_eq!(
        writer.spec.unwrap().node_name.as_deref(),
        Some("node-1"),
        "node-2 has no driver, so no capacity"
    );
    let pv_name = claims
        .get("data")
        .await
        .unwrap()
        .spec
        .and_then(|s| s.volume_name)
        .expect("bound");
    let pv = Api::<PersistentVolume>::all(client.clone())
        .get(&pv_name)
        .await
        .unwrap();
    let csi = pv.spec.unwrap().csi.unwrap();
    assert_eq!(csi.fs_type.as_deref(), Some("xfs"));
    assert_eq!(
        common::entries(&state_dir, "volumes"),
        vec![csi.volume_handle],
        "the volume is in stateDir on the node"
    );

    // Why a claim stays Pending, told to the user: a class whose parameter
    // the driver does not know gets a ProvisioningFailed Event naming it; a
    // claim larger than any node's capacity leaves its Pod unschedulable.
    plane
        .kubectl_apply(&format!(
            "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {{name: overcast-typo}}\nprovisioner: {DRIVER}\n\
             volumeBindingMode: WaitForFirstConsumer\nparameters: {{fstype: xfs}}\n"
        ))
        .expect("StorageClass");
    let typo = common::claim("typo", "overcast-typo", "100Mi", None);
    claims.create(&PostParams::default(), &typo).await.unwrap();
    claims
        .create(
            &PostParams::default(),
            &common::claim("huge", CLASS, "3Gi", None),
        )
        .await
        .unwrap();
    for (pod, claim) in [("typo-user", "typo"), ("huge-user", "huge")] {
        pods.create(
            &PostParams::default(),
            &common::pod(pod, None, claim, "sleep 3600"),
        )
        .await
        .unwrap();
    }
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let refusal = eventually("a ProvisioningFailed Event on claim typo", SOON, || async {
        let list = events
            .list(&ListParams::default().fields("involvedObject.name=typo"))
            .await
            .ok()?;
        list.items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("ProvisioningFailed"))
            .and_then(|e| e.message)
    })
    .await;
    assert!(
        refusal.contains("StorageClass parameter \"fstype\" is not supported"),
        "{refusal}"
    );
    let unschedulable = eventually("huge-user unschedulable for storage", SOON, || async {
        let pod = pods.get("huge-user").await.ok()?;
        pod.status?.conditions?.into_iter().find_map(|c| {
            (c.type_ == "PodScheduled" && c.status == "False")
                .then_some(c.message)
                .flatten()
        })
    })
    .await;
    assert!(
        unschedulable.contains("did not have enough free storage"),
        "{unschedulable}"
    );

    // A Pod of a non-root user writes to its fresh volume: the kubelet gives
    // the filesystem to the Pod's fsGroup (the CSIDriver's fsGroupPolicy:
    // File), as a database image running as its own user needs.
    claims
        .create(
            &PostParams::default(),
            &common::claim("owned", CLASS, "100Mi", None),
        )
        .await
        .unwrap();
    let mut nonroot = common::pod(
        "nonroot",
        None,
        "owned",
        "echo x > /data/mine && ls -ln /data/mine; sleep 3600",
    );
    nonroot.spec.as_mut().unwrap().security_context = Some(
        serde_json::from_value(
            serde_json::json!({"runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 2000}),
        )
        .unwrap(),
    );
    pods.create(&PostParams::default(), &nonroot).await.unwrap();
    let listing = eventually("the non-root Pod tried its write", SOON, || async {
        let logs = common::logs_of(&pods, "nonroot").await;
        (!logs.is_empty()).then_some(logs)
    })
    .await;
    let fields: Vec<&str> = listing.split_whitespace().collect();
    assert_eq!(
        fields.get(2..4),
        Some(&["1000", "2000"][..]),
        "the file is the Pod user's, in its fsGroup: {listing}"
    );

    for (pod, claim) in [
        ("typo-user", "typo"),
        ("huge-user", "huge"),
        ("nonroot", "owned"),
    ] {
        pods.delete(pod, &DeleteParams::default()).await.unwrap();
        claims
            .delete(claim, &DeleteParams::default())
            .await
            .unwrap();
    }

    // Grown while its Pod runs, by the resizer and the kubelet.
    common::grow(&claims, "data", "400Mi").await;

    // Snapshotted with the chart's class and controller, then restored.
    let snapshots = common::snapshots(&client, "default");
    let ready = common::snapshot(&snapshots, "data-snap", "data", CLASS).await;
    assert!(ready, "the snapshot is not ready:{}", driver_logs().await);
    claims
        .create(
            &PostParams::default(),
            &common::claim("restored", CLASS, "400Mi", Some("data-snap")),
        )
        .await
        .unwrap();
    let read = common::read_file(&pods, "reader", None, "restored").await;
    assert_eq!(read, "from-the-chart", "{}", driver_logs().await);
    let reader = pods.get("reader").await.unwrap().metadata.uid.unwrap();
    pod_dirs.push(kubelet_dir.join("pods").join(reader));

    // Deleted: nothing of the volumes is left on the node.
    common::delete_all(
        (&pods, &["writer", "reader"]),
        (&snapshots, &["data-snap"]),
        (&claims, &["data", "restored"]),
    )
    .await;
    eventually("stateDir holds no volume or snapshot", SOON, || async {
        (common::entries(&state_dir, "volumes").is_empty()
            && common::entries(&state_dir, "snapshots").is_empty())
        .then_some(())
    })
    .await;
    assert_eq!(common::loop_devices_under(&state_dir), Vec::<String>::new());
    for dir in &pod_dirs {
        assert_eq!(common::mounts_under(dir), Vec::<PathBuf>::new());
    }

    // The liveness probe never restarted the driver.
    let node_pod = system_pods.list(&node_pods).await.unwrap().items.remove(0);
    let restarts: Vec<(String, i32)> = node_pod
        .status
        .and_then(|s| s.container_statuses)
        .unwrap_or_default()
        .into_iter()
        .map(|c| (c.name, c.restart_count))
        .collect();
    assert!(restarts.iter().all(|(_, n)| *n == 0), "{restarts:?}");

    // Uninstalled: the driver's objects go with the release.
    helm(&[
        "uninstall",
        "overcast-csi",
        "--namespace",
        "kube-system",
        "--kubeconfig",
        &kubeconfig,
    ]);
    let drivers: Api<k8s_openapi::api::storage::v1::CSIDriver> = Api::all(client.clone());
    assert!(
        drivers.get_opt(DRIVER).await.unwrap().is_none(),
        "the CSIDriver object is left"
    );
    let csi_nodes: Api<CSINode> = Api::all(client.clone());
    // The driver stopped cleanly, and the kubelet deregistered it.
    eventually(
        "node-1's CSINode no longer lists overcast-csi",
        SOON,
        || async {
            let csi_node = csi_nodes.get("node-1").await.ok()?;
            (!csi_node.spec.drivers.iter().any(|d| d.name == DRIVER)).then_some(())
        },
    )
    .await;
    cluster.stop();
}
