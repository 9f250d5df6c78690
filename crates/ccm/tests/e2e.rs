//! End to end on real nodes: kubelets (`--cloud-provider=external`),
//! kube-proxy, kube-scheduler and kube-controller-manager from
//! `overcast_testenv::Cluster`, with overcast-ccm and the local provider.
//! Each test is something a user of the cluster would check; nothing here
//! writes a Node or a Pod status itself.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use common::Ccm;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use overcast_cloud_provider::names::{
    LABEL_INSTANCE_TYPE, LABEL_REGION, LABEL_ZONE, TAINT_UNINITIALIZED,
};
use overcast_testenv::cluster::ECHO_SERVER;
use overcast_testenv::{Cluster, eventually, has_uninitialized_taint};
use serde_json::json;

const SOON: Duration = Duration::from_secs(90);
const PROXY_PROTOCOL: &str = "local.overcast.dev/proxy-protocol";

/// A cluster and the local provider's config for it: every node in the
/// inventory (zone `zone-<i>`), a VIP pool on the bridge's free addresses,
/// VIPs added to the bridge, health checks every second.
struct E2e {
    cluster: Cluster,
    client: Client,
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl E2e {
    async fn start(nodes: usize) -> E2e {
        let cluster = Cluster::start(nodes)
            .await
            .expect("real-node cluster (run `make testenv`)");
        let client = cluster.plane().client().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("local.yaml");
        std::fs::write(&config, local_config(&cluster)).unwrap();
        E2e {
            cluster,
            client,
            dir,
            config,
        }
    }

    /// overcast-ccm with the local provider, as a process on the host.
    fn ccm(&self) -> Ccm {
        Ccm::start(
            env!("CARGO_BIN_EXE_overcast-ccm"),
            self.cluster.plane().kubeconfig_path(),
            self.dir.path(),
            &[
                "--cloud-provider=local",
                &format!("--cloud-config={}", self.config.display()),
            ],
        )
    }

    async fn namespace(&self, name: &str) {
        Api::<Namespace>::all(self.client.clone())
            .create(
                &PostParams::default(),
                &object(json!({"metadata": {"name": name}})),
            )
            .await
            .unwrap();
    }

    async fn deployment(
        &self,
        namespace: &str,
        name: &str,
        replicas: i32,
        node_selector: Option<&str>,
    ) {
        let mut spec = json!({
            "containers": [{
                "name": "echo",
                "image": ECHO_SERVER,
                "imagePullPolicy": "Never",
                "env": [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1},
            }],
        });
        if let Some(node) = node_selector {
            spec["nodeSelector"] = json!({"kubernetes.io/hostname": node});
        }
        let deployment: Deployment = object(json!({
            "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}}, "spec": spec},
            }
        }));
        Api::<Deployment>::namespaced(self.client.clone(), namespace)
            .create(&PostParams::default(), &deployment)
            .await
            .unwrap();
    }

    async fn load_balancer(&self, namespace: &str, name: &str, extra: serde_json::Value) -> String {
        let mut svc = json!({
            "metadata": {"name": name, "annotations": {}},
            "spec": {
                "type": "LoadBalancer",
                "selector": {"app": name},
                "ports": [{"name": "http", "port": 80, "targetPort": 8080}],
            }
        });
        merge(&mut svc, extra);
        let services: Api<Service> = Api::namespaced(self.client.clone(), namespace);
        services
            .create(&PostParams::default(), &object(svc))
            .await
            .unwrap();
        overcast_testenv::load_balancer_ip(&services, name, SOON)
            .await
            .unwrap()
    }

    async fn ready_pods(&self, namespace: &str, app: &str, count: usize) -> Vec<Pod> {
        self.ready_pods_matching(namespace, &format!("app={app}"), count)
            .await
    }

