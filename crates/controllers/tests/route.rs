//! node-route-controller against the real apiserver, with the fake cloud.

mod common;

use std::time::Duration;

use common::{Harness, SOON, eventually};
use overcast_cloud_provider::Route;
use overcast_controllers::route::{RouteController, RouteControllerConfig, parse_cluster_cidrs};
use overcast_provider_fake::{Failure, FakeCloud};

async fn start(cloud: FakeCloud) -> Harness {
    let mut h = Harness::start(cloud).await;
    let controller = RouteController::new(
        &h.ctx,
        RouteControllerConfig {
            cluster_cidrs: parse_cluster_cidrs("10.244.0.0/16").unwrap(),
            reconciliation_period: Duration::from_millis(200),
        },
    )
    .expect("fake has routes");
    h.spawn(controller.run());
    h.start_informers().await;
    h
}

fn route_pairs(cloud: &FakeCloud) -> Vec<(String, String)> {
    let mut v: Vec<_> = cloud
        .routes()
        .into_iter()
        .map(|r| (r.target_node, r.destination_cidr))
        .collect();
    v.sort();
    v
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

async fn network_condition(h: &Harness, name: &str, status: &str, reason: &str) {
    let nodes = h.nodes();
    eventually(
        &format!("{name} NetworkUnavailable={status} ({reason})"),
        SOON,
        || {
            let nodes = nodes.clone();
            async move {
                let n = nodes.get(name).await.ok()?;
                let c = n
                    .status?
                    .conditions?
                    .into_iter()
                    .find(|c| c.type_ == "NetworkUnavailable")?;
                (c.status == status && c.reason.as_deref() == Some(reason)).then_some(())
            }
        },
    )
    .await;
}

#[tokio::test]
async fn routes_follow_pod_cidrs_and_stale_ones_in_the_cluster_range_go() {
    let cloud = FakeCloud::new();
    cloud.insert_route(
        "kubernetes",
        Route {
            target_node: "gone".into(),
            destination_cidr: "10.244.7.0/24".into(),
            ..Default::default()
        },
    );
    cloud.insert_route(
        "kubernetes",
        Route {
            target_node: "vpn".into(),
            destination_cidr: "192.168.0.0/24".into(),
            ..Default::default()
        },
    );
    let h = start(cloud.clone()).await;
    h.create_node_with_cidr("node-a", Some("10.244.0.0/24"))
        .await;
    h.create_node_with_cidr("node-b", Some("10.244.1.0/24"))
        .await;

    let expected = pairs(&[
        ("node-a", "10.244.0.0/24"),
        ("node-b", "10.244.1.0/24"),
        ("vpn", "192.168.0.0/24"),
    ]);
    eventually("routes reconciled", SOON, || async {
        (route_pairs(&cloud) == expected).then_some(())
    })
    .await;
    network_condition(&h, "node-a", "False", "RouteCreated").await;
    network_condition(&h, "node-b", "False", "RouteCreated").await;

    // Deleting a node removes its route on a later pass.
    h.nodes()
        .delete("node-b", &Default::default())
        .await
        .unwrap();
    let expected = pairs(&[("node-a", "10.244.0.0/24"), ("vpn", "192.168.0.0/24")]);
    eventually("route of the deleted node gone", SOON, || async {
        (route_pairs(&cloud) == expected).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_failed_route_marks_the_node_network_unavailable_until_it_is_created() {
    let cloud = FakeCloud::new();
    cloud.fail_always("create-route", Failure::Error("route table full".into()));
    let h = start(cloud.clone()).await;
    h.create_node_with_cidr("node-a", Some("10.244.0.0/24"))
        .await;

    network_condition(&h, "node-a", "True", "NoRouteCreated").await;
    eventually("FailedToCreateRoute event", SOON, || async {
        h.events_for("node-a")
            .await
            .iter()
            .any(|e| {
                e.starts_with("Warning FailedToCreateRoute: Could not create route")
                    && e.contains("route table full")
            })
            .then_some(())
    })
    .await;

    cloud.heal("create-route");
    network_condition(&h, "node-a", "False", "RouteCreated").await;
    assert_eq!(route_pairs(&cloud), pairs(&[("node-a", "10.244.0.0/24")]));
}
