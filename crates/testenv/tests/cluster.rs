//! The real-node cluster itself: kubelets register as a cluster with an
//! external CCM has them, Pods run and reach each other across nodes and
//! through kube-proxy, and nothing is left on the host afterwards — also not
//! after the test process was killed with SIGKILL.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::PostParams;
use overcast_testenv::{Cluster, cluster::ECHO_SERVER, eventually};

const SOON: Duration = Duration::from_secs(90);
/// The tests here look at the whole host's links and cgroups: one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
/// Set in the child process of the SIGKILL test.
const CHILD_ENV: &str = "OVERCAST_TEST_CLUSTER_CHILD_DIR";

fn echo_pod(name: &str, node: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"app": "echo"}},
        "spec": {
            "nodeName": node,
            // The nodes stay tainted uninitialized: no CCM runs here.
            "tolerations": [{"operator": "Exists"}],
            "containers": [{"name": "echo", "image": ECHO_SERVER, "imagePullPolicy": "Never"}],
        }
    }))
    .unwrap()
}

async fn running_pod_ip(pods: &Api<Pod>, name: &str) -> String {
    eventually(&format!("Pod {name} Running with an IP"), SOON, || async {
        let pod = pods.get(name).await.ok()?;
        let status = pod.status?;
        (status.phase.as_deref() == Some("Running")).then_some(())?;
        status.pod_ip
    })
    .await
}

fn kubectl_exec(cluster: &Cluster, pod: &str, args: &[&str]) -> Result<String, String> {
    let out = cluster
        .plane()
        .kubectl()
        .args(["exec", pod, "--"])
        .args(args)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).to_string())
    }
}

/// What a cluster leaves on the host: its links, namespaces and cgroups.
/// What of the cluster slot whose directory is `slot_dir` (`…/slot-<k>`)
/// is on the machine: links, namespaces and cgroups named `ovc<k>-…`. Only
/// this slot's: other test binaries run clusters beside this one.
fn leftovers(slot_dir: &Path) -> Vec<String> {
    let k = slot_dir
        .file_name()
        .and_then(|n| n.to_str()?.strip_prefix("slot-"))
        .unwrap_or_else(|| panic!("a slot directory: {}", slot_dir.display()));
    let prefix = format!("ovc{k}-");
    let mut found = Vec::new();
    for dir in [
        "/sys/class/net",
        "/run/netns",
        "/sys/fs/cgroup/pids",
        "/sys/fs/cgroup/memory",
    ] {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if name.starts_with(&prefix) {
                    found.push(format!("{dir}/{name}"));
                }
            }
        }
    }
    found
}