    async fn ready_pods_matching(&self, namespace: &str, selector: &str, count: usize) -> Vec<Pod> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        eventually(
            &format!("{count} ready Pods {selector} in {namespace}"),
            SOON,
            || async {
                let list = pods
                    .list(&ListParams::default().labels(selector))
                    .await
                    .ok()?;
                let ready: Vec<Pod> = list.items.into_iter().filter(is_ready).collect();
                (ready.len() == count).then_some(ready)
            },
        )
        .await
    }

    /// Replaces the config file atomically, as a ConfigMap update does.
    fn write_config(&self, text: &str) {
        let tmp = self.dir.path().join("local.yaml.new");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &self.config).unwrap();
    }

    fn nodes_of(&self, pods: &[Pod]) -> BTreeSet<String> {
        pods.iter()
            .filter_map(|p| p.spec.as_ref()?.node_name.clone())
            .collect()
    }
}

fn object<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).unwrap()
}

fn merge(into: &mut serde_json::Value, from: serde_json::Value) {
    match (into, from) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (slot, v) => *slot = v,
    }
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn local_config(cluster: &Cluster) -> String {
    local_config_with(cluster, |_| Some("running"))
}

/// The config with each node's machine in `state(node)`: `running`,
/// `stopped`, or (None) not in the inventory.
fn local_config_with(cluster: &Cluster, state: impl Fn(&str) -> Option<&'static str>) -> String {
    let mut out = String::from("instances:\n");
    for (i, name) in cluster.node_names().iter().enumerate() {
        let Some(state) = state(name) else { continue };
        out += &format!(
            "  - name: {name}\n    state: {state}\n    instanceType: e2e.small\n    region: lab\n    \
             zone: zone-{}\n    addresses: [{{type: InternalIP, address: {}}}]\n",
            i + 1,
            cluster.node_ip(name)
        );
    }
    let (first, last) = cluster.free_addresses();
    out += &format!(
        "loadBalancer:\n  interface: {}\n  pools:\n    - name: default\n      addresses: [{first}-{last}]\n  \
         healthCheck: {{interval: 1s, timeout: 1s, healthyThreshold: 1, unhealthyThreshold: 1}}\n",
        cluster.bridge()
    );
    out
}

/// One line of the echo server: `pod=… node=… client=… proxy-source=…`.
#[derive(Debug)]
struct Reply {
    pod: String,
    node: String,
    client_ip: String,
    proxy_source_ip: String,
}

fn parse_reply(text: &str) -> Option<Reply> {
    let field = |key: &str| {
        text.split_whitespace()
            .find_map(|f| f.strip_prefix(&format!("{key}=")))
            .map(str::to_string)
    };
    let ip = |addr: String| {
        addr.rsplit_once(':')
            .map(|(ip, _)| ip.to_string())
            .unwrap_or(addr)
    };
    Some(Reply {
        pod: field("pod")?,
        node: field("node")?,
        client_ip: ip(field("client")?),
        proxy_source_ip: ip(field("proxy-source")?),
    })
}

/// GET through `command` (a client in some network namespace); the reply.
fn get(mut command: std::process::Command, url: &str) -> Option<Reply> {
    let out = command.args(["-s", "-m", "3", url]).output().ok()?;
    out.status.success().then_some(())?;
    parse_reply(&String::from_utf8_lossy(&out.stdout))
}

fn kubectl_exec_get(cluster: &Cluster, namespace: &str, pod: &str, url: &str) -> Option<Reply> {
    let out = cluster
        .plane()
        .kubectl()
        .args([
            "exec",
            "-n",
            namespace,
            pod,
            "--",
            "/echo-server",
            "get",
            url,
            "3s",
        ])
        .output()
        .ok()?;
    out.status.success().then_some(())?;
    parse_reply(&String::from_utf8_lossy(&out.stdout))
}

