//! `make demo-lite`: the local provider on a bare control plane (no root needed).
//!
//! Starts the pinned kube-apiserver + etcd, runs overcast-ccm with the local
//! provider and a generated inventory (nodes on 127.0.10.x), creates Nodes
//! as kubelets would (tainted uninitialised), starts a small HTTP server on
//! each node's NodePort, creates a LoadBalancer Service, and shows the
//! initialised Nodes, the Service's EXTERNAL-IP and replies through the VIP.
//! Everything it started is stopped on exit.
//!
//! The overcast-ccm binary is taken from $OVERCAST_CCM.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::{Node, Service, ServicePort, ServiceSpec};
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use overcast_cloud_provider::names::TAINT_UNINITIALIZED;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const NODES: [(&str, &str, &str); 3] = [
    ("node-1", "127.0.10.1", "zone-a"),
    ("node-2", "127.0.10.2", "zone-a"),
    ("node-3", "127.0.10.3", "zone-b"),
];
const SERVICE_PORT: u16 = 8080;
const WAIT: Duration = Duration::from_secs(60);

use overcast_demo as local_ccm;

fn inventory() -> String {
    let mut out = String::from("instances:\n");
    for (name, ip, zone) in NODES {
        out += &format!(
            "  - name: {name}\n    instanceType: demo.small\n    region: home\n    zone: {zone}\n    addresses: [{{type: InternalIP, address: {ip}}}]\n"
        );
    }
    out += "loadBalancer:\n  pools:\n    - name: default\n      addresses: [127.0.10.100-127.0.10.110]\n  healthCheck: {interval: 1s}\n";
    out
}

async fn wait_for<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    probe: impl FnMut() -> F,
) -> anyhow::Result<T> {
    Ok(overcast_testenv::wait_until(what, WAIT, probe).await?)
}

/// A node's HTTP server: answers every request with the node's name.
async fn backend(ip: &str, port: u16, name: &'static str) -> anyhow::Result<()> {
    let listener = TcpListener::bind((ip, port))
        .await
        .with_context(|| format!("listening on {ip}:{port}"))?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 2048];
                let _ = s.read(&mut buf).await;
                let body = format!("hello from {name}\n");
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(reply.as_bytes()).await;
            });
        }
    });
    Ok(())
}

async fn http_get(addr: &str) -> anyhow::Result<String> {
    let mut s = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .context("connect timed out")??;
    s.write_all(format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut reply = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut reply))
        .await
        .context("no reply")??;
    Ok(reply
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.trim().to_string())
        .unwrap_or(reply))
}

fn show(title: &str, cmd: &mut Command) -> anyhow::Result<()> {
    println!("\n$ {title}");
    let status = cmd.status().context("running kubectl")?;
    if !status.success() {
        bail!("{title} failed: {status}");
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let ccm_bin =
        std::env::var("OVERCAST_CCM").context("set OVERCAST_CCM to the overcast-ccm binary")?;
    println!("Starting kube-apiserver and etcd ...");
    let plane = overcast_testenv::ControlPlane::start().await?;
    let client = plane.client().await?;
    let config = plane.dir().join("local.yaml");
    std::fs::write(&config, inventory())?;
    let log = plane.dir().join("overcast-ccm.log");
    println!("Inventory ({}):\n{}", config.display(), inventory());

    let ccm = local_ccm::start(&ccm_bin, plane.kubeconfig_path(), &config, &log)
        .with_context(|| format!("starting {ccm_bin}"))?;
    println!("overcast-ccm is running (log: {})", log.display());

    let result = run(&plane, &client).await;
    if result.is_err() {
        eprintln!(
            "\n--- overcast-ccm log ---\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    drop(ccm);
    plane.stop();
    println!("\nStopped overcast-ccm, kube-apiserver and etcd.");
    result
}

async fn run(plane: &overcast_testenv::ControlPlane, client: &kube::Client) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    for (name, _, _) in NODES {
        // As a kubelet with --cloud-provider=external registers itself.
        let node = overcast_testenv::uninitialized_node(name);
        nodes.create(&PostParams::default(), &node).await?;
    }
    println!(
        "Created {} Nodes with the {TAINT_UNINITIALIZED} taint",
        NODES.len()
    );
    for (name, _, _) in NODES {
        wait_for(&format!("{name} to be initialised"), || {
            let nodes = nodes.clone();
            async move {
                let n = nodes.get(name).await.ok()?;
                (!overcast_testenv::has_uninitialized_taint(&n)).then_some(())
            }
        })
        .await?;
    }

    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let svc = Service {
        metadata: ObjectMeta {
            name: Some("hello".into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("LoadBalancer".into()),
            selector: Some([("app".to_string(), "hello".to_string())].into()),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: SERVICE_PORT.into(),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let svc = services.create(&PostParams::default(), &svc).await?;
    let node_port = svc
        .spec
        .and_then(|s| s.ports?.first()?.node_port)
        .context("the apiserver gave the Service no nodePort")? as u16;
    for (name, ip, _) in NODES {
        backend(ip, node_port, name).await?;
    }
    println!("Started an HTTP server on each node's NodePort ({node_port})");
    let vip = overcast_testenv::load_balancer_ip(&services, "hello", WAIT).await?;

    show(
        "kubectl get nodes -o wide -L node.kubernetes.io/instance-type,topology.kubernetes.io/zone",
        plane.kubectl().args([
            "get",
            "nodes",
            "-o",
            "wide",
            "-L",
            "node.kubernetes.io/instance-type,topology.kubernetes.io/zone",
        ]),
    )?;
    show(
        "kubectl get service hello",
        plane.kubectl().args(["get", "service", "hello"]),
    )?;

    let addr = format!("{vip}:{SERVICE_PORT}");
    println!("\n$ curl http://{addr}/   (three times)");
    for _ in 0..3 {
        let reply = wait_for("a reply through the VIP", || {
            let addr = addr.clone();
            async move { http_get(&addr).await.ok() }
        })
        .await?;
        println!("{reply}");
    }
    Ok(())
}
