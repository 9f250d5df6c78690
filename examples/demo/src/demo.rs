//! `make demo`: the local provider on a real cluster on this machine.
//!
//! Starts a cluster from overcast-testenv (control plane, scheduler,
//! controller-manager, three nodes with containerd, kubelet and kube-proxy),
//! runs overcast-ccm with the local provider and an inventory of the nodes,
//! deploys an echo server with a LoadBalancer Service, and sends requests to
//! the VIP from a network namespace standing for a client outside the cluster.
//! Everything it started is stopped and removed on exit.
//!
//! The overcast-ccm binary is taken from $OVERCAST_CCM. Needs root (network
//! namespaces, cgroups); `make demo-lite` does not.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::{Node, Service};
use kube::Api;
use overcast_testenv::Cluster;

const NODES: usize = 3;
const WAIT: Duration = Duration::from_secs(90);

use overcast_demo as local_ccm;

fn inventory(cluster: &Cluster) -> String {
    let mut out = String::from("instances:\n");
    for (i, name) in cluster.node_names().iter().enumerate() {
        out += &format!(
            "  - name: {name}\n    instanceType: demo.small\n    region: home\n    zone: zone-{}\n    \
             addresses: [{{type: InternalIP, address: {}}}]\n",
            if i < 2 { "a" } else { "b" },
            cluster.node_ip(name)
        );
    }
    let (first, last) = cluster.free_addresses();
    out += &format!(
        "loadBalancer:\n  interface: {}\n  pools:\n    - name: default\n      addresses: [{first}-{last}]\n  \
         healthCheck: {{interval: 1s}}\n",
        cluster.bridge()
    );
    out
}

const APP: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: hello}
spec:
  replicas: 3
  selector: {matchLabels: {app: hello}}
  template:
    metadata: {labels: {app: hello}}
    spec:
      topologySpreadConstraints:
        - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {app: hello}}}
      containers:
        - name: echo
          image: IMAGE
          imagePullPolicy: Never
          env: [{name: NODE_NAME, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}]
          readinessProbe: {httpGet: {path: /healthz, port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: hello}
spec:
  type: LoadBalancer
  selector: {app: hello}
  ports: [{name: http, port: 80, targetPort: 8080}]
"#;

fn show(cluster: &Cluster, args: &[&str]) -> anyhow::Result<()> {
    println!("\n$ kubectl {}", args.join(" "));
    let status = cluster
        .plane()
        .kubectl()
        .args(args)
        .status()
        .context("running kubectl")?;
    if !status.success() {
        bail!("kubectl {} failed: {status}", args.join(" "));
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let ccm_bin =
        std::env::var("OVERCAST_CCM").context("set OVERCAST_CCM to the overcast-ccm binary")?;
    let started = Instant::now();
    println!(
        "Starting a cluster: control plane, scheduler, controller-manager and {NODES} nodes ..."
    );
    let cluster = Cluster::start(NODES).await?;
    println!(
        "{NODES} kubelets registered in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let result = run(&cluster, &ccm_bin).await;
    cluster.stop();
    println!("\nStopped overcast-ccm and the cluster; removed its nodes, namespaces and files.");
    result
}

async fn run(cluster: &Cluster, ccm_bin: &str) -> anyhow::Result<()> {
    let client = cluster.plane().client().await?;
    show(
        cluster,
        &[
            "get",
            "nodes",
            "-o",
            "custom-columns=NAME:.metadata.name,STATUS:.status.conditions[-1].type,TAINTS:.spec.taints[*].key",
        ],
    )?;

    let config = cluster.dir().join("local.yaml");
    std::fs::write(&config, inventory(cluster))?;
    println!(
        "\nInventory ({}):\n{}",
        config.display(),
        inventory(cluster)
    );
    let log = cluster.dir().join("overcast-ccm.log");
    let ccm = local_ccm::start(ccm_bin, cluster.plane().kubeconfig_path(), &config, &log)
        .with_context(|| format!("starting {ccm_bin}"))?;
    println!("overcast-ccm is running (log: {})", log.display());
    let result = serve(cluster, &client).await;
    if result.is_err() {
        eprintln!(
            "\n--- overcast-ccm log ---\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    drop(ccm);
    result
}

async fn serve(cluster: &Cluster, client: &kube::Client) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    for name in cluster.node_names() {
        overcast_testenv::wait_until(&format!("{name} initialised"), WAIT, || async {
            let node = nodes.get(name).await.ok()?;
            (!overcast_testenv::has_uninitialized_taint(&node)).then_some(())
        })
        .await?;
    }
    show(
        cluster,
        &[
            "get",
            "nodes",
            "-o",
            "wide",
            "-L",
            "node.kubernetes.io/instance-type,topology.kubernetes.io/zone",
        ],
    )?;

    let manifest = APP.replace("IMAGE", overcast_testenv::cluster::ECHO_SERVER);
    println!("\n$ kubectl apply -f - <<EOF\n{manifest}EOF");
    cluster.plane().kubectl_apply(&manifest)?;
    let status = cluster
        .plane()
        .kubectl()
        .args(["rollout", "status", "deployment/hello", "--timeout=90s"])
        .status()?;
    if !status.success() {
        bail!("the Deployment did not become ready");
    }
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let vip = overcast_testenv::load_balancer_ip(&services, "hello", WAIT).await?;
    show(cluster, &["get", "pods", "-o", "wide"])?;
    show(cluster, &["get", "service", "hello"])?;

    println!(
        "\n$ curl http://{vip}/   (from a client outside the cluster, {}; four times)",
        cluster.outside_ip()
    );
    for _ in 0..4 {
        let reply = overcast_testenv::wait_until("a reply through the VIP", WAIT, || async {
            let out = cluster
                .from_outside("curl")
                .args(["-s", "-m", "3", &format!("http://{vip}/")])
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        })
        .await?;
        println!("{reply}");
    }
    Ok(())
}