#[tokio::test]
async fn overcast_initialises_real_kubelets_and_only_then_pods_schedule() {
    let e2e = E2e::start(2).await;
    e2e.namespace("init").await;
    e2e.deployment("init", "echo", 2, None).await;

    // Before any CCM: the scheduler sees the Pods and refuses every node.
    let pods: Api<Pod> = Api::namespaced(e2e.client.clone(), "init");
    eventually(
        "both Pods Unschedulable for the uninitialized taint",
        SOON,
        || async {
            let list = pods.list(&ListParams::default()).await.ok()?;
            let refused = list.items.iter().filter(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| {
                        c.iter().any(|c| {
                            c.type_ == "PodScheduled"
                                && c.reason.as_deref() == Some("Unschedulable")
                                && c.message
                                    .as_deref()
                                    .is_some_and(|m| m.contains("untolerated taint"))
                        })
                    })
            });
            (refused.count() == 2).then_some(())
        },
    )
    .await;

    // ...and the only taint the nodes have is the one a CCM removes.
    let nodes: Api<Node> = Api::all(e2e.client.clone());
    for node in nodes.list(&ListParams::default()).await.unwrap() {
        let taints = node.spec.and_then(|s| s.taints).unwrap_or_default();
        let keys: Vec<&str> = taints.iter().map(|t| t.key.as_str()).collect();
        assert_eq!(keys, [TAINT_UNINITIALIZED]);
    }

    let ccm = e2e.ccm();
    for (i, name) in e2e.cluster.node_names().iter().enumerate() {
        let node = eventually(
            &format!("{name} initialised by overcast-ccm"),
            SOON,
            || async {
                let node = nodes.get(name).await.ok()?;
                (!has_uninitialized_taint(&node)).then_some(node)
            },
        )
        .await;
        let labels = node.metadata.labels.clone().unwrap_or_default();
        assert_eq!(
            node.spec.as_ref().unwrap().provider_id.as_deref(),
            Some(format!("local://{name}").as_str())
        );
        assert_eq!(
            labels.get(LABEL_ZONE).map(String::as_str),
            Some(format!("zone-{}", i + 1).as_str())
        );
        assert_eq!(labels.get(LABEL_REGION).map(String::as_str), Some("lab"));
        assert_eq!(
            labels.get(LABEL_INSTANCE_TYPE).map(String::as_str),
            Some("e2e.small")
        );
        let addresses: Vec<(String, String)> = node
            .status
            .unwrap()
            .addresses
            .unwrap_or_default()
            .into_iter()
            .map(|a| (a.type_, a.address))
            .collect();
        // The inventory's address, and the kubelet's Hostname kept as upstream does.
        assert_eq!(
            addresses,
            [
                (
                    "InternalIP".to_string(),
                    e2e.cluster.node_ip(name).to_string()
                ),
                ("Hostname".to_string(), name.clone()),
            ]
        );
    }

    // The scheduler places them now, and the kubelets run them.
    let running = e2e.ready_pods("init", "echo", 2).await;
    for pod in &running {
        let node = pod.spec.as_ref().unwrap().node_name.clone().unwrap();
        assert!(e2e.cluster.node_names().contains(&node), "{node}");
    }
    e2e.cluster.check_alive().unwrap();
    drop(ccm);
}

#[tokio::test]
async fn a_load_balancer_carries_outside_traffic_to_pods_through_kube_proxy() {
    let e2e = E2e::start(2).await;
    let _ccm = e2e.ccm();
    e2e.namespace("web").await;
    e2e.deployment("web", "echo", 2, None).await;
    e2e.ready_pods("web", "echo", 2).await;
    let vip = e2e.load_balancer("web", "echo", json!({})).await;
    let (first, last) = e2e.cluster.free_addresses();
    let vip_addr: std::net::Ipv4Addr = vip.parse().unwrap();
    assert!(first <= vip_addr && vip_addr <= last, "{vip} from the pool");

    // A client outside the cluster reaches both Pods through the VIP.
    let pods_seen = std::sync::Mutex::new(BTreeSet::new());
    eventually(
        "outside requests through the VIP reach both Pods",
        SOON,
        || async {
            let reply = get(e2e.cluster.from_outside("curl"), &format!("http://{vip}/"))?;
            let mut seen = pods_seen.lock().unwrap();
            seen.insert(reply.pod);
            (seen.len() == 2).then_some(())
        },
    )
    .await;
}

