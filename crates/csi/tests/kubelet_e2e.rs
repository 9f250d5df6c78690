//! overcast-csi with real kubelets: the driver registers itself through the
//! kubelet's plugins_registry (as node-driver-registrar would) and the
//! CSINode object and the Node's topology label show it; the scheduler puts
//! a Pod whose volume is on node-1 on node-1; the kubelet stages and
//! publishes it through the driver; a kubelet restart and a kill -9 and
//! restart of the driver under the Pod leave it published; the Pod's data is there for the next Pod after the first is
//! deleted; and once no Pod uses it the volume is unstaged and detached.
//! Needs root (the real-node cluster).

mod common;

use common::{Driver, loop_devices_under, mounts_under};
use k8s_openapi::api::{
    core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod},
    storage::v1::{CSIDriver, CSINode},
};
use kube::{Api, api::PostParams};
use overcast_csi::proto::{self, CapacityRange, controller_client::ControllerClient};
use overcast_testenv::{Cluster, ClusterOptions, eventually};
use std::{path::Path, time::Duration};

const SOON: Duration = Duration::from_secs(90);
const DRIVER: &str = overcast_csi::DEFAULT_DRIVER_NAME;

async fn create_volume(socket: &Path) -> String {
    let channel = common::connect(socket).await;
    // What the external-provisioner does for a claim placed on this node.
    let volume = ControllerClient::new(channel)
        .create_volume(proto::CreateVolumeRequest {
            name: "pv-data".into(),
            capacity_range: Some(CapacityRange {
                required_bytes: 64 << 20,
                limit_bytes: 0,
            }),
            volume_capabilities: vec![common::fs_capability("ext4")],
            ..Default::default()
        })
        .await
        .expect("CreateVolume")
        .into_inner()
        .volume
        .expect("a volume");
    assert_eq!(
        volume.accessible_topology[0].segments[overcast_csi::TOPOLOGY_NODE_KEY],
        "node-1"
    );
    volume.volume_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pods_data_outlives_the_pod_on_real_kubelets() {
    let cluster = Cluster::start_with(&ClusterOptions::nodes(2))
        .await
        .expect("cluster (run `make testenv`)");
    let client = cluster.plane().client().await.unwrap();
    let kubelet_root = cluster.dir().join("node-1/kubelet");
    let mut driver = Driver::start_for_kubelet("node-1", &kubelet_root);

    // The CSIDriver object as shipped.
    let csi_driver: CSIDriver = common::shipped_object("CSIDriver");
    Api::<CSIDriver>::all(client.clone())
        .create(&PostParams::default(), &csi_driver)
        .await
        .expect("CSIDriver");

    // Registered: the kubelet asked the driver for its node ID and topology.
    let entry = common::registered_driver(&client, "node-1").await;
    assert_eq!(entry.node_id, "node-1");
    assert_eq!(
        entry.topology_keys,
        Some(vec![overcast_csi::TOPOLOGY_NODE_KEY.to_string()])
    );
    let nodes: Api<Node> = Api::all(client.clone());
    let labels = nodes
        .get("node-1")
        .await
        .unwrap()
        .metadata
        .labels
        .unwrap_or_default();
    assert_eq!(
        labels
            .get(overcast_csi::TOPOLOGY_NODE_KEY)
            .map(String::as_str),
        Some("node-1")
    );
    let csi_nodes: Api<CSINode> = Api::all(client.clone());
    let csi_node_2 = csi_nodes.get_opt("node-2").await.unwrap();
    assert!(
        csi_node_2.is_none_or(|n| n.spec.drivers.iter().all(|d| d.name != DRIVER)),
        "node-2 has no driver running and must not list it"
    );

    // A volume made on node-1, and a PV/PVC as the provisioner would write them.
    let volume_id = create_volume(&driver.socket()).await;
    let pv: PersistentVolume = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "pv-data"},
        "spec": {
            "capacity": {"storage": "64Mi"},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "overcast-local",
            "csi": {"driver": DRIVER, "volumeHandle": volume_id, "fsType": "ext4"},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": overcast_csi::TOPOLOGY_NODE_KEY, "operator": "In", "values": ["node-1"]}
            ]}]}},
        }
    }))
    .unwrap();
    Api::<PersistentVolume>::all(client.clone())
        .create(&PostParams::default(), &pv)
        .await
        .unwrap();
    let pvc: PersistentVolumeClaim = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "data"},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "overcast-local",
            "volumeName": "pv-data",
            "resources": {"requests": {"storage": "64Mi"}},
        }
    }))
    .unwrap();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    claims.create(&PostParams::default(), &pvc).await.unwrap();

    // The writer: scheduled by the PV's node affinity, its volume published.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let writer =
        common::write_file(&pods, "writer", None, "data", "written-by-the-first-pod").await;
    assert_eq!(
        writer.spec.as_ref().and_then(|s| s.node_name.as_deref()),
        Some("node-1")
    );
    assert!(
        driver.log().contains("staged volume") && driver.log().contains("published volume"),
        "{}",
        driver.log()
    );

    // The kubelet restarts under the running Pod: it finds the driver again
    // (a second registration), and the volume stays published.
    let mounts_before = mounts_under(&kubelet_root.join("pods")).len();
    assert!(
        mounts_before > 0,
        "the writer's volume is mounted under the kubelet's pods directory"
    );
    cluster
        .restart_kubelet("node-1")
        .expect("the kubelet restarts");
    eventually(
        "the restarted kubelet registered the driver again",
        SOON,
        || async {
            (driver.log().matches("registered with the kubelet").count() >= 2).then_some(())
        },
    )
    .await;
    let writer = pods.get("writer").await.unwrap();
    assert_eq!(
        writer.status.and_then(|s| s.phase).as_deref(),
        Some("Running")
    );
    assert_eq!(
        mounts_under(&kubelet_root.join("pods")).len(),
        mounts_before,
        "the restart changed the Pod's mounts"
    );

    // The driver killed (-9) and started again under the running Pod: it
    // registers anew (the log file is appended to), the Pod's volume stays
    // mounted, and the teardown below goes through the new process.
    driver.restart(&[]);
    eventually("the restarted driver registered again", SOON, || async {
        (driver.log().matches("registered with the kubelet").count() >= 3).then_some(())
    })
    .await;
    assert_eq!(
        mounts_under(&kubelet_root.join("pods")).len(),
        mounts_before,
        "the driver's restart changed the Pod's mounts"
    );

    common::delete_pods(&pods, &["writer"]).await;
    // The kubelet unpublished and unstaged the volume: nothing of it is mounted.
    eventually("the volume unstaged", SOON, || async {
        driver.log().contains("unstaged volume").then_some(())
    })
    .await;

    let read = common::read_file(&pods, "reader", None, "data").await;
    assert_eq!(read, "written-by-the-first-pod");

    common::delete_pods(&pods, &["reader"]).await;
    eventually("no loop device left for the volume", SOON, || async {
        loop_devices_under(driver.dir.path())
            .is_empty()
            .then_some(())
    })
    .await;
    assert!(mounts_under(&kubelet_root.join("plugins/kubernetes.io/csi")).is_empty());
    drop(driver);
    cluster.stop();
}
