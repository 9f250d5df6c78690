//! cloud-node-controller against the real apiserver, with the fake cloud.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Harness, SOON, address, eventually};
use k8s_openapi::api::core::v1::Node;
use overcast_cloud_provider::names::*;
use overcast_controllers::node::{NodeController, NodeControllerConfig};
use overcast_controllers::node_helpers::{has_taint, provider_id};
use overcast_provider_fake::{Capabilities, Failure, FakeCloud, FakeInstance};

fn instance() -> FakeInstance {
    FakeInstance {
        instance_type: "bm.large".into(),
        zone: "rack-1".into(),
        region: "eu-home".into(),
        addresses: vec![
            address("InternalIP", "10.0.0.11"),
            address("ExternalIP", "203.0.113.11"),
        ],
        additional_labels: BTreeMap::from([("example.com/pool".to_string(), "gold".to_string())]),
        ..Default::default()
    }
}

async fn start(cloud: FakeCloud, config: NodeControllerConfig) -> Harness {
    let mut h = Harness::start(cloud).await;
    let controller = NodeController::new(&h.ctx, config).expect("fake has instances");
    h.spawn(controller.run());
    h.start_informers().await;
    h
}

async fn initialized(h: &Harness, name: &str) -> Node {
    let nodes = h.nodes();
    eventually(&format!("node {name} initialised"), SOON, || {
        let nodes = nodes.clone();
        async move {
            let n = nodes.get(name).await.ok()?;
            (!has_taint(&n, TAINT_UNINITIALIZED)).then_some(n)
        }
    })
    .await
}

fn label<'a>(n: &'a Node, key: &str) -> Option<&'a str> {
    n.metadata.labels.as_ref()?.get(key).map(String::as_str)
}

