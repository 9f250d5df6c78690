//! The example provider, built as its own binary, initialises a Node.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, NodeSpec, Taint};
use kube::Api;
use kube::api::{ObjectMeta, PostParams};

#[tokio::test]
async fn the_example_provider_initialises_a_node() {
    let plane = overcast_testenv::ControlPlane::start()
        .await
        .expect("control plane (run `make testenv`)");
    let client = plane.client().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("minimal.conf");
    std::fs::write(&config, "instance-type = m1.small\nzone = zone-a\n").unwrap();
    let log = std::fs::File::create(dir.path().join("ccm.log")).unwrap();
    let mut ccm = Command::new(env!("CARGO_BIN_EXE_minimal-ccm"))
        .args([
            "--cloud-provider=minimal",
            &format!("--cloud-config={}", config.display()),
            &format!("--kubeconfig={}", plane.kubeconfig_path().display()),
            "--secure-port=0",
            "--leader-elect=false",
        ])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();

    let nodes: Api<Node> = Api::all(client);
    let node = Node {
        metadata: ObjectMeta {
            name: Some("node-1".into()),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            taints: Some(vec![Taint {
                key: "node.cloudprovider.kubernetes.io/uninitialized".into(),
                value: Some("true".into()),
                effect: "NoSchedule".into(),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    nodes.create(&PostParams::default(), &node).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(45);
    let initialised = loop {
        let n = nodes.get("node-1").await.unwrap();
        let taints = n
            .spec
            .as_ref()
            .unwrap()
            .taints
            .as_deref()
            .unwrap_or_default();
        if !taints
            .iter()
            .any(|t| t.key == "node.cloudprovider.kubernetes.io/uninitialized")
        {
            break n;
        }
        if Instant::now() > deadline {
            let _ = ccm.kill();
            panic!(
                "not initialised: {:?}; log:\n{}",
                n.spec,
                std::fs::read_to_string(dir.path().join("ccm.log")).unwrap()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let _ = ccm.kill();
    let _ = ccm.wait();
    assert_eq!(
        initialised.spec.unwrap().provider_id.as_deref(),
        Some("minimal://node-1")
    );
    let labels = initialised.metadata.labels.unwrap();
    assert_eq!(labels["node.kubernetes.io/instance-type"], "m1.small");
    assert_eq!(labels["topology.kubernetes.io/zone"], "zone-a");
}

/// A vendor's binary is theirs: `--version` and `--help` carry the name
/// and version its builder set, not overcast-ccm's.
#[test]
fn the_vendor_binary_carries_its_own_name_and_version() {
    let run = |flag: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_minimal-ccm"))
            .arg(flag)
            .output()
            .unwrap();
        assert!(out.status.success(), "{flag}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(run("--version"), "minimal-ccm 0.3.0\n");
    let help = run("--help");
    assert!(help.contains("Usage: minimal-ccm"), "{help}");
}