#[tokio::test]
async fn kubelets_register_for_an_external_ccm_and_pods_talk_across_nodes() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let cluster = Cluster::start(2)
        .await
        .expect("cluster (run `make testenv`)");
    let client = cluster.plane().client().await.unwrap();
    let nodes: Api<Node> = Api::all(client.clone());
    for name in cluster.node_names() {
        let node = nodes.get(name).await.unwrap();
        let taints = node.spec.unwrap().taints.unwrap_or_default();
        assert!(
            taints.iter().any(
                |t| t.key == "node.cloudprovider.kubernetes.io/uninitialized"
                    && t.effect == "NoSchedule"
            ),
            "{name} registers tainted for the CCM: {taints:?}"
        );
        let annotations = node.metadata.annotations.unwrap_or_default();
        assert_eq!(
            annotations.get("alpha.kubernetes.io/provided-node-ip"),
            Some(&cluster.node_ip(name).to_string()),
            "{name}'s kubelet reports its --node-ip for the CCM to check"
        );
    }

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let [first, second] = [&cluster.node_names()[0], &cluster.node_names()[1]];
    pods.create(&PostParams::default(), &echo_pod("echo-a", first))
        .await
        .unwrap();
    pods.create(&PostParams::default(), &echo_pod("echo-b", second))
        .await
        .unwrap();
    let _ = running_pod_ip(&pods, "echo-a").await;
    let ip_b = running_pod_ip(&pods, "echo-b").await;

    // Pod to Pod across nodes, through kubectl exec (apiserver -> kubelet).
    let reply = eventually("echo-a reaches echo-b on the other node", SOON, || async {
        kubectl_exec(
            &cluster,
            "echo-a",
            &["/echo-server", "get", &format!("http://{ip_b}:8080/")],
        )
        .ok()
    })
    .await;
    assert!(reply.starts_with("pod=echo-b "), "{reply}");

    // A ClusterIP Service, programmed by kube-proxy on each node.
    let out = cluster
        .plane()
        .kubectl()
        .args(["create", "service", "clusterip", "echo", "--tcp=80:8080"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // `create service` selects app=echo, the Pods' label.
    let services: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(client, "default");
    let cluster_ip = services
        .get("echo")
        .await
        .unwrap()
        .spec
        .unwrap()
        .cluster_ip
        .unwrap();
    let mut served_by = std::collections::BTreeSet::new();
    for _ in 0..40 {
        if let Ok(reply) = kubectl_exec(
            &cluster,
            "echo-a",
            &[
                "/echo-server",
                "get",
                &format!("http://{cluster_ip}/"),
                "2s",
            ],
        ) {
            served_by.insert(reply.split_whitespace().next().unwrap_or("").to_string());
        }
        if served_by.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        served_by.into_iter().collect::<Vec<_>>(),
        ["pod=echo-a", "pod=echo-b"],
        "the ClusterIP spreads over the Pods on both nodes"
    );
    cluster.check_alive().unwrap();

    let slot_dir = cluster.dir();
    assert!(
        !leftovers(&slot_dir).is_empty(),
        "the cluster's links are found"
    );
    cluster.stop();
    assert_eq!(
        leftovers(&slot_dir),
        Vec::<String>::new(),
        "stop removes every link, namespace, cgroup and host file of the cluster"
    );
}

/// The child of `a_killed_test_leaves_nothing_the_next_cluster_does_not_remove`:
/// starts a one-node cluster with a running Pod, says so in a file, and waits
/// to be killed.
#[tokio::test]
#[ignore = "run by a_killed_test_leaves_nothing_the_next_cluster_does_not_remove as its child"]
async fn cluster_child_process() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let cluster = Cluster::start(1).await.unwrap();
    let client = cluster.plane().client().await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client, "default");
    pods.create(
        &PostParams::default(),
        &echo_pod("echo", &cluster.node_names()[0]),
    )
    .await
    .unwrap();
    let _ = running_pod_ip(&pods, "echo").await;
    std::fs::write(
        Path::new(&dir).join("ready"),
        cluster.dir().display().to_string(),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_secs(600)).await;
}

#[tokio::test]
async fn a_killed_test_leaves_nothing_the_next_cluster_does_not_remove() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "cluster_child_process",
            "--nocapture",
        ])
        .env(CHILD_ENV, dir.path())
        .spawn()
        .unwrap();
    let ready = dir.path().join("ready");
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    let slot_dir = loop {
        if let Ok(dir) = std::fs::read_to_string(&ready) {
            break dir;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the child exited before its cluster was up: {status}");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the child's cluster never ran its Pod"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    child.kill().unwrap();
    child.wait().unwrap();
    // The kubelet and containerd die with it (PDEATHSIG); the container
    // and its shim, reparented, do not.
    eventually("the child's kubelet gone", SOON, || async {
        pgrep(&slot_dir, "kubelet").is_empty().then_some(())
    })
    .await;
    assert!(
        !pgrep(&slot_dir, "containerd-shim").is_empty(),
        "the Pod's shim outlives the test"
    );
    let slot = Path::new(&slot_dir);
    assert!(
        !leftovers(slot).is_empty(),
        "a SIGKILLed test leaves its cluster's namespaces and cgroups"
    );

    let next = Cluster::start(1).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(next.plane().client().await.unwrap(), "default");
    assert!(
        pods.get_opt("echo").await.unwrap().is_none(),
        "a new control plane"
    );
    next.stop();
    assert_eq!(
        leftovers(slot),
        Vec::<String>::new(),
        "the next cluster removed the killed one's"
    );
    assert!(
        pgrep(&slot_dir, "").is_empty(),
        "no process of the killed cluster survives"
    );
    assert!(!Path::new(&slot_dir).exists(), "its directory is gone");
}

/// Processes whose command line mentions `dir` (and `name`).
fn pgrep(dir: &str, name: &str) -> Vec<String> {
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            if let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) {
                let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                if cmdline.contains(dir) && cmdline.contains(name) {
                    found.push(cmdline);
                }
            }
        }
    }
    found
}
