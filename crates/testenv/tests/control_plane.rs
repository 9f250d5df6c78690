//! Proves the harness against the real, pinned kube-apiserver + etcd.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, Service, ServicePort, ServiceSpec};
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::{Api, Client};
use overcast_testenv::{ControlPlane, Error};

/// The release testenv/versions.env pins; the apiserver must report exactly it.
fn pinned_kube_version() -> &'static str {
    include_str!("../../../testenv/versions.env")
        .lines()
        .find_map(|l| l.strip_prefix("KUBE_VERSION="))
        .expect("KUBE_VERSION in testenv/versions.env")
        .trim()
}

async fn client() -> Client {
    overcast_testenv::shared()
        .await
        .expect("control plane (run `make testenv`)")
        .client()
        .await
        .expect("client")
}

#[tokio::test]
async fn apiserver_is_the_pinned_release() {
    let client = client().await;
    let info = client.apiserver_version().await.expect("GET /version");
    assert_eq!(info.git_version, pinned_kube_version());
}

#[tokio::test]
async fn node_and_load_balancer_service_round_trip_with_allocated_node_port() {
    let client = client().await;

    let nodes: Api<Node> = Api::all(client.clone());
    let node = Node {
        metadata: ObjectMeta {
            name: Some("harness-node-1".into()),
            labels: Some(BTreeMap::from([(
                "node.kubernetes.io/instance-type".to_string(),
                "bm.large".to_string(),
            )])),
            ..Default::default()
        },
        ..Default::default()
    };
    nodes
        .create(&PostParams::default(), &node)
        .await
        .expect("create Node");
    let read = nodes.get("harness-node-1").await.expect("get Node");
    assert_eq!(
        read.metadata.labels.unwrap()["node.kubernetes.io/instance-type"],
        "bm.large"
    );
    assert!(read.metadata.uid.is_some(), "the apiserver assigns a UID");

    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let svc = Service {
        metadata: ObjectMeta {
            name: Some("harness-lb".into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("LoadBalancer".into()),
            selector: Some(BTreeMap::from([("app".to_string(), "web".to_string())])),
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
    services
        .create(&PostParams::default(), &svc)
        .await
        .expect("create Service");
    let read = services.get("harness-lb").await.expect("get Service");
    let spec = read.spec.expect("spec");
    assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
    let node_port = spec.ports.unwrap()[0]
        .node_port
        .expect("apiserver allocates a NodePort");
    assert!(
        (30000..=32767).contains(&node_port),
        "NodePort {node_port} is outside the default range"
    );
    let cluster_ip = spec.cluster_ip.expect("apiserver allocates a ClusterIP");
    assert!(cluster_ip.starts_with("10."), "ClusterIP {cluster_ip}");
    // No cloud controller runs here, so nothing has provisioned the balancer.
    let ingress = read
        .status
        .and_then(|s| s.load_balancer)
        .and_then(|lb| lb.ingress);
    assert!(ingress.unwrap_or_default().is_empty());

    services
        .delete("harness-lb", &DeleteParams::default())
        .await
        .expect("delete Service");
    nodes
        .delete("harness-node-1", &DeleteParams::default())
        .await
        .expect("delete Node");
}

#[tokio::test]
async fn kubectl_talks_to_the_control_plane() {
    let plane = overcast_testenv::shared().await.expect("control plane");
    let out = plane
        .kubectl()
        .args(["get", "namespace", "kube-system", "-o", "name"])
        .output()
        .expect("run kubectl");
    assert!(
        out.status.success(),
        "kubectl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "namespace/kube-system"
    );
}

#[tokio::test]
async fn a_dropped_control_plane_leaves_no_process_or_directory() {
    let plane = ControlPlane::start().await.expect("own control plane");
    let dir = plane.dir().to_path_buf();
    let port: u16 = plane.server().rsplit(':').next().unwrap().parse().unwrap();
    assert!(dir.join("kubeconfig").is_file());
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());

    drop(plane);

    assert!(!dir.exists(), "{} was left behind", dir.display());
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the apiserver still listens on {port}"
    );
}

#[tokio::test]
async fn missing_binaries_name_make_testenv() {
    let empty = tempfile::tempdir().unwrap();
    let err = ControlPlane::start_from(empty.path()).await.unwrap_err();
    assert!(matches!(
        err,
        Error::BinaryMissing {
            name: "kube-apiserver",
            ..
        }
    ));
    assert!(err.to_string().contains("make testenv"), "{err}");
}
