//! overcast-csi with the upstream sidecars on the real-node cluster, as
//! deploy/csi/overcast-csi.yaml runs them (there are no images here, so its
//! containers run as processes, with the manifest's args and env and the
//! token of the manifest's ServiceAccounts, so with exactly its RBAC): per
//! node the driver (registered with its kubelet), external-provisioner
//! (`--node-deployment`, `--enable-capacity`), csi-snapshotter
//! (`--node-deployment`) and a leader-elected external-resizer; once, the
//! snapshot-controller. Through the Kubernetes API only: a claim with
//! WaitForFirstConsumer is provisioned on the node its Pod was scheduled
//! to, CSIStorageCapacity is published per node, the claim is expanded
//! while its Pod runs, snapshotted, and restored into a new claim whose Pod
//! reads the data; deleting the claims deletes the volumes.
//! Needs root (the real-node cluster) and `make testenv` (the sidecars).

mod common;

use common::{Driver, Process};
use k8s_openapi::api::{
    core::v1::{PersistentVolume, PersistentVolumeClaim, Pod},
    storage::v1::CSIStorageCapacity,
};
use kube::{
    Api,
    api::{ListParams, PostParams},
};
use overcast_testenv::{Cluster, eventually};
use std::{path::Path, process::Command, time::Duration};

const SOON: Duration = Duration::from_secs(120);
const DRIVER: &str = overcast_csi::DEFAULT_DRIVER_NAME;
const XFS_CLASS: &str = "overcast-xfs";

fn bin(name: &str) -> std::path::PathBuf {
    let path = overcast_testenv::bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `make testenv`",
        path.display()
    );
    path
}

/// A container of the manifest's `kind` (DaemonSet or Deployment).
fn container<'a>(
    manifest: &'a [serde_json::Value],
    kind: &str,
    name: &str,
) -> &'a serde_json::Value {
    manifest
        .iter()
        .filter(|doc| doc["kind"] == kind)
        .flat_map(|doc| {
            doc["spec"]["template"]["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
        })
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("deploy/csi/overcast-csi.yaml has no {kind} container {name}"))
}

/// Where a container of the manifest runs, and what it gets.
struct Placement<'a> {
    node: Option<&'a str>,
    socket: Option<&'a Path>,
    kubeconfig: &'a Path,
    logs: &'a Path,
}