fn addresses(n: &Node) -> Vec<(String, String)> {
    n.status
        .as_ref()
        .and_then(|s| s.addresses.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|a| (a.type_, a.address))
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[tokio::test]
async fn initialises_a_tainted_node_from_instance_metadata() {
    let cloud = FakeCloud::new();
    cloud.add_instance("worker-1", instance());
    let h = start(cloud, NodeControllerConfig::default()).await;
    h.create_uninitialized_node("worker-1", &[]).await;

    let n = initialized(&h, "worker-1").await;
    assert_eq!(provider_id(&n), "fake://worker-1");
    for (key, value) in [
        (LABEL_INSTANCE_TYPE, "bm.large"),
        (LABEL_INSTANCE_TYPE_BETA, "bm.large"),
        (LABEL_ZONE, "rack-1"),
        (LABEL_ZONE_BETA, "rack-1"),
        (LABEL_REGION, "eu-home"),
        (LABEL_REGION_BETA, "eu-home"),
        ("example.com/pool", "gold"),
    ] {
        assert_eq!(label(&n, key), Some(value), "label {key}");
    }
    assert!(has_taint(&n, "dedicated"), "other taints are kept");
    assert_eq!(
        addresses(&n),
        pairs(&[
            ("InternalIP", "10.0.0.11"),
            ("ExternalIP", "203.0.113.11"),
            ("Hostname", "worker-1")
        ])
    );
    let events = eventually("Synced event", SOON, || async {
        let e = h.events_for("worker-1").await;
        (!e.is_empty()).then_some(e)
    })
    .await;
    assert_eq!(events, vec!["Normal Synced: Node synced successfully"]);
}

#[tokio::test]
async fn legacy_instances_and_zones_initialise_a_node_too() {
    let cloud = FakeCloud::with_capabilities(Capabilities {
        instances_v2: false,
        ..Default::default()
    });
    cloud.add_instance("worker-1", instance());
    let h = start(cloud.clone(), NodeControllerConfig::default()).await;
    h.create_uninitialized_node("worker-1", &[]).await;

    let n = initialized(&h, "worker-1").await;
    assert_eq!(provider_id(&n), "fake://worker-1");
    assert_eq!(label(&n, LABEL_ZONE), Some("rack-1"));
    assert_eq!(label(&n, LABEL_INSTANCE_TYPE), Some("bm.large"));
    let calls = cloud.calls();
    assert!(calls.contains(&"instance-id".to_string()), "{calls:?}");
    assert!(
        !calls.contains(&"instance-metadata".to_string()),
        "{calls:?}"
    );
}

#[tokio::test]
async fn a_cloud_failure_keeps_the_taint_and_the_node_heals_after_back_off() {
    let cloud = FakeCloud::new();
    cloud.add_instance("worker-1", instance());
    cloud.fail_always(
        "instance-metadata",
        Failure::Error("API unavailable".into()),
    );
    let h = start(cloud.clone(), NodeControllerConfig::default()).await;
    h.create_uninitialized_node("worker-1", &[]).await;

    eventually("several retries", SOON, || async {
        (cloud.count("instance-metadata") >= 3).then_some(())
    })
    .await;
    let n = h.nodes().get("worker-1").await.unwrap();
    assert!(
        has_taint(&n, TAINT_UNINITIALIZED),
        "taint stays while the cloud fails"
    );
    assert_eq!(provider_id(&n), "");

    cloud.heal("instance-metadata");
    let n = initialized(&h, "worker-1").await;
    assert_eq!(provider_id(&n), "fake://worker-1");
}

#[tokio::test]
async fn metadata_without_a_provider_id_keeps_the_taint() {
    let cloud = FakeCloud::new();
    cloud.add_instance("worker-1", instance());
    cloud.set_blank_provider_ids(true);
    let h = start(cloud.clone(), NodeControllerConfig::default()).await;
    h.create_uninitialized_node("worker-1", &[]).await;

    eventually("retries", SOON, || async {
        (cloud.count("instance-metadata") >= 3).then_some(())
    })
    .await;
    let n = h.nodes().get("worker-1").await.unwrap();
    assert!(
        has_taint(&n, TAINT_UNINITIALIZED),
        "never untainted without a providerID"
    );

    cloud.set_blank_provider_ids(false);
    let n = initialized(&h, "worker-1").await;
    assert_eq!(provider_id(&n), "fake://worker-1");
}

#[tokio::test]
async fn a_legacy_provider_without_instance_ids_initialises_by_name_without_empty_ids() {
    let cloud = FakeCloud::with_capabilities(Capabilities {
        instances_v2: false,
        ..Default::default()
    });
    cloud.add_instance("worker-1", instance());
    // As upstream: the one case where a Node is initialised without providerID.
    cloud.fail_always("instance-id", Failure::NotImplemented);
    let h = start(cloud.clone(), NodeControllerConfig::default()).await;
    h.create_uninitialized_node("worker-1", &[]).await;

    let n = initialized(&h, "worker-1").await;
    assert_eq!(provider_id(&n), "");
    assert_eq!(label(&n, LABEL_INSTANCE_TYPE), Some("bm.large"));
    let calls = cloud.calls();
    assert!(calls.contains(&"node-addresses".to_string()), "{calls:?}");
    assert!(
        !calls.iter().any(|c| c.ends_with("-by-provider-id")),
        "an empty provider ID is never sent to the cloud: {calls:?}"
    );
}

#[tokio::test]
async fn a_transient_instance_id_error_keeps_the_taint() {
    let cloud = FakeCloud::with_capabilities(Capabilities {
        instances_v2: false,
        ..Default::default()
    });
    cloud.add_instance("worker-1", instance());
    cloud.fail_always("instance-id", Failure::Error("timeout".into()));
    let h = start(cloud.clone(), NodeControllerConfig::default()).await;
    h.create_uninitialized_node("worker-1", &[]).await;
    eventually("retries", SOON, || async {
        (cloud.count("instance-id") >= 3).then_some(())
    })
    .await;
    assert!(has_taint(
        &h.nodes().get("worker-1").await.unwrap(),
        TAINT_UNINITIALIZED
    ));
}

#[tokio::test]
async fn provided_node_ip_filters_addresses_and_a_mismatch_is_reported() {
    let cloud = FakeCloud::new();
    let mut i = instance();
    i.addresses.push(address("InternalIP", "10.0.0.12"));
    cloud.add_instance("worker-1", i.clone());
    cloud.add_instance("worker-2", i);
    let h = start(cloud.clone(), NodeControllerConfig::default()).await;

    h.create_uninitialized_node("worker-1", &[(ANNOTATION_PROVIDED_NODE_IP, "10.0.0.12")])
        .await;
    let n = initialized(&h, "worker-1").await;
    assert_eq!(
        addresses(&n),
        pairs(&[
            ("InternalIP", "10.0.0.12"),
            ("ExternalIP", "203.0.113.11"),
            ("Hostname", "worker-1")
        ])
    );

    h.create_uninitialized_node("worker-2", &[(ANNOTATION_PROVIDED_NODE_IP, "10.0.0.99")])
        .await;
    let events = eventually("a warning about the provided IP", SOON, || async {
        let e = h.events_for("worker-2").await;
        (!e.is_empty()).then_some(e)
    })
    .await;
    assert!(
        events[0].starts_with(
            "Warning ProvidedNodeIPNotFound: provided node ip for node \"worker-2\" is not valid"
        ) && events[0].contains("10.0.0.99"),
        "{events:?}"
    );
    assert!(has_taint(
        &h.nodes().get("worker-2").await.unwrap(),
        TAINT_UNINITIALIZED
    ));

    // The cloud learns the address: the node initialises on a later retry.
    let mut fixed = instance();
    fixed.addresses.push(address("InternalIP", "10.0.0.99"));
    cloud.add_instance("worker-2", fixed);
    let n = initialized(&h, "worker-2").await;
    assert_eq!(
        addresses(&n)[0],
        ("InternalIP".to_string(), "10.0.0.99".to_string())
    );
}

#[tokio::test]
async fn addresses_of_initialised_nodes_are_refreshed_periodically() {
    let cloud = FakeCloud::new();
    cloud.add_instance("worker-1", instance());
    let h = start(
        cloud.clone(),
        NodeControllerConfig {
            node_status_update_frequency: Duration::from_millis(300),
            ..Default::default()
        },
    )
    .await;
    h.create_uninitialized_node("worker-1", &[]).await;
    initialized(&h, "worker-1").await;

    cloud.set_addresses("worker-1", vec![address("InternalIP", "10.0.0.77")]);
    let nodes = h.nodes();
    eventually("new address on the node", SOON, || {
        let nodes = nodes.clone();
        async move {
            let n = nodes.get("worker-1").await.ok()?;
            (addresses(&n) == pairs(&[("InternalIP", "10.0.0.77"), ("Hostname", "worker-1")]))
                .then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn ga_labels_of_initialised_nodes_follow_the_beta_labels() {
    let h = start(FakeCloud::new(), NodeControllerConfig::default()).await;
    let mut node = h.create_node("worker-1", "fake://worker-1").await;
    node.metadata.labels = Some(BTreeMap::from([(
        LABEL_ZONE_BETA.to_string(),
        "rack-9".to_string(),
    )]));
    h.nodes()
        .patch(
            "worker-1",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(
                serde_json::json!({"metadata": {"labels": node.metadata.labels}}),
            ),
        )
        .await
        .unwrap();
    let nodes = h.nodes();
    eventually("GA zone label", SOON, || {
        let nodes = nodes.clone();
        async move {
            let n = nodes.get("worker-1").await.ok()?;
            (label(&n, LABEL_ZONE) == Some("rack-9")).then_some(())
        }
    })
    .await;
}
