//! cloud-node-lifecycle-controller against the real apiserver, with the fake cloud.

mod common;

use std::time::Duration;

use common::{Harness, SOON, eventually};
use overcast_cloud_provider::names::TAINT_SHUTDOWN;
use overcast_controllers::node_helpers::has_taint;
use overcast_controllers::node_lifecycle::{NodeLifecycleConfig, NodeLifecycleController};
use overcast_provider_fake::{Capabilities, Failure, FakeCloud, FakeInstance};

const PERIOD: Duration = Duration::from_millis(200);

async fn start(cloud: FakeCloud) -> Harness {
    let mut h = Harness::start(cloud).await;
    let controller = NodeLifecycleController::new(
        &h.ctx,
        NodeLifecycleConfig {
            node_monitor_period: PERIOD,
            workers: 2,
        },
    )
    .expect("fake has instances");
    h.spawn(controller.run());
    h.start_informers().await;
    h
}

async fn gone(h: &Harness, name: &str) {
    let nodes = h.nodes();
    eventually(&format!("node {name} deleted"), SOON, || {
        let nodes = nodes.clone();
        async move { nodes.get_opt(name).await.unwrap().is_none().then_some(()) }
    })
    .await;
}

async fn shutdown_taint_is(h: &Harness, name: &str, present: bool) {
    let nodes = h.nodes();
    eventually(
        &format!("shutdown taint present={present} on {name}"),
        SOON,
        || {
            let nodes = nodes.clone();
            async move {
                let n = nodes.get(name).await.ok()?;
                (has_taint(&n, TAINT_SHUTDOWN) == present).then_some(())
            }
        },
    )
    .await;
}

#[tokio::test]
async fn a_not_ready_node_whose_instance_is_gone_is_deleted_and_a_ready_one_is_not() {
    let cloud = FakeCloud::new();
    let h = start(cloud.clone()).await;
    // Neither instance exists in the cloud; only the NotReady node may go.
    h.create_node_ready("gone-1", "fake://gone-1", false).await;
    h.create_node_ready("ready-1", "fake://ready-1", true).await;

    gone(&h, "gone-1").await;
    let expected =
        "Normal DeletingNode: Deleting node gone-1 because it does not exist in the cloud provider";
    eventually("DeletingNode event", SOON, || async {
        h.events_for("gone-1")
            .await
            .iter()
            .any(|e| e == expected)
            .then_some(())
    })
    .await;
    assert!(h.nodes().get_opt("ready-1").await.unwrap().is_some());
}

#[tokio::test]
async fn a_transient_cloud_error_never_deletes_a_node_but_instance_not_found_does() {
    let cloud = FakeCloud::new();
    cloud.fail_always("instance-exists", Failure::Error("throttled".into()));
    let h = start(cloud.clone()).await;
    h.create_node_ready("worker-1", "fake://worker-1", false)
        .await;

    eventually("several monitor passes", SOON, || async {
        (cloud.count("instance-exists") >= 5).then_some(())
    })
    .await;
    assert!(h.nodes().get_opt("worker-1").await.unwrap().is_some());

    // InstancesV2 answering InstanceNotFound as an error is a definite answer
    // (upstream would retry forever, kubernetes#139301).
    cloud.fail_always("instance-exists", Failure::InstanceNotFound);
    gone(&h, "worker-1").await;
}

#[tokio::test]
async fn a_shut_down_instance_taints_its_node_until_it_is_ready_again() {
    let cloud = FakeCloud::new();
    cloud.add_instance(
        "worker-1",
        FakeInstance {
            shutdown: true,
            ..Default::default()
        },
    );
    let h = start(cloud.clone()).await;
    h.create_node_ready("worker-1", "fake://worker-1", false)
        .await;
    shutdown_taint_is(&h, "worker-1", true).await;
    assert!(
        h.nodes().get_opt("worker-1").await.unwrap().is_some(),
        "a stopped instance still exists"
    );

    cloud.set_shutdown("worker-1", false);
    h.set_ready("worker-1", true).await;
    shutdown_taint_is(&h, "worker-1", false).await;
}

#[tokio::test]
async fn the_legacy_instances_interface_drives_the_lifecycle_too() {
    let cloud = FakeCloud::with_capabilities(Capabilities {
        instances_v2: false,
        ..Default::default()
    });
    cloud.add_instance(
        "stopped-1",
        FakeInstance {
            shutdown: true,
            ..Default::default()
        },
    );
    let h = start(cloud.clone()).await;
    h.create_node_ready("stopped-1", "fake://stopped-1", false)
        .await;
    h.create_node_ready("gone-1", "fake://gone-1", false).await;

    shutdown_taint_is(&h, "stopped-1", true).await;
    gone(&h, "gone-1").await;
    assert!(cloud.count("instance-exists-by-provider-id") > 0);
}
