//! service-lb-controller against the real apiserver, with the fake cloud.

mod common;

use std::collections::BTreeMap;

use common::{Harness, SOON, eventually};
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use kube::Api;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use overcast_cloud_provider::names::{
    FINALIZER_LOAD_BALANCER_CLEANUP, LABEL_EXCLUDE_FROM_EXTERNAL_LOAD_BALANCERS,
};
use overcast_controllers::service::{ServiceController, ServiceControllerConfig};
use overcast_provider_fake::{Failure, FakeCloud};
use serde_json::json;

async fn start(cloud: FakeCloud) -> Harness {
    let mut h = Harness::start(cloud).await;
    let controller =
        ServiceController::new(&h.ctx, ServiceControllerConfig::default()).expect("fake has LBs");
    h.spawn(controller.run());
    h.start_informers().await;
    h
}

fn services(h: &Harness) -> Api<Service> {
    Api::namespaced(h.client.clone(), "default")
}

async fn create_service(h: &Harness, name: &str, type_: &str, class: Option<&str>) -> Service {
    let svc = Service {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some(type_.into()),
            load_balancer_class: class.map(Into::into),
            selector: Some(BTreeMap::from([("app".to_string(), name.to_string())])),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    services(h)
        .create(&PostParams::default(), &svc)
        .await
        .expect("create service")
}

fn ingress_ip(svc: &Service) -> Option<String> {
    svc.status
        .as_ref()?
        .load_balancer
        .as_ref()?
        .ingress
        .as_ref()?
        .first()?
        .ip
        .clone()
}

fn has_finalizer(svc: &Service) -> bool {
    svc.metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == FINALIZER_LOAD_BALANCER_CLEANUP)
}

async fn with_ingress(h: &Harness, name: &str) -> Service {
    let api = services(h);
    eventually(&format!("service {name} has an ingress IP"), SOON, || {
        let api = api.clone();
        async move {
            let svc = api.get(name).await.ok()?;
            ingress_ip(&svc).is_some().then_some(svc)
        }
    })
    .await
}

async fn events_include(h: &Harness, name: &str, wanted: &[&str]) {
    eventually(&format!("events {wanted:?} for {name}"), SOON, || async {
        let events = h.events_for(name).await;
        wanted
            .iter()
            .all(|w| events.iter().any(|e| e.starts_with(w)))
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_load_balancer_follows_its_service_from_creation_to_deletion() {
    let cloud = FakeCloud::new();
    let h = start(cloud.clone()).await;
    h.create_node("worker-1", "fake://worker-1").await;
    h.create_node("worker-2", "fake://worker-2").await;
    create_service(&h, "web", "LoadBalancer", None).await;

    let svc = with_ingress(&h, "web").await;
    assert!(has_finalizer(&svc));
    let balancers = cloud.balancers();
    assert_eq!(balancers.len(), 1);
    let balancer = balancers.values().next().unwrap();
    assert_eq!(balancer.service, "default/web");
    assert_eq!(balancer.hosts, vec!["worker-1", "worker-2"]);
    assert_eq!(
        ingress_ip(&svc),
        balancer.status.ingress.as_ref().unwrap()[0].ip
    );
    events_include(
        &h,
        "web",
        &[
            "Normal EnsuringLoadBalancer: Ensuring load balancer",
            "Normal EnsuredLoadBalancer: Ensured load balancer",
        ],
    )
    .await;

    services(&h)
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    let api = services(&h);
    eventually("service gone", SOON, || {
        let api = api.clone();
        async move { api.get_opt("web").await.unwrap().is_none().then_some(()) }
    })
    .await;
    assert!(
        cloud.balancers().is_empty(),
        "the balancer is deleted with its Service"
    );
    events_include(
        &h,
        "web",
        &["Normal DeletingLoadBalancer", "Normal DeletedLoadBalancer"],
    )
    .await;
}

#[tokio::test]
async fn changing_the_type_away_from_load_balancer_deletes_the_balancer_and_keeps_the_service() {
    let cloud = FakeCloud::new();
    let h = start(cloud.clone()).await;
    h.create_node("worker-1", "fake://worker-1").await;
    create_service(&h, "web", "LoadBalancer", None).await;
    with_ingress(&h, "web").await;

    services(&h)
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"type": "ClusterIP", "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": null}]}})),
        )
        .await
        .unwrap();
    let api = services(&h);
    let svc = eventually("finalizer and status gone", SOON, || {
        let api = api.clone();
        async move {
            let svc = api.get("web").await.ok()?;
            (!has_finalizer(&svc) && ingress_ip(&svc).is_none()).then_some(svc)
        }
    })
    .await;
    assert_eq!(svc.spec.unwrap().type_.as_deref(), Some("ClusterIP"));
    assert!(cloud.balancers().is_empty());
}