/// A container of the manifest run as a process: its args (the socket it is
/// given in place of /csi/csi.sock), its env from the downward API as the
/// kubelet would fill it, `overrides` last.
fn run_container(
    manifest: &[serde_json::Value],
    kind: &str,
    name: &str,
    at: &Placement,
    overrides: &[&str],
) -> Process {
    let spec = container(manifest, kind, name);
    let mut command = Command::new(bin(name));
    for arg in spec["args"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str())
    {
        match (arg.strip_prefix("--csi-address="), at.socket) {
            (Some(_), Some(socket)) => command.arg(format!("--csi-address={}", socket.display())),
            _ => command.arg(arg),
        };
    }
    command
        .arg(format!("--kubeconfig={}", at.kubeconfig.display()))
        .args(overrides);
    let instance = format!("{name}-{}", at.node.unwrap_or("once"));
    for env in spec["env"].as_array().into_iter().flatten() {
        let value = match env["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            Some("spec.nodeName") => at.node.expect("a per-node container").to_string(),
            Some("metadata.namespace") => "kube-system".to_string(),
            Some("metadata.name") => instance.clone(),
            _ => env["value"].as_str().unwrap_or_default().to_string(),
        };
        command.env(env["name"].as_str().unwrap(), value);
    }
    Process::spawn(&instance, command, at.logs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_are_provisioned_grown_snapshotted_and_restored_through_the_sidecars() {
    let cluster = Cluster::start_with(&common::quick_sync_nodes(2))
        .await
        .expect("cluster (run `make testenv`)");
    let plane = cluster.plane();
    let client = plane.client().await.unwrap();
    // Beside the cluster's own logs (kept with OVERCAST_TESTENV_KEEP=1).
    let logs = cluster.dir().join("csi-logs");
    std::fs::create_dir_all(&logs).unwrap();

    // The snapshot CRDs, which a user installs first.
    common::apply_snapshot_crds(plane);
    // A second StorageClass, for xfs: a mounted ext4 cannot grow on this
    // machine (root lacks CAP_SYS_RESOURCE), xfs can.
    plane
        .kubectl_apply(&format!(
            "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {{name: {XFS_CLASS}}}\nprovisioner: {DRIVER}\n\
             volumeBindingMode: WaitForFirstConsumer\nallowVolumeExpansion: true\nreclaimPolicy: Delete\n\
             parameters: {{csi.storage.k8s.io/fstype: xfs}}\n"
        ))
        .expect("StorageClass");

    // The manifest: valid as a whole (its DaemonSet and Deployment too), and
    // all but those two applied (the CSIDriver, its StorageClass and
    // VolumeSnapshotClass, ServiceAccounts and RBAC); the containers then run
    // with those accounts' tokens.
    let manifest_path = overcast_testenv::workspace_root().join("deploy/csi/overcast-csi.yaml");
    let status = plane
        .kubectl()
        .args(["apply", "--dry-run=server", "-f"])
        .arg(&manifest_path)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "the apiserver refused deploy/csi/overcast-csi.yaml"
    );
    let manifest = common::shipped_manifest();
    for doc in manifest
        .iter()
        .filter(|d| d["kind"] != "DaemonSet" && d["kind"] != "Deployment")
    {
        plane
            .kubectl_apply(&serde_json::to_string(doc).unwrap())
            .expect("the manifest's objects");
    }
    let node_account = plane
        .service_account_kubeconfig("kube-system", "overcast-csi-node")
        .await
        .unwrap();
    let controller_account = plane
        .service_account_kubeconfig("kube-system", "overcast-csi-snapshot-controller")
        .await
        .unwrap();

    // Per node: the driver and the DaemonSet's sidecars.
    let mut drivers = Vec::new();
    let mut processes = Vec::new();
    for node in ["node-1", "node-2"] {
        let driver = Driver::start_for_kubelet(node, &cluster.dir().join(node).join("kubelet"));
        let socket = driver.socket();
        let at = Placement {
            node: Some(node),
            socket: Some(&socket),
            kubeconfig: &node_account,
            logs: &logs,
        };
        // No Pod object owns these processes: their capacity objects get no
        // owner; and capacity is polled often, for the test's pace.
        let provisioner_overrides = [
            "--capacity-ownerref-level=-1",
            "--capacity-poll-interval=5s",
        ];
        processes.push(run_container(
            &manifest,
            "DaemonSet",
            "csi-provisioner",
            &at,
            &provisioner_overrides,
        ));
        processes.push(run_container(
            &manifest,
            "DaemonSet",
            "csi-snapshotter",
            &at,
            &[],
        ));
        processes.push(run_container(
            &manifest,
            "DaemonSet",
            "csi-resizer",
            &at,
            &[],
        ));
        drivers.push(driver);
    }
    let once = Placement {
        node: None,
        socket: None,
        kubeconfig: &controller_account,
        logs: &logs,
    };
    processes.push(run_container(
        &manifest,
        "Deployment",
        "snapshot-controller",
        &once,
        &[],
    ));
    let all_logs = |processes: &[Process], drivers: &[Driver]| {
        let mut out = String::new();
        for p in processes {
            out += &format!("\n===== {} =====\n{}", p.name, p.log());
        }
        for (i, d) in drivers.iter().enumerate() {
            out += &format!("\n===== driver node-{} =====\n{}", i + 1, d.log());
        }
        out
    };

    // Capacity per node, for the scheduler.
    let capacities: Api<CSIStorageCapacity> = Api::all(client.clone());
    let published = eventually("CSIStorageCapacity for both nodes", SOON, || async {
        let list = capacities.list(&ListParams::default()).await.ok()?;
        let nodes: Vec<String> = list
            .items
            .iter()
            .filter(|c| {
                c.storage_class_name == XFS_CLASS
                    && c.capacity
                        .as_ref()
                        .is_some_and(|q| common::quantity_bytes(&q.0) > 0)
            })
            .filter_map(|c| {
                c.node_topology
                    .as_ref()?
                    .match_labels
                    .as_ref()?
                    .get(overcast_csi::TOPOLOGY_NODE_KEY)
                    .cloned()
            })
            .collect();
        (nodes.contains(&"node-1".to_string()) && nodes.contains(&"node-2".to_string()))
            .then_some(nodes)
    })
    .await;
    let mut nodes = published.clone();
    nodes.sort();
    nodes.dedup();
    assert_eq!(nodes, ["node-1", "node-2"], "{published:?}");

    // WaitForFirstConsumer: the claim is provisioned where its Pod went.
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    claims
        .create(
            &PostParams::default(),
            &common::claim("data", XFS_CLASS, "300Mi", None),
        )
        .await
        .unwrap();
    common::write_file(&pods, "writer", Some("node-2"), "data", "from-the-writer").await;
    let bound = claims.get("data").await.unwrap();
    let pv_name = bound
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .expect("bound");
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let pv = pvs.get(&pv_name).await.unwrap();
    let affinity = serde_json::to_string(&pv.spec.as_ref().unwrap().node_affinity).unwrap();
    assert!(
        affinity.contains(overcast_csi::TOPOLOGY_NODE_KEY) && affinity.contains("node-2"),
        "{affinity}"
    );
    assert!(
        drivers[1].log().contains("created volume"),
        "node-2's driver made it:{}",
        all_logs(&processes, &drivers)
    );
    assert!(
        !drivers[0].log().contains("created volume"),
        "node-1's driver made nothing"
    );

    // Expanded while the Pod runs: the resizer records it, the kubelet grows it.
    common::grow(&claims, "data", "400Mi").await;

    // Snapshotted with the manifest's class, then restored into a new claim
    // on the same node.
    let snapshots = common::snapshots(&client, "default");
    assert!(
        common::snapshot(&snapshots, "data-snap", "data", "overcast-local").await,
        "the snapshot is not ready:{}",
        all_logs(&processes, &drivers)
    );
    claims
        .create(
            &PostParams::default(),
            &common::claim("restored", XFS_CLASS, "400Mi", Some("data-snap")),
        )
        .await
        .unwrap();
    let read = common::read_file(&pods, "reader", Some("node-2"), "restored").await;
    assert_eq!(
        read,
        "from-the-writer",
        "{}",
        all_logs(&processes, &drivers)
    );

    // Deleting everything deletes the volumes and the snapshot on the node.
    common::delete_all(
        (&pods, &["writer", "reader"]),
        (&snapshots, &["data-snap"]),
        (&claims, &["data", "restored"]),
    )
    .await;
    eventually("node-2 holds no volume or snapshot", SOON, || async {
        let state = drivers[1].state();
        (common::entries(&state, "volumes").is_empty()
            && common::entries(&state, "snapshots").is_empty())
        .then_some(())
    })
    .await;
    for p in &mut processes {
        p.check_alive();
    }
    drop(processes);
    drop(drivers);
    cluster.stop();
}
