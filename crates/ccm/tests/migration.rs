//! Leader migration (KEP-2436) beside the real kube-controller-manager
//! (v1.34, built by testenv): node IPAM, the one cloud-side controller it
//! still runs, handed over in both directions under the migration Lease.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;
use k8s_openapi::api::core::v1::{Node, PersistentVolume, Pod, Service, ServicePort, ServiceSpec};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use overcast_testenv::ControlPlane;

const MIGRATION_LEASE: &str = "cloud-provider-extraction-migration";
const CLUSTER_CIDR: &str = "10.244.0.0/16";

/// An upstream Go controller manager (kube-controller-manager, or the Go
/// cloud-controller-manager).
type ControllerManager = Upstream;

impl ControllerManager {
    /// kube-controller-manager running node IPAM only, with leader migration.
    fn start(plane: &ControlPlane, dir: &Path, migration_config: &Path, n: u32) -> Self {
        let args = [
            format!("--kubeconfig={}", plane.kubeconfig_path().display()),
            "--secure-port=0".into(),
            // KCM takes the migration Lease only once its service account
            // token controller has started (upstream's MigrationReady), so
            // that one runs too.
            "--controllers=node-ipam-controller,serviceaccount-token-controller".into(),
            format!(
                "--service-account-private-key-file={}",
                plane.service_account_key_path().display()
            ),
            format!("--root-ca-file={}", plane.ca_path().display()),
            "--allocate-node-cidrs=true".into(),
            format!("--cluster-cidr={CLUSTER_CIDR}"),
            "--leader-elect=true".into(),
            "--leader-elect-lease-duration=4s".into(),
            "--leader-elect-renew-deadline=3s".into(),
            "--leader-elect-retry-period=500ms".into(),
            "--enable-leader-migration".into(),
            format!("--leader-migration-config={}", migration_config.display()),
        ];
        let bin = overcast_testenv::bin_dir().join("kube-controller-manager");
        Self::spawn(
            &bin,
            &args,
            &[],
            dir,
            &format!("kube-controller-manager-{n}"),
            "make testenv",
        )
    }

    /// kube-controller-manager of the in-tree line (testenv/kcm-intree,
    /// v1.30) with its in-tree `onprem` cloud (a pool of `size` addresses
    /// from `first`), running the service-lb and cloud-node-lifecycle
    /// controllers, with leader migration.
    fn in_tree(plane: &ControlPlane, dir: &Path, migration_config: &Path, pool: &str) -> Self {
        let cloud_config = dir.join("onprem.conf");
        std::fs::write(&cloud_config, pool).unwrap();
        let args = [
            format!("--kubeconfig={}", plane.kubeconfig_path().display()),
            "--secure-port=0".into(),
            "--cloud-provider=onprem".into(),
            format!("--cloud-config={}", cloud_config.display()),
            "--controllers=service-lb-controller,cloud-node-lifecycle-controller,serviceaccount-token-controller".into(),
            format!(
                "--service-account-private-key-file={}",
                plane.service_account_key_path().display()
            ),
            format!("--root-ca-file={}", plane.ca_path().display()),
            "--node-monitor-period=500ms".into(),
            "--leader-elect=true".into(),
            "--leader-elect-lease-duration=4s".into(),
            "--leader-elect-renew-deadline=3s".into(),
            "--leader-elect-retry-period=500ms".into(),
            "--enable-leader-migration".into(),
            format!("--leader-migration-config={}", migration_config.display()),
        ];
        let bin = overcast_testenv::bin_dir().join("kcm-intree/kube-controller-manager");
        Self::spawn(&bin, &args, &[], dir, "kcm-intree", "make testenv")
    }

    /// The upstream Go cloud-controller-manager (k8s.io/cloud-provider
    /// v0.34.4's app, bench/go-ccm) with its `fake` cloud, under the main
    /// Lease with the tests' timings.
    fn go_ccm(plane: &ControlPlane, dir: &Path, n: u32) -> Self {
        let bin = std::env::var_os("OVERCAST_GO_CCM").map_or_else(
            || {
                std::path::PathBuf::from(std::env::var("HOME").unwrap_or_default())
                    .join(".cache/overcast/go-ccm")
            },
            std::path::PathBuf::from,
        );
        let args = [
            "--cloud-provider=fake".to_string(),
            format!("--kubeconfig={}", plane.kubeconfig_path().display()),
            "--secure-port=0".into(),
            "--configure-cloud-routes=false".into(),
            "--controllers=cloud-node,cloud-node-lifecycle,service".into(),
            "--leader-elect=true".into(),
            "--leader-elect-lease-duration=4s".into(),
            "--leader-elect-renew-deadline=3s".into(),
            "--leader-elect-retry-period=500ms".into(),
            "--node-monitor-period=500ms".into(),
        ];
        Self::spawn(&bin, &args, &[], dir, &format!("go-ccm-{n}"), "make go-ccm")
    }
}