/// KEP-1860: with `ipMode: VIP`, kube-proxy captures the load balancer's
/// address on every node, so traffic from inside the cluster never reaches
/// the built-in proxy (no PROXY header, no health checks). The local
/// provider's data plane is a proxy: it must say `Proxy`, and then a Pod's
/// request to the VIP goes through it like an outside client's.
#[tokio::test]
async fn in_cluster_traffic_to_the_vip_goes_through_the_proxy() {
    let e2e = E2e::start(2).await;
    let _ccm = e2e.ccm();
    e2e.namespace("pp").await;
    e2e.deployment("pp", "echo", 1, None).await;
    let pods = e2e.ready_pods("pp", "echo", 1).await;
    let pod = pods[0].metadata.name.clone().unwrap();
    let vip = e2e
        .load_balancer(
            "pp",
            "echo",
            json!({"metadata": {"annotations": {PROXY_PROTOCOL: "v2"}}}),
        )
        .await;
    let services: Api<Service> = Api::namespaced(e2e.client.clone(), "pp");
    let ingress = services
        .get("echo")
        .await
        .unwrap()
        .status
        .unwrap()
        .load_balancer
        .unwrap()
        .ingress
        .unwrap();
    assert_eq!(ingress[0].ip_mode.as_deref(), Some("Proxy"), "{ingress:?}");

    let outside = e2e.cluster.outside_ip().to_string();
    let reply = eventually("an outside request through the VIP", SOON, || async {
        get(e2e.cluster.from_outside("curl"), &format!("http://{vip}/"))
    })
    .await;
    assert_eq!(
        reply.proxy_source_ip, outside,
        "the PROXY header names the outside client: {reply:?}"
    );

    // From the Pod itself: through the proxy too, so the header is there.
    let reply = eventually("a Pod's request through the VIP", SOON, || async {
        kubectl_exec_get(&e2e.cluster, "pp", &pod, &format!("http://{vip}/"))
    })
    .await;
    assert_ne!(
        reply.proxy_source_ip, "-",
        "kube-proxy bypassed the proxy: {reply:?}"
    );
}

/// `externalTrafficPolicy: Local`: only nodes with a ready endpoint pass the
/// proxy's health check (kube-proxy's healthCheckNodePort), so every request
/// lands on the Pod's node, unmasqueraded: the Pod sees the proxy's own
/// address, and the client's in the PROXY header.
#[tokio::test]
async fn external_traffic_policy_local_uses_only_nodes_with_endpoints() {
    let e2e = E2e::start(2).await;
    let _ccm = e2e.ccm();
    let [with_pod, without] = [&e2e.cluster.node_names()[0], &e2e.cluster.node_names()[1]];
    e2e.namespace("local").await;
    e2e.deployment("local", "echo", 1, Some(with_pod)).await;
    e2e.ready_pods("local", "echo", 1).await;
    let vip = e2e
        .load_balancer(
            "local",
            "echo",
            json!({
                "metadata": {"annotations": {PROXY_PROTOCOL: "v2"}},
                "spec": {"externalTrafficPolicy": "Local"},
            }),
        )
        .await;
    let outside = e2e.cluster.outside_ip().to_string();
    let host = e2e.cluster.host_ip().to_string();
    eventually("an outside request through the VIP", SOON, || async {
        get(e2e.cluster.from_outside("curl"), &format!("http://{vip}/"))
    })
    .await;
    // kube-proxy on the other node drops NodePort traffic it has no
    // endpoint for: the proxy must never leave a request there.
    for _ in 0..20 {
        let reply = get(e2e.cluster.from_outside("curl"), &format!("http://{vip}/"))
            .unwrap_or_else(|| panic!("a request through {vip} was lost on {without}"));
        assert_eq!(&reply.node, with_pod, "{reply:?}");
        assert_eq!(
            reply.client_ip, host,
            "kube-proxy did not masquerade: {reply:?}"
        );
        assert_eq!(reply.proxy_source_ip, outside, "{reply:?}");
    }
}

