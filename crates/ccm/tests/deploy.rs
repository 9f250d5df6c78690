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

/// The chart rendered with `values` and applied (server-side dry run, so
/// validated and defaulted by the apiserver): the objects, as JSON.
fn applied_chart(plane: &ControlPlane, values: &[&str]) -> Vec<serde_json::Value> {
    let chart = deploy("helm/overcast-ccm");
    let template: Vec<&str> = [
        "template",
        "ccm",
        chart.to_str().unwrap(),
        "--namespace",
        "kube-system",
    ]
    .into_iter()
    .chain(values.iter().copied())
    .collect();
    let rendered = helm(&template);
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &rendered).unwrap();
    let applied = kubectl(
        plane,
        &[
            "apply",
            "--dry-run=server",
            "-o",
            "json",
            "-f",
            file.path().to_str().unwrap(),
        ],
    );
    let list: serde_json::Value = serde_json::from_str(&applied).unwrap();
    list["items"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| vec![list])
}

fn object_of<'a>(objects: &'a [serde_json::Value], kind: &str) -> Option<&'a serde_json::Value> {
    objects.iter().find(|o| o["kind"] == kind)
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
    let plane = ControlPlane::start().await.expect("control plane");
    let objects = applied_chart(&plane, &values);
    let deployment = object_of(&objects, "Deployment").expect("a Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    assert!(
        args.contains(&"--cloud-provider=local")
            && args.contains(&"--cloud-config=/etc/overcast/cloud.yaml"),
        "the values reach the container's flags: {args:?}"
    );
    // For local the lease is the VIP failover timer (make bench-failover).
    for flag in [
        "--leader-elect-lease-duration=1s",
        "--leader-elect-renew-deadline=800ms",
        "--leader-elect-retry-period=200ms",
    ] {
        assert!(args.contains(&flag), "{flag} in {args:?}");
    }
    // The local provider adds VIPs and announces them: it gets exactly the
    // capabilities for that, as root (added capabilities are not effective
    // for a non-root container).
    let security = &container["securityContext"];
    assert_eq!(
        security["capabilities"],
        serde_json::json!({"drop": ["ALL"], "add": ["NET_ADMIN", "NET_RAW", "NET_BIND_SERVICE"]}),
    );
    assert_eq!(security["runAsUser"], 0);
    // Two host-network replicas can never share a node: the port is a host
    // port (the scheduler's NodePorts filter) and anti-affinity is required.
    assert_eq!(container["ports"][0]["hostPort"], 10258);
    assert_eq!(
        pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]["topologyKey"],
        "kubernetes.io/hostname"
    );
    let pdb = object_of(&objects, "PodDisruptionBudget").expect("a PodDisruptionBudget");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    assert!(
        object_of(&objects, "Service").is_none(),
        "no metrics Service by default"
    );

    // Another provider: no capabilities, not root; the ServiceAccount
    // carries an IAM role; env reaches the container; a DaemonSet has no
    // PodDisruptionBudget and no required anti-affinity.
    let objects = applied_chart(
        &plane,
        &[
            "--set",
            "cloudProvider=aws,kind=DaemonSet,metrics.service.enabled=true",
            "--set",
            "serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn=arn:aws:iam::111122223333:role/ccm",
            "--set",
            "env[0].name=AWS_REGION,env[0].value=eu-west-1",
        ],
    );
    let daemonset = object_of(&objects, "DaemonSet").expect("a DaemonSet");
    let pod = &daemonset["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(
        container["securityContext"]["capabilities"],
        serde_json::json!({"drop": ["ALL"]})
    );
    assert_eq!(container["securityContext"]["runAsNonRoot"], true);
    assert_eq!(container["env"][0]["name"], "NODE_NAME");
    assert_eq!(
        container["env"][0]["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.nodeName"
    );
    assert_eq!(
        container["env"][1],
        serde_json::json!({"name": "AWS_REGION", "value": "eu-west-1"})
    );
    assert!(pod["affinity"].is_null(), "{}", pod["affinity"]);
    assert!(object_of(&objects, "PodDisruptionBudget").is_none());
    // Upstream's lease timings for every provider but local.
    let args = container["args"].to_string();
    assert!(
        args.contains("--leader-elect-lease-duration=15s")
            && args.contains("--leader-elect-retry-period=2s"),
        "{args}"
    );
    let account = object_of(&objects, "ServiceAccount").unwrap();
    assert_eq!(
        account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
        "arn:aws:iam::111122223333:role/ccm"
    );
    let service = object_of(&objects, "Service").expect("the metrics Service");
    assert_eq!(service["spec"]["ports"][0]["port"], 10258);

    // The ServiceMonitor needs the Prometheus operator's CRDs, which the test
    // cluster has not: rendered and linted only.
    let monitor = [
        "--set",
        "cloudProvider=aws,metrics.serviceMonitor.enabled=true,metrics.serviceMonitor.labels.release=prom",
    ];
    let lint: Vec<&str> = ["lint", "--strict", chart]
        .into_iter()
        .chain(monitor)
        .collect();
    helm(&lint);
    let template: Vec<&str> = ["template", "ccm", chart]
        .into_iter()
        .chain(monitor)
        .collect();
    let rendered = helm(&template);
    let doc = rendered
        .split("\n---")
        .find(|d| d.contains("kind: ServiceMonitor"))
        .expect("a ServiceMonitor");
    assert!(
        doc.contains("release: prom") && doc.contains("port: https"),
        "{doc}"
    );
}

/// A default provider would act on the cluster it is installed in (the fake
/// one deletes every Node it does not know); a misspelled value would be
/// ignored. The chart refuses both, naming what is wrong.
#[test]
fn the_helm_chart_refuses_no_provider_and_unknown_values() {
    let chart = deploy("helm/overcast-ccm");
    let chart = chart.to_str().unwrap();
    for (values, expected) in [
        (vec![], "cloudProvider is required"),
        (
            vec!["--set", "cloudProvider=local,replica=3"],
            "'replica' not allowed",
        ),
        (
            vec!["--set", "cloudProvider=local,kind=StatefulSet"],
            "kind",
        ),
        (
            vec!["--set", "cloudProvider=local,image.tags=1"],
            "'tags' not allowed",
        ),
    ] {
        let args: Vec<&str> = ["template", "ccm", chart]
            .into_iter()
            .chain(values.iter().copied())
            .collect();
        let out = common::helm_output(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "helm {args:?} rendered");
        assert!(stderr.contains(expected), "helm {args:?}: {stderr}");
    }
}