/// Waits until the migration Lease is held by whoever holds `main`: both
/// components take the two Leases under one identity, as upstream does.
/// Panics with `logs` when it is not.
async fn migration_held_with(client: &Client, main: &str, logs: impl Fn() -> String) {
    overcast_testenv::wait_until(
        &format!("the migration Lease held by the holder of {main}"),
        SOON,
        || async {
            let main = holder(client, main).await?;
            (holder(client, MIGRATION_LEASE).await? == main).then_some(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", logs()));
}

fn runs_node_ipam(ccm: &Ccm) -> bool {
    ccm.get("/metrics").is_some_and(|(_, body)| {
        body.contains(
            "running_managed_controllers{manager=\"cloud-controller-manager\",name=\"nodeipam\"} 1",
        )
    })
}

/// Creates the Nodes and waits for each one's podCIDR.
async fn nodes_get_cidrs(client: &Client, names: &[&str]) {
    let nodes: Api<Node> = Api::all(client.clone());
    for name in names {
        let node = Node {
            metadata: kube::api::ObjectMeta {
                name: Some(name.to_string()),
                ..Default::default()
            },
            ..Default::default()
        };
        nodes.create(&PostParams::default(), &node).await.unwrap();
    }
    for name in names {
        eventually(&format!("{name}'s podCIDR"), SOON, || async {
            nodes.get(name).await.ok()?.spec?.pod_cidr
        })
        .await;
    }
}

/// Every Node's podCIDRs.
async fn cidrs(client: &Client) -> BTreeMap<String, Vec<String>> {
    Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|n| {
            let cidrs = n.spec.and_then(|s| s.pod_cidrs).unwrap_or_default();
            (n.metadata.name.unwrap_or_default(), cidrs)
        })
        .collect()
}

/// Asserts that no two Nodes share a podCIDR and that every Node in
/// `before` kept its own.
fn assert_allocated_once(
    before: &BTreeMap<String, Vec<String>>,
    now: &BTreeMap<String, Vec<String>>,
) {
    for (node, cidrs) in before {
        assert_eq!(
            now.get(node),
            Some(cidrs),
            "{node}'s podCIDRs changed: {now:?}"
        );
    }
    let mut seen = BTreeMap::new();
    for (node, cidrs) in now {
        assert_eq!(cidrs.len(), 1, "{node}: one podCIDR each: {now:?}");
        if let Some(other) = seen.insert(cidrs[0].clone(), node.clone()) {
            panic!("{other} and {node} share {}: {now:?}", cidrs[0]);
        }
    }
}

/// kube-controller-manager and overcast-ccm given the same configuration
/// migrating `node-ipam-controller`: one allocator at a time, whichever holds
/// the migration Lease; kill -9 it and the other continues, no Node's podCIDR
/// reassigned and none given twice, from KCM to overcast-ccm and back.
#[tokio::test]
async fn node_ipam_moves_between_kube_controller_manager_and_overcast_under_the_migration_lease() {
    let env = CloudEnv::start(
        "fake",
        "fake.yaml",
        "anyInstance:\n  addresses: [{type: InternalIP, address: 10.0.0.1}]\n",
    )
    .await;
    let config = env.dir.path().join("migration.yaml");
    std::fs::write(
        &config,
        "apiVersion: controllermanager.config.k8s.io/v1\nkind: LeaderMigrationConfiguration\nleaderName: cloud-provider-extraction-migration\ncontrollerLeaders:\n  - name: node-ipam-controller\n    component: \"*\"\n",
    )
    .unwrap();
    let ccm_flags = [
        "--controllers=node-ipam-controller".to_string(),
        "--allocate-node-cidrs=true".to_string(),
        format!("--cluster-cidr={CLUSTER_CIDR}"),
        "--enable-leader-migration".to_string(),
        format!("--leader-migration-config={}", config.display()),
    ];
    let ccm_flags: Vec<&str> = ccm_flags.iter().map(String::as_str).collect();

    let kcm = ControllerManager::start(&env.plane, env.dir.path(), &config, 1);
    migration_held_with(&env.client, "kube-controller-manager", || kcm.log_text()).await;
    let ccm = env.ccm(&ccm_flags);
    eventually("overcast-ccm holds its main Lease", SOON, || async {
        holder(&env.client, "cloud-controller-manager").await
    })
    .await;
    nodes_get_cidrs(&env.client, &["n1", "n2", "n3"]).await;
    assert!(
        !runs_node_ipam(&ccm),
        "overcast-ccm runs node IPAM while kube-controller-manager holds the migration Lease:\n{}",
        ccm.log_text()
    );
    let by_kcm = cidrs(&env.client).await;
    assert_allocated_once(&BTreeMap::new(), &by_kcm);

    // KCM dies: overcast-ccm takes the migration Lease and allocates.
    drop(kcm);
    migration_held_with(&env.client, "cloud-controller-manager", || ccm.log_text()).await;
    eventually("overcast-ccm runs node IPAM", SOON, || async {
        runs_node_ipam(&ccm).then_some(())
    })
    .await;
    nodes_get_cidrs(&env.client, &["n4", "n5"]).await;
    let by_overcast = cidrs(&env.client).await;
    assert_allocated_once(&by_kcm, &by_overcast);

    // Rollback: a new KCM waits behind overcast-ccm, then takes over from it.
    let kcm = ControllerManager::start(&env.plane, env.dir.path(), &config, 2);
    eventually("the new KCM holds its main Lease", SOON, || async {
        let log = kcm.log_text();
        log.contains("successfully acquired lease kube-system/kube-controller-manager")
            .then_some(())
    })
    .await;
    nodes_get_cidrs(&env.client, &["n6"]).await;
    assert!(
        !kcm.log_text().contains(
            "successfully acquired lease kube-system/cloud-provider-extraction-migration"
        ),
        "the new KCM took the migration Lease from a live overcast-ccm:\n{}",
        kcm.log_text()
    );
    drop(ccm);
    migration_held_with(&env.client, "kube-controller-manager", || kcm.log_text()).await;
    nodes_get_cidrs(&env.client, &["n7"]).await;
    assert_allocated_once(&by_overcast, &cidrs(&env.client).await);
    assert!(
        kcm.log_text().contains(
            "successfully acquired lease kube-system/cloud-provider-extraction-migration"
        ),
        "{}",
        kcm.log_text()
    );
}

/// A configuration naming the controller only by its pre-1.28 name
/// (`nodeipam`, which docs and habit suggest) migrates nothing in
/// kube-controller-manager v1.34, which compares canonical names and so runs
/// node IPAM under its main Lease, and migrates it in older ones; overcast-ccm
/// refuses it at start-up, naming the entry and asking for both names, rather
/// than run a second allocator beside one of them.
#[tokio::test]
async fn a_migration_config_naming_only_the_old_name_is_refused_asking_for_both() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("migration.yaml");
    std::fs::write(
        &config,
        "apiVersion: controllermanager.config.k8s.io/v1\nkind: LeaderMigrationConfiguration\nleaderName: cloud-provider-extraction-migration\ncontrollerLeaders:\n  - name: nodeipam\n    component: \"*\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_overcast-ccm"))
        .args([
            "--cloud-provider=fake",
            "--kubeconfig=/nonexistent",
            "--allocate-node-cidrs=true",
            &format!("--cluster-cidr={CLUSTER_CIDR}"),
            "--enable-leader-migration",
            &format!("--leader-migration-config={}", config.display()),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for part in [
        &format!("--leader-migration-config={}", config.display()),
        "controllerLeaders[0].name \"nodeipam\" is what controller managers before v1.28 call node-ipam-controller",
        "list both names",
    ] {
        assert!(stderr.contains(part), "{part:?} in {stderr}");
    }
}

/// MetalLB's configuration, as `kubectl get -o yaml` gives it: an
/// automatic pool and a reserved one (`autoAssign: false`), announced by L2.
const METALLB: &str = r#"
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: reserved, namespace: metallb-system}
spec:
  addresses: [127.0.30.200-127.0.30.202]
  autoAssign: false
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: general, namespace: metallb-system}
spec:
  addresses: [127.0.30.100-127.0.30.103]
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {name: l2, namespace: metallb-system}
"#;

