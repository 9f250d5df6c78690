//! deploy/ against the real apiserver: the manifests are valid, and
//! overcast-ccm does its whole job with nothing but deploy/rbac.yaml's rights.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use overcast_testenv::ControlPlane;

const BIN: &str = env!("CARGO_BIN_EXE_overcast-ccm");

fn deploy(file: &str) -> PathBuf {
    overcast_testenv::workspace_root().join("deploy").join(file)
}

#[tokio::test]
async fn the_manifests_are_accepted_by_the_apiserver() {
    let plane = ControlPlane::start().await.expect("control plane");
    for file in [
        "rbac.yaml",
        "deployment.yaml",
        "daemonset-control-plane.yaml",
        "local-provider.yaml",
    ] {
        let path = deploy(file);
        kubectl(
            &plane,
            &["apply", "--dry-run=server", "-f", path.to_str().unwrap()],
        );
    }
}

#[tokio::test]
async fn overcast_ccm_needs_no_more_than_the_rbac_manifest_grants() {
    let plane = ControlPlane::start().await.expect("control plane");
    let admin = plane.client().await.unwrap();
    kubectl(
        &plane,
        &["apply", "-f", deploy("rbac.yaml").to_str().unwrap()],
    );
    let token = kubectl(
        &plane,
        &[
            "create",
            "token",
            "overcast-ccm",
            "-n",
            "kube-system",
            "--duration=1h",
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let admin_kubeconfig = std::fs::read_to_string(plane.kubeconfig_path()).unwrap();
    let kubeconfig = dir.path().join("sa.kubeconfig");
    let sa_kubeconfig: String = admin_kubeconfig
        .lines()
        .map(|l| match l.trim_start().strip_prefix("token: ") {
            Some(_) => format!("    token: {}", token.trim()),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&kubeconfig, sa_kubeconfig).unwrap();
    let cloud_config = dir.path().join("fake.yaml");
    std::fs::write(&cloud_config, "anyInstance:\n  instanceType: bm.small\n").unwrap();

    let secure_port = free_port();
    let ccm = Ccm::start(
        BIN,
        &kubeconfig,
        dir.path(),
        &[
            "--cloud-provider=fake",
            &format!("--cloud-config={}", cloud_config.display()),
            &format!("--secure-port={secure_port}"),
        ],
    );
    eventually("leading with the service account", SOON, || async {
        ccm.is_leader().then_some(())
    })
    .await;

    // The secure port asks the apiserver, with the service account's
    // rights, who a caller is and what it may do. A scraper gets the
    // non-resource rule a Prometheus would.
    let scraper = dir.path().join("scraper.yaml");
    std::fs::write(
        &scraper,
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: scraper, namespace: default}\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: scraper}\n\
         rules: [{nonResourceURLs: [/metrics], verbs: [get]}]\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: scraper}\n\
         roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: scraper}\n\
         subjects: [{kind: ServiceAccount, name: scraper, namespace: default}]\n",
    )
    .unwrap();
    kubectl(&plane, &["apply", "-f", scraper.to_str().unwrap()]);
    let scraper_token = kubectl(&plane, &["create", "token", "scraper", "-n", "default"])
        .trim()
        .to_string();
    let get = |path: &'static str, token: Option<String>| async move {
        tokio::task::spawn_blocking(move || https_get(secure_port, path, token.as_deref()))
            .await
            .unwrap()
            .expect("an HTTPS answer")
    };
    assert_eq!(get("/healthz", None).await.0, 200, "always allowed");
    let (status, body) = get("/metrics", None).await;
    assert_eq!(status, 403, "anonymous: {body}");
    assert!(body.contains("system:anonymous"), "{body}");
    // A trailing slash is authorised as the path it serves.
    assert_eq!(get("/metrics/", None).await.0, 403);
    assert_eq!(get("/metrics", Some("not-a-token".into())).await.0, 401);
    let (status, body) = get("/metrics", Some(token.trim().to_string())).await;
    assert_eq!(
        status, 403,
        "the CCM's own account has no /metrics rule: {body}"
    );
    let (status, body) = get("/metrics", Some(scraper_token)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("leader_election_master_status"));

    create_tainted_node(&admin, "node-1").await;
    initialised(&admin, "node-1").await;

    let services: Api<Service> = Api::namespaced(admin.clone(), "default");
    let svc = Service {
        metadata: ObjectMeta {
            name: Some("web".into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("LoadBalancer".into()),
            ports: Some(vec![ServicePort {
                port: 80,
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    services.create(&PostParams::default(), &svc).await.unwrap();
    eventually("service has an ingress", SOON, || {
        let services = services.clone();
        async move {
            let s = services.get("web").await.ok()?;
            s.status?
                .load_balancer?
                .ingress
                .filter(|i| !i.is_empty())
                .map(|_| ())
        }
    })
    .await;
    delete_service_and_wait(&services, "web").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let log = ccm.log_text();
    assert!(
        !log.to_lowercase().contains("forbidden"),
        "a request was forbidden:\n{log}"
    );
}

#[tokio::test]
async fn the_helm_chart_lints_renders_and_is_accepted_by_the_apiserver() {
    let chart = deploy("helm/overcast-ccm");
    let chart = chart.to_str().unwrap();
    let values = [
        "--set",
        "cloudProvider=local",
        "--set-string",
        "cloudConfig=instances: []\n",
    ];
    let lint: Vec<&str> = ["lint", "--strict", chart]
        .into_iter()
        .chain(values)
        .collect();
    helm(&lint);
    let template: Vec<&str> = ["template", "ccm", chart, "--namespace", "kube-system"]
        .into_iter()
        .chain(values)
        .collect();
    let rendered = helm(&template);
    assert!(
        rendered.contains("--cloud-provider=local")
            && rendered.contains("--cloud-config=/etc/overcast/cloud.yaml"),
        "the values reach the container's flags:\n{rendered}"
    );
    let plane = ControlPlane::start().await.expect("control plane");
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &rendered).unwrap();
    let applied = kubectl(
        &plane,
        &[
            "apply",
            "--dry-run=server",
            "-f",
            file.path().to_str().unwrap(),
        ],
    );
    for kind in ["serviceaccount/ccm", "deployment.apps/ccm"] {
        assert!(applied.contains(kind), "{kind} in:\n{applied}");
    }
}