#[tokio::test]
async fn a_machine_gone_from_the_inventory_loses_its_node_and_its_pods_move() {
    let e2e = E2e::start(2).await;
    let _ccm = e2e.ccm();
    e2e.namespace("gone").await;
    e2e.deployment("gone", "echo", 2, None).await;
    let pods = e2e.ready_pods("gone", "echo", 2).await;
    // The machine that goes is one that runs a Pod.
    let goes = pods[0].spec.as_ref().unwrap().node_name.clone().unwrap();
    let stays = e2e
        .cluster
        .node_names()
        .iter()
        .find(|n| **n != goes)
        .unwrap()
        .clone();
    let nodes: Api<Node> = Api::all(e2e.client.clone());

    // The machine is taken away: out of the inventory, its kubelet silent.
    e2e.write_config(&local_config_with(&e2e.cluster, |n| {
        (n != goes).then_some("running")
    }));
    e2e.cluster.stop_kubelet(&goes);
    eventually(&format!("Node {goes} deleted"), SOON, || async {
        nodes.get_opt(&goes).await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(
        nodes.get_opt(&stays).await.unwrap().is_some(),
        "{stays} is still in the inventory"
    );

    // kube-controller-manager collects the Pods bound to the deleted Node
    // and the Deployment replaces them on the node that is left.
    let before: BTreeSet<String> = pods
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    let pods_api: Api<Pod> = Api::namespaced(e2e.client.clone(), "gone");
    let moved = eventually("2 ready Pods, all on the remaining node", SOON, || async {
        let list = pods_api.list(&ListParams::default()).await.ok()?;
        let ready: Vec<Pod> = list.items.into_iter().filter(is_ready).collect();
        (ready.len() == 2 && e2e.nodes_of(&ready) == BTreeSet::from([stays.clone()]))
            .then_some(ready)
    })
    .await;
    let after: BTreeSet<String> = moved
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    assert!(
        after.difference(&before).count() >= 1,
        "a replacement Pod was made: {before:?} -> {after:?}"
    );
}

#[tokio::test]
async fn a_stopped_machine_is_tainted_shut_down_and_kept() {
    let e2e = E2e::start(2).await;
    let _ccm = e2e.ccm();
    let stopped = e2e.cluster.node_names()[1].clone();
    e2e.namespace("shutdown").await;
    e2e.deployment("shutdown", "echo", 1, Some(&stopped)).await;
    let pods = e2e.ready_pods("shutdown", "echo", 1).await;
    let pod = pods[0].metadata.name.clone().unwrap();

    e2e.write_config(&local_config_with(&e2e.cluster, |n| {
        Some(if n == stopped { "stopped" } else { "running" })
    }));
    e2e.cluster.stop_kubelet(&stopped);
    let nodes: Api<Node> = Api::all(e2e.client.clone());
    let node = eventually(&format!("{stopped} tainted as shut down"), SOON, || async {
        let node = nodes.get(&stopped).await.ok()?;
        let tainted = node.spec.as_ref()?.taints.as_ref()?.iter().any(|t| {
            t.key == overcast_cloud_provider::names::TAINT_SHUTDOWN && t.effect == "NoSchedule"
        });
        tainted.then_some(node)
    })
    .await;
    assert!(
        node.metadata.deletion_timestamp.is_none(),
        "a stopped machine's Node is kept"
    );
    // As upstream: the Pod stays bound to the shut-down node until an
    // operator marks it out of service.
    let pods_api: Api<Pod> = Api::namespaced(e2e.client.clone(), "shutdown");
    assert!(pods_api.get_opt(&pod).await.unwrap().is_some());
    let patch = json!({"spec": {"taints": [
        {"key": overcast_cloud_provider::names::TAINT_SHUTDOWN, "effect": "NoSchedule"},
        {"key": "node.kubernetes.io/out-of-service", "value": "nodeshutdown", "effect": "NoExecute"},
    ]}});
    nodes
        .patch(
            &stopped,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .unwrap();
    eventually(
        &format!("Pod {pod} force-deleted off the out-of-service node"),
        SOON,
        || async { pods_api.get_opt(&pod).await.ok()?.is_none().then_some(()) },
    )
    .await;
}

/// overcast-ccm installed as users install it: an image built here
/// (testenv/images.sh: the binary, its libraries and iproute2), the Helm
/// chart with its defaults for the local provider, rendered by a real helm
/// and applied. Three replicas on two nodes: two run, on different nodes,
/// and the third waits Pending (on the host network it would clash). The
/// leader's Pod adds the VIP to its node's interface (the capabilities the
/// chart grants) and serves it; when that Pod goes, the standby takes the
/// lease and the VIP, and an outside client is served again.
#[tokio::test]
async fn the_helm_chart_runs_overcast_ccm_as_pods_that_elect_one_leader() {
    let e2e = E2e::start(2).await;
    let image = e2e.dir.path().join("overcast-ccm.tar");
    let script = overcast_testenv::workspace_root().join("testenv/images.sh");
    let status = std::process::Command::new("bash")
        .arg(&script)
        .arg(&image)
        .args([
            "overcast-ccm:e2e",
            "/overcast-ccm",
            env!("CARGO_BIN_EXE_overcast-ccm"),
            "/usr/bin/ip",
        ])
        .status()
        .unwrap();
    assert!(status.success(), "building the overcast-ccm image");
    e2e.cluster.import_image(&image).unwrap();

    let chart = overcast_testenv::workspace_root().join("deploy/helm/overcast-ccm");
    // In a Pod on the host network the node's interface is its namespace's.
    let config = local_config(&e2e.cluster).replace(
        &format!("interface: {}", e2e.cluster.bridge()),
        "interface: eth0",
    );
    let cloud_config_file = e2e.dir.path().join("cloud.yaml");
    std::fs::write(&cloud_config_file, config).unwrap();
    let cloud_config = format!("cloudConfig={}", cloud_config_file.display());
    let rendered = common::helm(&[
        "template",
        "overcast-ccm",
        chart.to_str().unwrap(),
        "--namespace",
        "kube-system",
        "--set",
        "replicas=3,cloudProvider=local,image.repository=127.0.0.1:1/overcast/overcast-ccm,image.tag=e2e,image.pullPolicy=Never",
        "--set",
        "leaderElection.leaseDuration=4s,leaderElection.renewDeadline=3s,leaderElection.retryPeriod=500ms",
        "--set-file",
        &cloud_config,
    ]);
    let manifest = e2e.dir.path().join("overcast-ccm.yaml");
    std::fs::write(&manifest, rendered).unwrap();
    common::kubectl(
        e2e.cluster.plane(),
        &["apply", "-f", manifest.to_str().unwrap()],
    );

    // The Pods tolerate the uninitialized taint, so they start on the very
    // nodes they initialise.
    let nodes: Api<Node> = Api::all(e2e.client.clone());
    for name in e2e.cluster.node_names() {
        eventually(
            &format!("{name} initialised by the overcast-ccm Pods"),
            SOON,
            || async {
                let node = nodes.get(name).await.ok()?;
                (!has_uninitialized_taint(&node)).then_some(())
            },
        )
        .await;
    }
    let selector = "app.kubernetes.io/name=overcast-ccm";
    let pods = e2e.ready_pods_matching("kube-system", selector, 2).await;
    assert_eq!(e2e.nodes_of(&pods).len(), 2, "one Pod on each node");
    let pods_api: Api<Pod> = Api::namespaced(e2e.client.clone(), "kube-system");
    let unschedulable = |pod: &Pod| {
        pod.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| {
                c.iter().any(|c| {
                    c.type_ == "PodScheduled"
                        && c.status == "False"
                        && c.reason.as_deref() == Some("Unschedulable")
                })
            })
    };
    eventually("the third replica Pending, unschedulable", SOON, || async {
        let list = pods_api
            .list(&ListParams::default().labels(selector))
            .await
            .ok()?;
        list.items.iter().any(unschedulable).then_some(())
    })
    .await;

    e2e.namespace("web").await;
    e2e.deployment("web", "echo", 2, None).await;
    e2e.ready_pods("web", "echo", 2).await;
    let vip = e2e.load_balancer("web", "echo", json!({})).await;
    let url = format!("http://{vip}/");
    eventually("the VIP served by the leading Pod", SOON, || async {
        get(e2e.cluster.from_outside("curl"), &url)
    })
    .await;

    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(e2e.client.clone(), "kube-system");
    let holder = || async {
        leases
            .get("cloud-controller-manager")
            .await
            .ok()?
            .spec?
            .holder_identity
            .filter(|h| !h.is_empty())
    };
    let leader = eventually("a leader", SOON, holder).await;
    let log_of = |pod: &str| {
        let out = e2e
            .cluster
            .plane()
            .kubectl()
            .args(["logs", "-n", "kube-system", pod])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let names: Vec<String> = pods
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    let leading: Vec<&String> = names
        .iter()
        .filter(|p| log_of(p).contains(&leader))
        .collect();
    assert_eq!(leading.len(), 1, "exactly one Pod holds the lease {leader}");
    common::kubectl(
        e2e.cluster.plane(),
        &[
            "delete",
            "pod",
            "-n",
            "kube-system",
            leading[0],
            "--wait=false",
        ],
    );
    let standby = names.iter().find(|p| *p != leading[0]).unwrap();
    let handover =
        overcast_testenv::wait_until("the standby Pod takes the lease", SOON, || async {
            holder()
                .await
                .filter(|h| *h != leader && log_of(standby).contains(h.as_str()))
        })
        .await;
    let new_leader = match handover {
        Ok(new_leader) => new_leader,
        Err(e) => {
            let now_holding = holder().await;
            let pods = common::kubectl(
                e2e.cluster.plane(),
                &[
                    "get",
                    "pods",
                    "-n",
                    "kube-system",
                    "-o",
                    "wide",
                    "-l",
                    selector,
                ],
            );
            let previous = e2e
                .cluster
                .plane()
                .kubectl()
                .args(["logs", "-n", "kube-system", standby, "--previous"])
                .output()
                .unwrap();
            panic!(
                "{e}\nthe lease's holder: {:?}\n{pods}\nthe standby {standby}'s log:\n{}\nits previous container's log:\n{}",
                now_holding,
                log_of(standby),
                String::from_utf8_lossy(&previous.stdout),
            )
        }
    };
    assert_ne!(new_leader, leader);
    let reply = eventually("the VIP served again, by the new leader", SOON, || async {
        get(e2e.cluster.from_outside("curl"), &url)
    })
    .await;
    assert!(reply.pod.starts_with("echo-"), "{reply:?}");
    // The Service tells which node serves it now (the chart hands the Pod
    // its node's name).
    let standby_node = pods
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some(standby.as_str()))
        .and_then(|p| p.spec.as_ref()?.node_name.clone())
        .unwrap();
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(e2e.client.clone(), "web");
    let wanted = format!("announcing from node \"{standby_node}\" with protocol \"layer2\"");
    eventually("a nodeAssigned Event naming the new node", SOON, || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("nodeAssigned")
                    && e.involved_object.name.as_deref() == Some("echo")
                    && e.message.as_deref() == Some(wanted.as_str())
            })
            .then_some(())
    })
    .await;
}