/// A LoadBalancer Service as MetalLB left it: its annotations, and the
/// address MetalLB wrote into its status (`None`: a new Service).
async fn served_by_metallb(
    client: &Client,
    name: &str,
    annotations: &[(&str, &str)],
    ip: Option<&str>,
) {
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let svc = Service {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            annotations: Some(
                annotations
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("LoadBalancer".into()),
            ports: Some(vec![ServicePort {
                port: 80,
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    services.create(&PostParams::default(), &svc).await.unwrap();
    let Some(ip) = ip else { return };
    let status =
        serde_json::json!({"status": {"loadBalancer": {"ingress": [{"ip": ip, "ipMode": "VIP"}]}}});
    services
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

async fn address(client: &Client, name: &str) -> Option<(String, Option<String>)> {
    let svc = Api::<Service>::namespaced(client.clone(), "default")
        .get(name)
        .await
        .ok()?;
    let ingress = svc.status?.load_balancer?.ingress?.into_iter().next()?;
    Some((ingress.ip?, ingress.ip_mode))
}

/// From MetalLB to the local provider: the pools come from MetalLB's own
/// objects through `overcast-ccm migrate import-config`, and every Service
/// MetalLB served keeps its address, whether MetalLB picked it, the Service
/// asked for it with MetalLB's annotation, or named MetalLB's pool; a new
/// Service gets the address MetalLB's annotation asks for, or else a free
/// one of the automatic pool only.
#[tokio::test]
async fn services_served_by_metallb_keep_their_addresses_under_the_imported_pools() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("metallb.yaml");
    std::fs::write(&manifest, METALLB).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_overcast-ccm"))
        .args(["migrate", "import-config", "--from", "metallb"])
        .arg(&manifest)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // No interface named: VIPs are served where the host has them (here
    // loopback), and the user is told to choose one.
    assert!(
        stderr.contains("note: no L2Advertisement names an interface"),
        "{stderr}"
    );
    let pools = String::from_utf8(out.stdout).unwrap();
    let config = format!(
        "instances:\n  - name: node-1\n    addresses: [{{type: InternalIP, address: 127.0.30.1}}]\n{pools}"
    );

    let env = CloudEnv::start("local", "local.yaml", &config).await;
    served_by_metallb(&env.client, "picked", &[], Some("127.0.30.102")).await;
    served_by_metallb(
        &env.client,
        "pinned",
        &[("metallb.io/loadBalancerIPs", "127.0.30.201")],
        Some("127.0.30.201"),
    )
    .await;
    served_by_metallb(
        &env.client,
        "by-pool",
        &[("metallb.universe.tf/address-pool", "reserved")],
        Some("127.0.30.200"),
    )
    .await;
    let _ccm = env.ccm(&[]);
    // New Services: one asking with MetalLB's annotation, one for any
    // address (the reserved pool, first in the file, is not automatic).
    served_by_metallb(
        &env.client,
        "asks",
        &[("metallb.io/loadBalancerIPs", "127.0.30.103")],
        None,
    )
    .await;
    served_by_metallb(&env.client, "new", &[], None).await;

    for (name, ip) in [
        ("picked", "127.0.30.102"),
        ("pinned", "127.0.30.201"),
        ("by-pool", "127.0.30.200"),
        ("asks", "127.0.30.103"),
        ("new", "127.0.30.100"),
    ] {
        // Served by overcast-ccm once its ipMode is its own (Proxy).
        let (got, _) = eventually(&format!("{name} served by overcast-ccm"), SOON, || async {
            address(&env.client, name)
                .await
                .filter(|(_, mode)| mode.as_deref() == Some("Proxy"))
        })
        .await;
        assert_eq!(got, ip, "{name}");
    }
}

/// What k3s's servicelb (pkg/cloudprovider/servicelb.go) leaves for a
/// Service `name` with one TCP port 80: the service controller's cleanup
/// finalizer, the Node IPs of the nodes running its pods as the address, and
/// the `svclb-<name>-<hash>` DaemonSet in kube-system labelled with the
/// Service's name and namespace, whose containers hold the port as a host port.
async fn served_by_k3s_servicelb(client: &Client, name: &str, node_ip: &str) {
    served_by_metallb(client, name, &[], None).await;
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    served_as_by_an_incumbent(&services, name, serde_json::json!({"ip": node_ip})).await;
    let ds: k8s_openapi::api::apps::v1::DaemonSet = serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": format!("svclb-{name}-5c6d7e8f"),
            "namespace": "kube-system",
            "labels": {
                "svccontroller.k3s.cattle.io/nodeselector": "false",
                "svccontroller.k3s.cattle.io/svcname": name,
                "svccontroller.k3s.cattle.io/svcnamespace": "default",
            },
        },
        "spec": {
            "selector": {"matchLabels": {"app": format!("svclb-{name}-5c6d7e8f")}},
            "template": {
                "metadata": {"labels": {
                    "app": format!("svclb-{name}-5c6d7e8f"),
                    "svccontroller.k3s.cattle.io/svcname": name,
                    "svccontroller.k3s.cattle.io/svcnamespace": "default",
                }},
                "spec": {
                    "serviceAccountName": "svclb",
                    "containers": [{
                        "name": "lb-tcp-80",
                        "image": "rancher/klipper-lb:v0.4.9",
                        "ports": [{"name": "lb-tcp-80", "containerPort": 80, "hostPort": 80, "protocol": "TCP"}],
                    }],
                },
            },
        },
    }))
    .unwrap();
    Api::<k8s_openapi::api::apps::v1::DaemonSet>::namespaced(client.clone(), "kube-system")
        .create(&PostParams::default(), &ds)
        .await
        .unwrap();
}

/// Only load balancers move off k3s: its embedded cloud controller keeps the
/// Nodes.
const LB_ONLY: &str = "--controllers=service-lb-controller";

/// docs/migration.md's runbook from k3s servicelb, step by step: the
/// preflight names the servicelb DaemonSet still running and the address
/// change (a Node IP becomes a VIP: servicelb's addresses are the nodes'
/// own) and nothing else; once servicelb is disabled and its DaemonSet
/// deleted, only the address change is left; overcast-ccm then serves the
/// Service from the pool, keeping the cleanup finalizer.
#[tokio::test]
async fn the_k3s_servicelb_runbook_finds_its_daemonset_and_the_address_change_then_serves_a_vip() {
    let config = "instances:
  - {name: node-1, addresses: [{type: InternalIP, address: 127.0.34.1}]}
loadBalancer:
  pools: [{name: lan, addresses: [127.0.34.100-127.0.34.103]}]
";
    let env = CloudEnv::start("local", "local.yaml", config).await;
    create::<Node>(
        &env.client,
        // k3s's own cloud provider keeps the Nodes (its provider IDs).
        serde_json::json!({"metadata": {"name": "node-1"}, "spec": {"providerID": "k3s://node-1"}}),
    )
    .await;
    served_by_k3s_servicelb(&env.client, "web", "127.0.34.1").await;
    let hazards = || {
        let mut flags = env.provider_flags();
        flags.extend(["-o", "json", LB_ONLY].map(String::from));
        let (code, stdout, stderr) = migrate_check(&flags, &[]);
        let findings: Vec<serde_json::Value> =
            serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
        let hazards: Vec<(String, String)> = findings
            .iter()
            .filter(|f| f["severity"] == "hazard")
            .map(|f| {
                let s = |k: &str| f[k].as_str().unwrap().to_string();
                (s("object"), s("message"))
            })
            .collect();
        (code, hazards)
    };

    // 1. Preflight with servicelb still running.
    let (code, found) = hazards();
    assert_eq!(code, Some(1));
    let objects: Vec<&str> = found.iter().map(|(o, _)| o.as_str()).collect();
    assert_eq!(
        objects,
        [
            "daemonset/kube-system/svclb-web-5c6d7e8f",
            "service/default/web"
        ],
        "{found:?}"
    );
    assert!(
        found[0]
            .1
            .contains("k3s servicelb still runs for service/default/web")
            && found[0].1.contains("host ports 80/TCP"),
        "{found:?}"
    );
    assert!(
        found[1]
            .1
            .contains("its address would change from 127.0.34.1 to 127.0.34.100"),
        "{found:?}"
    );

    // 2. servicelb disabled (k3s server --disable=servicelb): k3s deletes its
    // DaemonSets (the cloud provider's Initialize without LBEnabled), as
    // here; only the address change is left.
    Api::<k8s_openapi::api::apps::v1::DaemonSet>::namespaced(env.client.clone(), "kube-system")
        .delete("svclb-web-5c6d7e8f", &Default::default())
        .await
        .unwrap();
    let (_, found) = hazards();
    let objects: Vec<&str> = found.iter().map(|(o, _)| o.as_str()).collect();
    assert_eq!(objects, ["service/default/web"], "{found:?}");

    // 3. Cut-over: the Service gets a VIP of the pool; the finalizer stays.
    let _ccm = env.ccm(&[LB_ONLY]);
    let (ip, _) = eventually("web served by overcast-ccm", SOON, || async {
        address(&env.client, "web")
            .await
            .filter(|(_, mode)| mode.as_deref() == Some("Proxy"))
    })
    .await;
    assert_eq!(ip, "127.0.34.100");
    let svc = Api::<Service>::namespaced(env.client.clone(), "default")
        .get("web")
        .await
        .unwrap();
    assert_eq!(
        svc.metadata.finalizers.unwrap_or_default(),
        ["service.kubernetes.io/load-balancer-cleanup"]
    );
}

async fn create<K>(client: &Client, object: serde_json::Value)
where
    K: kube::Resource<Scope = k8s_openapi::ClusterResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let object: K = serde_json::from_value(object).unwrap();
    Api::<K>::all(client.clone())
        .create(&PostParams::default(), &object)
        .await
        .unwrap();
}