#[tokio::test]
async fn services_with_a_load_balancer_class_are_left_alone() {
    let cloud = FakeCloud::new();
    let h = start(cloud.clone()).await;
    h.create_node("worker-1", "fake://worker-1").await;
    create_service(&h, "classed", "LoadBalancer", Some("example.com/other-lb")).await;
    // A classless one after it: once it is served, the classed one had its chance.
    create_service(&h, "ours", "LoadBalancer", None).await;
    with_ingress(&h, "ours").await;

    let classed = services(&h).get("classed").await.unwrap();
    assert!(!has_finalizer(&classed));
    assert!(ingress_ip(&classed).is_none());
    assert!(
        cloud
            .load_balancer_calls()
            .iter()
            .all(|c| c.service != "default/classed")
    );
}

#[tokio::test]
async fn a_change_of_the_eligible_node_set_reaches_update_load_balancer() {
    let cloud = FakeCloud::new();
    let h = start(cloud.clone()).await;
    h.create_node("worker-1", "fake://worker-1").await;
    create_service(&h, "web", "LoadBalancer", None).await;
    with_ingress(&h, "web").await;

    h.create_node("worker-2", "fake://worker-2").await;
    let hosts = |cloud: &FakeCloud| cloud.balancers().values().next().map(|b| b.hosts.clone());
    eventually("worker-2 added to the balancer", SOON, || async {
        (hosts(&cloud) == Some(vec!["worker-1".into(), "worker-2".into()])).then_some(())
    })
    .await;
    assert!(cloud.load_balancer_calls().iter().any(|c| c.op == "update"));

    h.nodes()
        .patch(
            "worker-1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {LABEL_EXCLUDE_FROM_EXTERNAL_LOAD_BALANCERS: "true"}}})),
        )
        .await
        .unwrap();
    eventually(
        "excluded worker-1 removed from the balancer",
        SOON,
        || async { (hosts(&cloud) == Some(vec!["worker-2".into()])).then_some(()) },
    )
    .await;
    events_include(
        &h,
        "web",
        &["Normal UpdatedLoadBalancer: Updated load balancer with new hosts"],
    )
    .await;
    // Each update timed, as upstream's lockedUpdateLoadBalancerHosts (other
    // tests in this process may add to the count).
    let registry = prometheus::Registry::new();
    overcast_controllers::metrics::register(&registry).unwrap();
    let timed = registry
        .gather()
        .into_iter()
        .find(|f| f.name() == "service_controller_update_loadbalancer_host_latency_seconds")
        .map(|f| f.get_metric()[0].get_histogram().get_sample_count());
    assert!(timed >= Some(2), "{timed:?}");
}

#[tokio::test]
async fn a_cloud_error_is_reported_and_retried_after_back_off() {
    let cloud = FakeCloud::new();
    cloud.fail_next("create", 1, Failure::Error("quota exceeded".into()));
    let h = start(cloud.clone()).await;
    h.create_node("worker-1", "fake://worker-1").await;
    create_service(&h, "web", "LoadBalancer", None).await;

    events_include(
        &h,
        "web",
        &["Warning SyncLoadBalancerFailed: Error syncing load balancer: failed to ensure load balancer: fake create: quota exceeded"],
    )
    .await;
    let svc = services(&h).get("web").await.unwrap();
    assert!(
        has_finalizer(&svc),
        "the finalizer is added before the cloud is called"
    );
    // The retry comes after upstream's 5 s back-off and succeeds.
    let svc = with_ingress(&h, "web").await;
    assert!(ingress_ip(&svc).is_some());
    assert_eq!(cloud.count("create"), 2);
}

#[tokio::test]
async fn deletion_waits_until_the_cloud_confirms() {
    let cloud = FakeCloud::new();
    let h = start(cloud.clone()).await;
    h.create_node("worker-1", "fake://worker-1").await;
    create_service(&h, "web", "LoadBalancer", None).await;
    with_ingress(&h, "web").await;

    cloud.fail_always("delete", Failure::Error("balancer busy".into()));
    services(&h)
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    events_include(&h, "web", &["Warning SyncLoadBalancerFailed"]).await;
    let svc = services(&h)
        .get("web")
        .await
        .expect("kept while the cloud refuses");
    assert!(svc.metadata.deletion_timestamp.is_some());
    assert_eq!(cloud.balancers().len(), 1);

    cloud.heal("delete");
    let api = services(&h);
    eventually(
        "service gone after the cloud deleted the balancer",
        SOON,
        || {
            let api = api.clone();
            async move { api.get_opt("web").await.unwrap().is_none().then_some(()) }
        },
    )
    .await;
    assert!(cloud.balancers().is_empty());
}
