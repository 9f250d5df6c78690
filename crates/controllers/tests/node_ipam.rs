//! node-ipam-controller against the real apiserver.

mod common;

use std::collections::BTreeSet;

use common::{Harness, SOON, eventually};
use kube::api::DeleteParams;
use overcast_controllers::node_ipam::{MaskFlags, NodeIpamConfig, NodeIpamController};
use overcast_provider_fake::FakeCloud;

async fn cidrs_of(h: &Harness, name: &str) -> Vec<String> {
    let nodes = h.nodes();
    eventually(&format!("{name} has pod CIDRs"), SOON, || {
        let nodes = nodes.clone();
        async move {
            let n = nodes.get(name).await.ok()?;
            let spec = n.spec?;
            let list = spec.pod_cidrs.filter(|l| !l.is_empty())?;
            assert_eq!(
                spec.pod_cidr.as_deref(),
                Some(list[0].as_str()),
                "podCIDR is podCIDRs[0]"
            );
            Some(list)
        }
    })
    .await
}

#[tokio::test]
async fn nodes_get_distinct_cidrs_existing_ones_are_kept_and_freed_ones_are_reused() {
    let mut h = Harness::start(FakeCloud::new()).await;
    // A Node from before the controller started: its CIDR must not be handed out again.
    h.create_node_with_cidr("old", Some("10.244.0.0/24")).await;
    let config = NodeIpamConfig::from_flags("10.244.0.0/22", MaskFlags::default(), "").unwrap();
    let controller = NodeIpamController::new(&h.ctx, config).unwrap();
    h.spawn(controller.run());
    h.start_informers().await;

    for name in ["a", "b", "c"] {
        h.create_node_with_cidr(name, None).await;
    }
    let mut seen = BTreeSet::from(["10.244.0.0/24".to_string()]);
    for name in ["a", "b", "c"] {
        let cidrs = cidrs_of(&h, name).await;
        assert_eq!(cidrs.len(), 1);
        assert!(
            seen.insert(cidrs[0].clone()),
            "{} handed out twice",
            cidrs[0]
        );
    }
    assert_eq!(cidrs_of(&h, "old").await, vec!["10.244.0.0/24"]);

    // The /22 holds four /24s: the fifth Node waits, with an Event saying why.
    h.create_node_with_cidr("d", None).await;
    eventually("CIDRNotAvailable event", SOON, || async {
        h.events_for("d")
            .await
            .iter()
            .any(|e| {
                e.starts_with("Normal CIDRNotAvailable: Node d status is now: CIDRNotAvailable")
            })
            .then_some(())
    })
    .await;

    let freed = cidrs_of(&h, "b").await[0].clone();
    h.nodes()
        .delete("b", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(cidrs_of(&h, "d").await, vec![freed]);
}

#[tokio::test]
async fn dual_stack_nodes_get_one_cidr_per_family() {
    let mut h = Harness::start(FakeCloud::new()).await;
    let config = NodeIpamConfig::from_flags(
        "10.244.0.0/16,fd00:10::/56",
        MaskFlags::default(),
        "10.244.0.0/24",
    )
    .unwrap();
    let controller = NodeIpamController::new(&h.ctx, config).unwrap();
    h.spawn(controller.run());
    h.start_informers().await;
    h.create_node_with_cidr("a", None).await;
    let cidrs = cidrs_of(&h, "a").await;
    assert_eq!(cidrs.len(), 2);
    assert_ne!(
        cidrs[0], "10.244.0.0/24",
        "the service range is never handed out"
    );
    assert!(cidrs[0].starts_with("10.244."), "{cidrs:?}");
    assert!(cidrs[1].starts_with("fd00:10:"), "{cidrs:?}");
}