/// A kubeconfig with a token of ServiceAccount `namespace/name`.
async fn service_account_kubeconfig(
    env: &CloudEnv,
    namespace: &str,
    name: &str,
) -> std::path::PathBuf {
    env.plane
        .service_account_kubeconfig(namespace, name)
        .await
        .expect("ServiceAccount token")
}

/// The preflight on a cluster with seeded hazards lists exactly those (and
/// notes), read-only, and exits 1: a Node the lifecycle controller would
/// delete, a zone label that differs from the provider's where a volume is
/// pinned to it, a Service whose address would change, an annotation without
/// effect, and, for credentials short of overcast-ccm's RBAC, each missing
/// right.
#[tokio::test]
async fn the_preflight_lists_exactly_the_seeded_hazards() {
    let config = "instances:
  - {name: node-1, zone: rack-1, addresses: [{type: InternalIP, address: 127.0.31.1}]}
  - {name: node-2, zone: rack-2, addresses: [{type: InternalIP, address: 127.0.31.2}]}
loadBalancer:
  pools: [{name: lan, addresses: [127.0.31.100-127.0.31.103]}]
";
    let env = CloudEnv::start("local", "local.yaml", config).await;
    let node = |name: &str, zone: &str| {
        serde_json::json!({
            "metadata": {"name": name, "labels": {"topology.kubernetes.io/zone": zone}},
            "spec": {"providerID": format!("local://{name}")},
        })
    };
    create::<Node>(&env.client, node("node-1", "rack-1")).await;
    create::<Node>(&env.client, node("node-2", "rack-9")).await;
    create::<Node>(&env.client, node("ghost", "rack-1")).await;
    for (name, zone) in [("data", "rack-9"), ("elsewhere", "rack-5")] {
        create::<PersistentVolume>(
            &env.client,
            serde_json::json!({
                "metadata": {"name": name},
                "spec": {
                    "capacity": {"storage": "1Gi"},
                    "accessModes": ["ReadWriteOnce"],
                    "local": {"path": "/srv/data"},
                    "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                        {"key": "topology.kubernetes.io/zone", "operator": "In", "values": [zone]}
                    ]}]}},
                },
            }),
        )
        .await;
    }
    served_by_metallb(&env.client, "keep", &[], Some("127.0.31.100")).await;
    served_by_metallb(&env.client, "moved", &[], Some("10.9.9.9")).await;
    served_by_metallb(
        &env.client,
        "extra",
        &[
            ("metallb.io/loadBalancerIPs", "127.0.31.102"),
            ("kube-vip.io/egress", "true"),
        ],
        Some("127.0.31.102"),
    )
    .await;
    served_by_metallb(&env.client, "fresh", &[], None).await;
    // A control plane's kube-controller-manager (its static Pod, as kubeadm
    // writes it) still with an in-tree cloud, on upstream's default
    // migration configuration; and a scheduler, which runs none of this.
    let static_pod = |name: &str, image: &str, command: &[&str]| {
        serde_json::json!({
            "metadata": {"name": name, "namespace": "kube-system", "labels": {"component": name}},
            "spec": {"nodeName": "control-plane-1", "containers": [{"name": name, "image": image, "command": command}]},
        })
    };
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), "kube-system");
    for pod in [
        static_pod(
            "kube-controller-manager",
            "registry.k8s.io/kube-controller-manager:v1.30.14",
            &[
                "kube-controller-manager",
                "--cloud-provider=gce",
                "--enable-leader-migration",
            ],
        ),
        static_pod(
            "kube-scheduler",
            "registry.k8s.io/kube-scheduler:v1.30.14",
            &["kube-scheduler", "--leader-elect=true"],
        ),
    ] {
        pods.create(
            &PostParams::default(),
            &serde_json::from_value(pod).unwrap(),
        )
        .await
        .unwrap();
    }

    let mut flags = env.provider_flags();
    flags.extend(["-o".to_string(), "json".to_string()]);
    let (code, stdout, stderr) = migrate_check(&flags, &[]);
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    let findings: Vec<serde_json::Value> = serde_json::from_str(&stdout).unwrap();
    let of = |severity: &str| -> Vec<(String, String)> {
        findings
            .iter()
            .filter(|f| f["severity"] == severity)
            .map(|f| {
                let s = |k: &str| f[k].as_str().unwrap().to_string();
                (s("object"), s("message"))
            })
            .collect()
    };
    let hazards = of("hazard");
    let objects: Vec<&str> = hazards.iter().map(|(o, _)| o.as_str()).collect();
    assert_eq!(
        objects,
        [
            "node/ghost",
            "node/node-2",
            "pod/kube-system/kube-controller-manager",
            "pod/kube-system/kube-controller-manager",
            "service/default/extra",
            "service/default/moved"
        ],
        "{stdout}"
    );
    // overcast-ccm here runs without leader migration: the lifecycle
    // controller (migrated there) and the service controller (under its main
    // Lease there, as the default configuration reads) would run twice.
    let by_kcm: Vec<&str> = hazards[2..4].iter().map(|(_, m)| m.as_str()).collect();
    assert!(
        by_kcm[0].starts_with("kube-controller-manager runs cloud-node-lifecycle-controller and overcast-ccm runs it under its own Lease"),
        "{stdout}"
    );
    assert!(
        by_kcm[1].starts_with("kube-controller-manager runs service-lb-controller under its own Lease (--enable-leader-migration without a file"),
        "{stdout}"
    );
    let hazards = [&hazards[..2], &hazards[4..]].concat();
    assert!(
        hazards[0]
            .1
            .contains("the lifecycle controller would delete the Node now"),
        "{stdout}"
    );
    assert!(
        hazards[1]
            .1
            .contains("PersistentVolume(s) data require topology.kubernetes.io/zone=rack-9"),
        "{stdout}"
    );
    assert!(
        hazards[2].1.starts_with("annotation kube-vip.io/egress"),
        "{stdout}"
    );
    assert_eq!(
        hazards[3].1, "its address would change from 10.9.9.9 to 127.0.31.101",
        "{stdout}"
    );
    let notes = of("note");
    assert!(
        notes.contains(&(
            "service/default/fresh".into(),
            "would get 127.0.31.101".into()
        )),
        "{stdout}"
    );
    assert!(
        notes.iter().any(
            |(o, m)| o == "lease/kube-system/cloud-controller-manager" && m.starts_with("free")
        ),
        "{stdout}"
    );
    // With the service controller switched off (MetalLB kept, say), the
    // Services are not its to judge.
    let mut nodes_only = flags.clone();
    nodes_only.push("--controllers=*,-service-lb-controller".into());
    let (code, stdout, stderr) = migrate_check(&nodes_only, &[]);
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    let findings: Vec<serde_json::Value> = serde_json::from_str(&stdout).unwrap();
    assert!(
        findings
            .iter()
            .all(|f| !f["object"].as_str().unwrap().starts_with("service/")),
        "{stdout}"
    );
    // Read-only: no finalizer, no status, no Node touched.
    let services: Api<Service> = Api::namespaced(env.client.clone(), "default");
    let moved = services.get("moved").await.unwrap();
    assert!(moved.metadata.finalizers.is_none());
    assert_eq!(address(&env.client, "moved").await.unwrap().0, "10.9.9.9");
    assert!(address(&env.client, "fresh").await.is_none());
    assert!(
        Api::<Node>::all(env.client.clone())
            .get_opt("ghost")
            .await
            .unwrap()
            .is_some()
    );

    // Credentials that may read but not write: each missing right is named.
    let role = serde_json::json!({
        "metadata": {"name": "migrator"},
        "rules": [
            {"apiGroups": [""], "resources": ["nodes", "services", "persistentvolumes"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get"]},
        ],
    });
    create::<k8s_openapi::api::rbac::v1::ClusterRole>(&env.client, role).await;
    let binding = serde_json::json!({
        "metadata": {"name": "migrator"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "migrator"},
        "subjects": [{"kind": "ServiceAccount", "name": "migrator", "namespace": "default"}],
    });
    create::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>(&env.client, binding).await;
    let mut limited = flags.clone();
    limited[2] = format!(
        "--kubeconfig={}",
        service_account_kubeconfig(&env, "default", "migrator")
            .await
            .display()
    );
    let (code, stdout, stderr) = migrate_check(&limited, &[]);
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    let findings: Vec<serde_json::Value> = serde_json::from_str(&stdout).unwrap();
    let missing: Vec<&str> = findings
        .iter()
        .filter(|f| f["object"] == "rbac")
        .map(|f| f["message"].as_str().unwrap())
        .collect();
    // Of the 18 rights deploy/rbac.yaml grants, the role has get, list and
    // watch on nodes and services and get on the Lease.
    assert_eq!(missing.len(), 11, "{missing:#?}");
    assert!(
        missing.contains(&"these credentials may not delete nodes (deploy/rbac.yaml grants it)"),
        "{missing:#?}"
    );
    assert!(missing.contains(&"these credentials may not update leases.coordination.k8s.io \"cloud-controller-manager\" in kube-system (deploy/rbac.yaml grants it)"), "{missing:#?}");
}

/// A local-provider config: node-1 and node-2 on `<net>.1`/`.2` (node-2's
/// address overridable), a pool of four, node-1 listed only when `with_node_1`.
fn shadow_config(with_node_1: bool, node_2_address: &str, pool: &str) -> String {
    let mut config = String::from("instances:\n");
    if with_node_1 {
        config += "  - {name: node-1, addresses: [{type: InternalIP, address: 127.0.32.1}]}\n";
    }
    config += &format!(
        "  - {{name: node-2, addresses: [{{type: InternalIP, address: {node_2_address}}}]}}\nloadBalancer:\n  pools: [{{name: lan, addresses: [{pool}]}}]\n"
    );
    config
}

fn shadow_report(path: &Path) -> Option<Vec<serde_json::Value>> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// The shadow's user: overcast-ccm's service account of deploy/rbac.yaml.
const SHADOW_USER: &str = "system:serviceaccount:kube-system:overcast-ccm";

/// Shadow mode beside a running incumbent (here overcast-ccm itself, the
/// Go CCM is not built by `make test`): configured alike it reports no
/// divergence; configured otherwise it reports exactly what it would change
/// (a Node deleted, a Node's addresses, a Service's balancer and status),
/// changes none of it, and every write it sent reached the apiserver as a
/// dry run (the audit log of its own user).
#[tokio::test]
async fn shadow_mode_reports_what_it_would_change_and_writes_nothing() {
    let scratch = tempfile::tempdir().unwrap();
    let policy = scratch.path().join("audit-policy.yaml");
    std::fs::write(
        &policy,
        format!("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n  - level: Metadata\n    users: [\"{SHADOW_USER}\"]\n  - level: None\n"),
    )
    .unwrap();
    let audit = scratch.path().join("audit.log");
    let options = overcast_testenv::StartOptions {
        apiserver_args: vec![
            format!("--audit-policy-file={}", policy.display()),
            format!("--audit-log-path={}", audit.display()),
        ],
        ..Default::default()
    };
    let alike = shadow_config(true, "127.0.32.2", "127.0.32.100-127.0.32.103");
    let env = CloudEnv::start_with("local", "local.yaml", &alike, &options).await;
    let _incumbent = env.ccm(&[]);
    for n in ["node-1", "node-2"] {
        create_tainted_node(&env.client, n).await;
    }
    for n in ["node-1", "node-2"] {
        initialised(&env.client, n).await;
    }
    served_by_metallb(&env.client, "web", &[], None).await;
    let (web, _) = eventually("web served by the incumbent", SOON, || async {
        address(&env.client, "web").await
    })
    .await;

    // The shadow runs with overcast-ccm's own RBAC (deploy/rbac.yaml): it
    // may patch nodes/status and services/status but not read them.
    let rbac = std::fs::read_to_string(overcast_testenv::workspace_root().join("deploy/rbac.yaml"))
        .unwrap();
    env.plane.kubectl_apply(&rbac).unwrap();
    let shadow_kubeconfig = service_account_kubeconfig(&env, "kube-system", "overcast-ccm").await;
    let shadow = |config: &str, n: u32| {
        let config_path = env.dir.path().join(format!("shadow-{n}.yaml"));
        std::fs::write(&config_path, config).unwrap();
        let report = env.dir.path().join(format!("shadow-{n}.json"));
        let ccm = Ccm::start(
            env!("CARGO_BIN_EXE_overcast-ccm"),
            &shadow_kubeconfig,
            env.dir.path(),
            &[
                "--cloud-provider=local",
                &format!("--cloud-config={}", config_path.display()),
                "--shadow",
                &format!("--shadow-report={}", report.display()),
                "--node-status-update-frequency=1s",
            ],
        );
        (ccm, report)
    };

    // Alike: it serves Node status updates, the lifecycle pass and the
    // Service's sync, and finds nothing to change.
    let (same, same_report) = shadow(&alike, 1);
    eventually("the shadow's first status update", SOON, || async {
        same.log_text().contains("shadow mode").then_some(())
    })
    .await;
    eventually("the shadow synced web", SOON, || async {
        (same.get("/metrics")?.1)
            .contains("service_controller_loadbalancer_sync_total")
            .then_some(())
    })
    .await;
    // Several status updates and lifecycle passes later, still nothing.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(
        shadow_report(&same_report),
        Some(Vec::new()),
        "{}",
        same.log_text()
    );
    drop(same);

    // Otherwise: node-1 is not in its inventory (the Node is NotReady: the
    // lifecycle controller would delete it), node-2 has another address, and
    // the pool is another one.
    let (other, other_report) = shadow(
        &shadow_config(false, "127.0.32.22", "127.0.32.200-127.0.32.203"),
        2,
    );
    let wanted = [
        ("LoadBalancer", "default/web", "update"),
        ("Node", "node-1", "delete"),
        ("Node", "node-2 (status)", "patch"),
        ("Service", "default/web (status)", "patch"),
    ];
    let found = overcast_testenv::wait_until("the shadow's divergences", SOON, || async {
        let report = shadow_report(&other_report)?;
        let mut found: Vec<(String, String, String)> = report
            .iter()
            .map(|d| {
                let s = |k: &str| d[k].as_str().unwrap_or_default().to_string();
                (s("kind"), s("object"), s("action"))
            })
            .collect();
        found.sort();
        (found.len() >= wanted.len()).then_some((found, report))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", other.log_text()));
    let kinds: Vec<(&str, &str, &str)> = found
        .0
        .iter()
        .map(|(k, o, a)| (k.as_str(), o.as_str(), a.as_str()))
        .collect();
    assert_eq!(kinds, wanted, "{:#?}", found.1);
    let text = serde_json::to_string(&found.1).unwrap();
    assert!(text.contains("127.0.32.22"), "node-2's new address: {text}");
    assert!(text.contains("127.0.32.200"), "web's new address: {text}");
    let metrics = other.get("/metrics").unwrap().1;
    assert!(
        metrics.contains(
            "overcast_shadow_divergences{controller=\"node-controller\",kind=\"Node\"} 2"
        ),
        "{metrics}"
    );

    // Nothing changed.
    assert!(
        Api::<Node>::all(env.client.clone())
            .get_opt("node-1")
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(address(&env.client, "web").await.unwrap().0, web);
    let node_2 = Api::<Node>::all(env.client.clone())
        .get("node-2")
        .await
        .unwrap();
    let addresses = node_2.status.unwrap().addresses.unwrap();
    assert!(
        addresses.iter().all(|a| a.address != "127.0.32.22"),
        "{addresses:?}"
    );
    drop(other);
    // Every write it sent asked for a dry run (with the state checks above:
    // a DELETE's body could have overruled its query, and did once).
    let writes: Vec<serde_json::Value> = std::fs::read_to_string(&audit)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["user"]["username"] == SHADOW_USER)
        .filter(|e| {
            matches!(
                e["verb"].as_str(),
                Some("create" | "update" | "patch" | "delete")
            )
        })
        .collect();
    assert!(!writes.is_empty(), "the shadow sent its writes as dry runs");
    for w in &writes {
        let uri = w["requestURI"].as_str().unwrap();
        assert!(
            uri.contains("dryRun=All"),
            "a real write by the shadow: {w}"
        );
    }
}

/// The field managers of a Node's entries: who wrote it.
async fn managers(client: &Client, node: &str) -> Vec<String> {
    let node = Api::<Node>::all(client.clone()).get(node).await.unwrap();
    node.metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect()
}

/// overcast-ccm's field manager for a Node's initialisation.
const OURS: &str = "cloud-node-controller";
/// The Go CCM's: the apiserver names it after the User-Agent's binary name.
const GO: &str = "go-ccm";

/// The upstream Go CCM and overcast-ccm under one Lease name: one
/// reconciles at a time, the other waits; kill -9 the holder and the other
/// takes over, from Go to Overcast and back (a rollout and its rollback).
/// Both clouds answer alike (bench/go-ccm's fake and overcast's with the
/// same config), so only the field managers tell who initialised a Node; and
/// shadow mode beside the Go CCM finds nothing it would change on the Node.
#[tokio::test]
async fn the_go_ccm_and_overcast_take_turns_under_one_lease() {
    let env = CloudEnv::start(
        "fake",
        "fake.yaml",
        "anyInstance:\n  instanceType: bm.small\n  zone: rack-1\n  region: eu-home\n  addresses: [{type: InternalIP, address: 10.0.0.1}]\n",
    )
    .await;
    let go = ControllerManager::go_ccm(&env.plane, env.dir.path(), 1);
    overcast_testenv::wait_until("the Go CCM leads", SOON, || async {
        holder(&env.client, "cloud-controller-manager").await
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", go.log_text()));
    let ccm = env.ccm(&[]);

    create_tainted_node(&env.client, "n1").await;
    initialised(&env.client, "n1").await;
    let by_go = managers(&env.client, "n1").await;
    assert!(
        by_go.iter().any(|m| m == GO) && !by_go.iter().any(|m| m == OURS),
        "{by_go:?}"
    );
    assert!(!ccm.is_leader(), "both lead:\n{}", ccm.log_text());
    served_by_metallb(&env.client, "s1", &[], None).await;
    let (by_go_ip, _) = eventually("s1 served by the Go CCM", SOON, || async {
        address(&env.client, "s1").await
    })
    .await;

    // The preflight beside the Go CCM: nothing on the Node; for s1 a new
    // balancer (the fakes keep separate state), and who holds the Lease.
    let mut flags = env.provider_flags();
    flags.extend(["-o", "json"].map(String::from));
    let (code, stdout, stderr) = migrate_check(&flags, &[]);
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    let findings: Vec<serde_json::Value> = serde_json::from_str(&stdout).unwrap();
    let hazards: Vec<&str> = findings
        .iter()
        .filter(|f| f["severity"] == "hazard")
        .filter_map(|f| f["object"].as_str())
        .collect();
    assert_eq!(hazards, ["service/default/s1"], "{stdout}");
    assert!(
        findings.iter().any(
            |f| f["object"] == "lease/kube-system/cloud-controller-manager"
                && f["message"].as_str().is_some_and(|m| m.contains("held by"))
        ),
        "{stdout}"
    );

    // Shadow mode beside the Go CCM, configured alike: on the Node the Go CCM
    // initialised it would change nothing (node and lifecycle controllers);
    // for s1 it would make a balancer, since the two fakes keep separate
    // state (an address from another fake is not one overcast's knows).
    let report = env.dir.path().join("shadow-beside-go.json");
    let shadow = env.ccm(&[
        "--shadow",
        &format!("--shadow-report={}", report.display()),
        "--node-status-update-frequency=1s",
    ]);
    eventually("the shadow synced s1", SOON, || async {
        (shadow.get("/metrics")?.1)
            .contains("service_controller_loadbalancer_sync_total")
            .then_some(())
    })
    .await;
    // Several status updates and lifecycle passes.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let divergences: Vec<(String, String, String)> = shadow_report(&report)
        .unwrap_or_default()
        .iter()
        .map(|d| {
            let s = |k: &str| d[k].as_str().unwrap_or_default().to_string();
            (s("kind"), s("object"), s("action"))
        })
        .collect();
    assert_eq!(
        divergences,
        [(
            "LoadBalancer".to_string(),
            "default/s1".to_string(),
            "create".to_string()
        )],
        "{}",
        shadow.log_text()
    );
    drop(shadow);

    // kill -9 the Go CCM: overcast-ccm takes the Lease and serves.
    drop(go);
    eventually("overcast-ccm leads", SOON, || async {
        ccm.is_leader().then_some(())
    })
    .await;
    create_tainted_node(&env.client, "n2").await;
    initialised(&env.client, "n2").await;
    assert!(managers(&env.client, "n2").await.iter().any(|m| m == OURS));
    let s1 = Api::<Service>::namespaced(env.client.clone(), "default")
        .get("s1")
        .await
        .unwrap();
    assert_eq!(
        s1.metadata.finalizers.unwrap_or_default(),
        ["service.kubernetes.io/load-balancer-cleanup"],
        "one finalizer, shared"
    );
    // The clouds answer alike for s1 (each fake's first balancer), so its
    // address survives the cut-over, and the rollback below.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(
        address(&env.client, "s1").await.map(|(ip, _)| ip),
        Some(by_go_ip.clone()),
        "{}",
        ccm.log_text()
    );

    // Rollback: a Go CCM waits behind overcast-ccm, then takes over from it.
    let go = ControllerManager::go_ccm(&env.plane, env.dir.path(), 2);
    create_tainted_node(&env.client, "n3").await;
    initialised(&env.client, "n3").await;
    assert!(managers(&env.client, "n3").await.iter().any(|m| m == OURS));
    assert!(
        !go.log_text().contains("successfully acquired lease"),
        "the Go CCM led beside a live overcast-ccm:\n{}",
        go.log_text()
    );
    drop(ccm);
    overcast_testenv::wait_until("the Go CCM leads again", SOON, || async {
        go.log_text()
            .contains("successfully acquired lease kube-system/cloud-controller-manager")
            .then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", go.log_text()));
    create_tainted_node(&env.client, "n4").await;
    initialised(&env.client, "n4").await;
    let by_go = managers(&env.client, "n4").await;
    assert!(
        by_go.iter().any(|m| m == GO) && !by_go.iter().any(|m| m == OURS),
        "{by_go:?}"
    );
    assert_eq!(
        address(&env.client, "s1").await.map(|(ip, _)| ip),
        Some(by_go_ip),
        "{}",
        go.log_text()
    );
}

/// The in-tree → out-of-tree path, for real: kube-controller-manager v1.30
/// (the last line with in-tree cloud controllers) serves LoadBalancer
/// Services from its in-tree on-premises cloud and watches Nodes with its
/// cloud-node-lifecycle controller, under the migration Lease; overcast-ccm,
/// given the same migration configuration and a local pool over the same
/// addresses, waits beside it without touching them; kill -9 the old
/// controller manager and overcast-ccm takes both controllers over: every
/// Service keeps its address and its one finalizer, now served by
/// overcast-ccm's proxy, a new Service gets a free address of the pool, and
/// the Node stays.
#[tokio::test]
async fn an_in_tree_kube_controller_manager_hands_its_load_balancers_over_with_their_addresses() {
    let env = CloudEnv::start(
        "local",
        "local.yaml",
        "instances:
  - name: node-1
    addresses: [{type: InternalIP, address: 127.0.36.1}]
loadBalancer:
  pools: [{name: default, addresses: [127.0.36.100-127.0.36.103]}]
",
    )
    .await;
    let config = env.dir.path().join("migration.yaml");
    std::fs::write(
        &config,
        "apiVersion: controllermanager.config.k8s.io/v1
kind: LeaderMigrationConfiguration
leaderName: cloud-provider-extraction-migration
controllerLeaders:
  - {name: service-lb-controller, component: \"*\"}
  - {name: cloud-node-lifecycle-controller, component: \"*\"}
",
    )
    .unwrap();
    let kcm = ControllerManager::in_tree(
        &env.plane,
        env.dir.path(),
        &config,
        "first=127.0.36.100\nsize=4\n",
    );
    migration_held_with(&env.client, "kube-controller-manager", || kcm.log_text()).await;
    assert!(
        kcm.log_text().contains("Starting service controller"),
        "the in-tree service controller did not start:\n{}",
        kcm.log_text()
    );

    // A Node whose kubelet stopped reporting: both lifecycle controllers ask
    // the cloud, and both clouds have the machine.
    let nodes: Api<Node> = Api::all(env.client.clone());
    nodes
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": "node-1"}})).unwrap(),
        )
        .await
        .unwrap();
    let not_ready = serde_json::json!({"status": {"conditions": [{
        "type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown",
        "lastHeartbeatTime": "2026-01-01T00:00:00Z", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
    nodes
        .patch_status("node-1", &PatchParams::default(), &Patch::Merge(&not_ready))
        .await
        .unwrap();

    let ccm_flags = [
        "--controllers=cloud-node-lifecycle,service".to_string(),
        "--node-monitor-period=500ms".to_string(),
        "--enable-leader-migration".to_string(),
        format!("--leader-migration-config={}", config.display()),
    ];
    let ccm_flags: Vec<&str> = ccm_flags.iter().map(String::as_str).collect();
    let ccm = env.ccm(&ccm_flags);
    eventually("overcast-ccm holds its main Lease", SOON, || async {
        holder(&env.client, "cloud-controller-manager").await
    })
    .await;

    // The in-tree cloud serves the Services (the apiserver defaults their
    // ipMode to VIP); overcast-ccm, without the migration Lease, leaves them
    // alone (its ipMode would be Proxy).
    for name in ["s1", "s2"] {
        served_by_metallb(&env.client, name, &[], None).await;
    }
    let mut before = BTreeMap::new();
    for name in ["s1", "s2"] {
        let (ip, mode) = eventually(&format!("{name} served in-tree"), SOON, || async {
            address(&env.client, name).await
        })
        .await;
        assert_eq!(
            mode.as_deref(),
            Some("VIP"),
            "{name} served by overcast-ccm beside the in-tree controller"
        );
        before.insert(name, ip);
    }
    assert_eq!(
        before.values().collect::<Vec<_>>(),
        ["127.0.36.100", "127.0.36.101"],
        "{}",
        kcm.log_text()
    );
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    for name in ["s1", "s2"] {
        assert_eq!(
            address(&env.client, name).await,
            Some((before[name].clone(), Some("VIP".to_string()))),
            "{name} changed beside the in-tree controller:\n{}",
            ccm.log_text()
        );
    }

    // kill -9 the old controller manager: overcast-ccm takes over.
    drop(kcm);
    migration_held_with(&env.client, "cloud-controller-manager", || ccm.log_text()).await;
    served_by_metallb(&env.client, "s3", &[], None).await;
    let services: Api<Service> = Api::namespaced(env.client.clone(), "default");
    for (name, ip) in [
        ("s1", before["s1"].as_str()),
        ("s2", before["s2"].as_str()),
        ("s3", "127.0.36.102"),
    ] {
        let (got, _) = eventually(&format!("{name} served by overcast-ccm"), SOON, || async {
            address(&env.client, name)
                .await
                .filter(|(_, mode)| mode.as_deref() == Some("Proxy"))
        })
        .await;
        assert_eq!(got, ip, "{name}:\n{}", ccm.log_text());
        // Its proxy listens on the address the Service kept.
        std::net::TcpStream::connect((ip, 80))
            .unwrap_or_else(|e| panic!("{name}: connect to {ip}:80: {e}"));
        let svc = services.get(name).await.unwrap();
        assert_eq!(
            svc.metadata.finalizers.unwrap_or_default(),
            ["service.kubernetes.io/load-balancer-cleanup"],
            "{name}: one finalizer, shared"
        );
    }
    // Several lifecycle passes on the NotReady Node: it stays.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert!(
        nodes.get_opt("node-1").await.unwrap().is_some(),
        "node-1 deleted:\n{}",
        ccm.log_text()
    );
}
