//! filecloud-ccm, built as a vendor builds it, against a real apiserver:
//! Nodes initialised from the machine files, a LoadBalancer Service's
//! balancer written, addressed and deleted, and the binary's own metrics
//! under its own prefix.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Service, ServicePort, ServiceSpec};
use kube::Api;
use kube::api::{DeleteParams, ObjectMeta, PostParams};

struct Ccm {
    child: Child,
    log: std::path::PathBuf,
}

impl Ccm {
    fn start(plane: &overcast_testenv::ControlPlane, dir: &Path, extra: &[&str]) -> Self {
        let state = dir.join("state");
        let config = dir.join("filecloud.json");
        let json = format!(
            r#"{{"state": "{}", "addresses": ["192.0.2.10", "192.0.2.11"]}}"#,
            state.display()
        );
        std::fs::write(&config, json).unwrap();
        let log = dir.join("ccm.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_filecloud-ccm"))
            .args([
                "--cloud-provider=filecloud",
                &format!("--cloud-config={}", config.display()),
                &format!("--kubeconfig={}", plane.kubeconfig_path().display()),
                "--leader-elect=false",
            ])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        Self { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Ccm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` every 200 ms for up to 45 s.
async fn wait_for<T, F: Future<Output = Option<T>>>(
    what: &str,
    ccm: &Ccm,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out: {what}; log:\n{}",
            ccm.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn write_machine(dir: &Path, name: &str, ip: &str) {
    let machines = dir.join("state/machines");
    std::fs::create_dir_all(&machines).unwrap();
    let json = format!(r#"{{"type": "f1.small", "zone": "zone-a", "region": "r1", "ip": "{ip}"}}"#);
    std::fs::write(machines.join(format!("{name}.json")), json).unwrap();
}

#[tokio::test]
async fn filecloud_initialises_nodes_and_serves_a_load_balancer_service() {
    let plane = overcast_testenv::ControlPlane::start()
        .await
        .expect("control plane (run `make testenv`)");
    let client = plane.client().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_machine(dir.path(), "node-1", "10.0.0.1");
    let ccm = Ccm::start(&plane, dir.path(), &["--secure-port=0"]);

    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .create(
            &PostParams::default(),
            &overcast_testenv::uninitialized_node("node-1"),
        )
        .await
        .unwrap();
    let node = wait_for("node-1 initialised", &ccm, || async {
        let n = nodes.get("node-1").await.ok()?;
        (!overcast_testenv::has_uninitialized_taint(&n)).then_some(n)
    })
    .await;
    assert_eq!(
        node.spec.unwrap().provider_id.as_deref(),
        Some("filecloud://node-1")
    );
    let labels = node.metadata.labels.unwrap();
    assert_eq!(labels["node.kubernetes.io/instance-type"], "f1.small");
    assert_eq!(labels["topology.kubernetes.io/zone"], "zone-a");
    assert_eq!(labels["topology.kubernetes.io/region"], "r1");
    let addresses = node.status.unwrap().addresses.unwrap();
    assert_eq!(addresses[0].address, "10.0.0.1");

    let services: Api<Service> = Api::namespaced(client.clone(), "default");
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
    let created = services.create(&PostParams::default(), &svc).await.unwrap();
    let ingress = wait_for("web's address", &ccm, || async {
        let s = services.get("web").await.ok()?;
        s.status?.load_balancer?.ingress?.first()?.ip.clone()
    })
    .await;
    // The first of the addresses.
    assert_eq!(ingress, "192.0.2.10");
    let uid = created.metadata.uid.unwrap().replace('-', "");
    let file = dir
        .path()
        .join(format!("state/balancers/a{}.json", &uid[..31]));
    let balancer = std::fs::read_to_string(&file).unwrap();
    assert!(balancer.contains("\"10.0.0.1\""), "{balancer}");
    assert!(
        balancer.contains("TCP/80 -> 3"),
        "a nodePort backs port 80: {balancer}"
    );

    services
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("web deleted with its balancer", &ccm, || async {
        let gone = matches!(services.get("web").await, Err(kube::Error::Api(e)) if e.code == 404);
        (gone && !file.exists()).then_some(())
    })
    .await;
}

/// The binary's own metrics carry its name: `filecloud_shadow_divergences`,
/// and nothing of overcast's prefix.
#[tokio::test]
async fn filecloud_metrics_carry_the_vendors_prefix() {
    let plane = overcast_testenv::ControlPlane::start()
        .await
        .expect("control plane (run `make testenv`)");
    let client = plane.client().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_machine(dir.path(), "node-2", "10.0.0.2");
    let nodes: Api<Node> = Api::all(client);
    nodes
        .create(
            &PostParams::default(),
            &overcast_testenv::uninitialized_node("node-2"),
        )
        .await
        .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ccm = Ccm::start(
        &plane,
        dir.path(),
        &[
            "--shadow",
            &format!("--secure-port={port}"),
            "--bind-address=127.0.0.1",
            "--authorization-always-allow-paths=/metrics",
        ],
    );
    let metrics = wait_for("a shadow divergence in /metrics", &ccm, || async {
        let (_, body) = overcast_testenv::https_get(port, "/metrics", None)?;
        body.contains("filecloud_shadow_divergences{")
            .then_some(body)
    })
    .await;
    let node_divergences = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                r#"filecloud_shadow_divergences{controller="node-controller",kind="Node"} "#,
            )
        })
        .and_then(|n| n.trim().parse::<i64>().ok());
    assert!(node_divergences >= Some(1), "{metrics}");
    assert!(!metrics.contains("overcast_"), "{metrics}");
}
