//! overcast-ccm as users run it: a process against the real apiserver.

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};

const BIN: &str = env!("CARGO_BIN_EXE_overcast-ccm");

async fn env() -> CloudEnv {
    CloudEnv::start(
        "fake",
        "fake.yaml",
        "anyInstance:\n  instanceType: bm.small\n  zone: rack-1\n  addresses: [{type: InternalIP, address: 10.0.0.1}]\n",
    )
    .await
}

impl CloudEnv {
    async fn lease(&self) -> Option<Lease> {
        Api::<Lease>::namespaced(self.client.clone(), "kube-system")
            .get_opt("cloud-controller-manager")
            .await
            .unwrap()
    }

    async fn holder(&self) -> String {
        self.lease()
            .await
            .and_then(|l| l.spec?.holder_identity)
            .unwrap_or_default()
    }
}

async fn leader_of<'a>(a: &'a Ccm, b: &'a Ccm) -> (&'a Ccm, &'a Ccm) {
    eventually("one replica leads", SOON, || async {
        match (a.is_leader(), b.is_leader()) {
            (true, false) => Some((a, b)),
            (false, true) => Some((b, a)),
            (true, true) => panic!("two leaders"),
            _ => None,
        }
    })
    .await
}

#[tokio::test]
async fn with_two_replicas_one_leads_and_sigkill_hands_over_after_expiry() {
    let env = env().await;
    let mut a = env.ccm(&[]);
    let mut b = env.ccm(&[]);
    let (leader, standby) = leader_of(&a, &b).await;
    let leader_is_a = std::ptr::eq(leader, &a);
    assert!(!standby.is_leader());
    create_tainted_node(&env.client, "node-1").await;
    let n = initialised(&env.client, "node-1").await;
    assert_eq!(
        n.spec.unwrap().provider_id.as_deref(),
        Some("fake://node-1")
    );
    // Only the leader runs controllers.
    let standby_metrics = standby.get("/metrics").unwrap().1;
    assert!(
        !standby_metrics.contains("running_managed_controllers{"),
        "{standby_metrics}"
    );

    let (killed, survivor) = if leader_is_a {
        (&mut a, &b)
    } else {
        (&mut b, &a)
    };
    killed.signal(libc::SIGKILL);
    killed.wait_exit(Duration::from_secs(10));
    eventually("the standby takes over", SOON, || async {
        survivor.is_leader().then_some(())
    })
    .await;
    create_tainted_node(&env.client, "node-2").await;
    initialised(&env.client, "node-2").await;
}

#[tokio::test]
async fn sigterm_releases_the_lease_so_the_standby_need_not_wait_for_expiry() {
    let env = env().await;
    // A lease so long that only a release explains a quick takeover.
    let long = [
        "--leader-elect-lease-duration=120s",
        "--leader-elect-renew-deadline=60s",
    ];
    let mut a = env.ccm(&long);
    eventually("a leads", SOON, || async { a.is_leader().then_some(()) }).await;
    let b = env.ccm(&long);
    let a_identity = env.holder().await;

    a.signal(libc::SIGTERM);
    let status = a.wait_exit(Duration::from_secs(20));
    assert!(
        status.success(),
        "SIGTERM is a clean exit: {status}\n{}",
        a.log_text()
    );
    eventually("b takes over", SOON, || async {
        b.is_leader().then_some(())
    })
    .await;
    let lease = env.lease().await.unwrap().spec.unwrap();
    assert_ne!(lease.holder_identity.as_deref(), Some(a_identity.as_str()));
    assert!(lease.lease_transitions.unwrap() >= 1);
}

fn field_managers(meta: &ObjectMeta) -> Vec<String> {
    meta.managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.manager.clone())
        .collect()
}

/// Each client says who it is, as the Go ClientBuilder's do, so the
/// apiserver names the Lease's writer after the binary instead of `unknown`.
#[tokio::test]
async fn the_lease_and_node_writes_carry_the_binarys_name_not_unknown() {
    let env = env().await;
    let ccm = env.ccm(&[]);
    eventually("leads", SOON, || async { ccm.is_leader().then_some(()) }).await;
    let lease = env.lease().await.unwrap();
    let managers = field_managers(&lease.metadata);
    assert_eq!(managers, ["overcast-ccm"], "the Lease's field managers");
    create_tainted_node(&env.client, "n1").await;
    initialised(&env.client, "n1").await;
    let node = Api::<Node>::all(env.client.clone())
        .get("n1")
        .await
        .unwrap();
    let managers = field_managers(&node.metadata);
    assert!(!managers.iter().any(|m| m == "unknown"), "{managers:?}");
}

#[tokio::test]
async fn a_lease_held_by_another_identity_is_respected_until_it_expires() {
    let env = env().await;
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), "kube-system");
    // What a Go cloud-controller-manager writes through client-go.
    let foreign = held_lease(
        "cloud-controller-manager",
        "go-ccm-host_6f1c1b8e-0000-4000-8000-000000000000",
        3,
    );
    leases
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();
    let ccm = env.ccm(&[]);
    create_tainted_node(&env.client, "node-1").await;

    // The other holder keeps renewing for a while: overcast-ccm must wait.
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        renew(&leases, "cloud-controller-manager").await;
        assert!(!ccm.is_leader(), "took a lease that was being renewed");
    }
    assert!(
        is_tainted(&env.client, "node-1").await,
        "no controller ran while another held the lease"
    );

    // It stops renewing: after its duration, overcast-ccm takes over.
    initialised(&env.client, "node-1").await;
    let lease = leases
        .get("cloud-controller-manager")
        .await
        .unwrap()
        .spec
        .unwrap();
    assert_eq!(lease.lease_transitions, Some(4));
    assert!(ccm.is_leader());
}

#[tokio::test]
async fn the_controllers_flag_really_disables_a_controller() {
    let env = env().await;
    let ccm = env.ccm(&["--controllers=*,-cloud-node", "--leader-elect=false"]);
    let metrics = eventually("metrics of the running controllers", SOON, || async {
        let (_, body) = ccm.get("/metrics")?;
        body.contains("running_managed_controllers{")
            .then_some(body)
    })
    .await;
    assert!(metrics.contains("running_managed_controllers{manager=\"cloud-controller-manager\",name=\"cloud-node-lifecycle\"} 1"), "{metrics}");
    assert!(!metrics.contains("name=\"cloud-node\"}"), "{metrics}");
    create_tainted_node(&env.client, "node-1").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        is_tainted(&env.client, "node-1").await,
        "cloud-node is disabled"
    );
}

#[tokio::test]
async fn readyz_and_metrics_answer_as_described() {
    let env = env().await;
    let ccm = env.ccm(&[]);
    eventually("ready", SOON, || async {
        (ccm.get("/readyz")?.0 == 200).then_some(())
    })
    .await;
    let (status, body) = ccm.get("/healthz?verbose").unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("[+]leaderElection ok"), "{body}");
    assert_eq!(ccm.get("/livez").unwrap(), (200, "ok".to_string()));

    create_tainted_node(&env.client, "node-1").await;
    initialised(&env.client, "node-1").await;
    let metrics = eventually("node metrics", SOON, || async {
        let (_, body) = ccm.get("/metrics")?;
        body.contains("node_controller_initial_node_sync_delay_seconds_count 1")
            .then_some(body)
    })
    .await;
    let rest = format!(
        "rest_client_requests_total{{code=\"200\",host=\"{}\",method=\"GET\"}}",
        env.plane.server().trim_start_matches("https://")
    );
    for name in [
        "workqueue_adds_total{name=\"Nodes\"}",
        "workqueue_depth{name=\"Nodes\"}",
        "workqueue_work_duration_seconds_bucket{name=\"Nodes\"",
        "leader_election_master_status{name=\"cloud-controller-manager\"} 1",
        "cloudprovider_fake_api_request_duration_seconds_bucket{request=\"instance-metadata\"",
        "node_controller_cloud_provider_taint_removal_delay_seconds_count 1",
        // client-go's, for every request to the apiserver.
        rest.as_str(),
        "rest_client_request_duration_seconds_bucket{host=",
        // The Go client's process collector.
        "process_resident_memory_bytes ",
        "process_open_fds ",
        "process_start_time_seconds ",
    ] {
        assert!(metrics.contains(name), "missing {name} in\n{metrics}");
    }
}

#[test]
fn a_bad_cloud_config_stops_the_program_naming_the_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("fake.yaml");
    std::fs::write(&bad, "instances:\n  w1:\n    instanceTyp: big\n").unwrap();
    let (code, stderr) = run_to_exit(&[
        "--cloud-provider=fake",
        &format!("--cloud-config={}", bad.display()),
        "--kubeconfig=/nonexistent",
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("--cloud-provider=fake") && stderr.contains("instanceTyp"),
        "{stderr}"
    );

    let (code, stderr) = run_to_exit(&[
        "--cloud-provider=fake",
        "--cloud-config=/nonexistent/cloud.yaml",
    ]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("--cloud-config=/nonexistent/cloud.yaml"),
        "{stderr}"
    );

    // The local provider: the field path, said once, on one error line.
    std::fs::write(&bad, "instances:\n  - name: a\n    state: paused\n").unwrap();
    let (code, stderr) = run_to_exit(&[
        "--cloud-provider=local",
        &format!("--cloud-config={}", bad.display()),
        "--kubeconfig=/nonexistent",
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(
        stderr
            .matches("instances[0].state: \"paused\" is not running or stopped")
            .count(),
        1,
        "{stderr}"
    );
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("ERROR") && l.contains("instances[0].state")),
        "{stderr}"
    );

    let (_, stderr) = run_to_exit(&["--cloud-provider=gce"]);
    assert!(stderr.contains("unknown cloud provider"));

    let (code, stderr) = run_to_exit(&["--cloud-provider=fake", "--node-monitor-period=5"]);
    assert_eq!(code, Some(2), "clap's usage error");
    assert!(stderr.contains("--node-monitor-period"));
    // A value that parses but is refused: also a bad flag, also 2.
    let (code, stderr) = run_to_exit(&["--cloud-provider=fake", "--node-monitor-period=0s"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(
        stderr
            .matches("--node-monitor-period must be greater than zero")
            .count(),
        1,
        "{stderr}"
    );
}

#[test]
fn json_logs_are_one_object_per_line() {
    let (code, stderr) = run_to_exit(&[
        "--logging-format=json",
        "--cloud-provider=fake",
        "--cloud-config=/nonexistent/cloud.yaml",
    ]);
    assert_eq!(code, Some(1));
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let error = lines
        .iter()
        .find(|l| l["level"] == "ERROR")
        .unwrap_or_else(|| panic!("an error line: {stderr}"));
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/cloud.yaml"),
        "{error}"
    );
    let (code, stderr) = run_to_exit(&["--logging-format=xml", "--cloud-provider=fake"]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("--logging-format=xml: unsupported; one of text, json"),
        "{stderr}"
    );
}

#[tokio::test]
async fn leader_migration_runs_listed_controllers_only_under_the_migration_lease() {
    let env = env().await;
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), "kube-system");
    // The old kube-controller-manager holds the migration lease.
    let held = held_lease(
        "cloud-provider-extraction-migration",
        "kcm-host_00000000-0000-4000-8000-000000000001",
        0,
    );
    leases.create(&PostParams::default(), &held).await.unwrap();
    let ccm = env.ccm(&["--enable-leader-migration"]);
    let running = |ccm: &Ccm, name: &str| {
        ccm.get("/metrics").is_some_and(|(_, body)| {
            body.contains(&format!(
                "running_managed_controllers{{manager=\"cloud-controller-manager\",name=\"{name}\"}} 1"
            ))
        })
    };

    // Non-migrated controllers run under the main lease at once.
    create_tainted_node(&env.client, "node-1").await;
    initialised(&env.client, "node-1").await;
    for _ in 0..4 {
        renew(&leases, "cloud-provider-extraction-migration").await;
        // Upstream's default configuration lists route-controller,
        // service-controller and cloud-node-lifecycle-controller; compared
        // literally, as kube-controller-manager compares them, only the
        // lifecycle controller waits for the migration lease.
        assert!(running(&ccm, "cloud-node"));
        assert!(running(&ccm, "service"));
        assert!(!running(&ccm, "cloud-node-lifecycle"));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let log = ccm.log_text();
    for (entry, meant) in [
        ("route-controller", "node-route-controller"),
        ("service-controller", "service-lb-controller"),
    ] {
        assert!(
            log.contains(&format!("{entry:?} names {meant} in no version"))
                && log.contains(&format!("list {meant:?}")),
            "a warning about {entry}: {log}"
        );
    }

    // The old holder lets go: the migrated controller starts here.
    eventually("migrated controller running", SOON, || async {
        running(&ccm, "cloud-node-lifecycle").then_some(())
    })
    .await;
    let holder = leases
        .get("cloud-provider-extraction-migration")
        .await
        .unwrap()
        .spec
        .unwrap()
        .holder_identity
        .unwrap();
    assert_eq!(
        holder,
        env.holder().await,
        "both leases held by the same identity"
    );
}

/// A Lease in kube-system held just now for 4 s by another process, as
/// client-go's leader election writes it.
fn held_lease(name: &str, holder: &str, transitions: i32) -> Lease {
    let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
    Lease {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(4),
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            lease_transitions: Some(transitions),
            ..Default::default()
        }),
    }
}

/// Renews a Lease [`held_lease`] wrote, as its holder would.
async fn renew(leases: &Api<Lease>, name: &str) {
    let mut lease = leases.get(name).await.unwrap();
    lease.spec.as_mut().unwrap().renew_time = Some(MicroTime(k8s_openapi::jiff::Timestamp::now()));
    leases
        .replace(name, &PostParams::default(), &lease)
        .await
        .unwrap();
}

/// Runs overcast-ccm to its exit: the exit code and stderr.
fn run_to_exit(args: &[&str]) -> (Option<i32>, String) {
    let out = std::process::Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// /configz is the Go CCM's document: given the same flags, overcast-ccm
/// and the upstream Go CCM (k8s.io/cloud-provider v0.34.4's app,
/// bench/go-ccm) serve the same JSON, key for key and value for value.
#[tokio::test]
async fn configz_is_the_go_ccm_s_document_for_the_same_flags() {
    let env = CloudEnv::start(
        "fake",
        "fake.yaml",
        "anyInstance:\n  instanceType: bm.small\n  zone: rack-1\n  region: eu-home\n",
    )
    .await;
    // Beyond the harness's own (kubeconfig, election timings, node monitor
    // period, no cloud routes): values away from the defaults.
    let shared = [
        "--leader-elect=false",
        "--controllers=cloud-node,service",
        "--concurrent-service-syncs=3",
        "--kube-api-qps=12.5",
        "--kube-api-burst=40",
        "--cluster-name=prod",
        "--route-reconciliation-period=45s",
        "--node-status-update-frequency=1m30s",
        "--min-resync-period=6h",
    ];
    let ccm = env.ccm(&shared);

    let go_binary = std::env::var_os("OVERCAST_GO_CCM").map_or_else(
        || {
            std::path::PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/overcast/go-ccm")
        },
        std::path::PathBuf::from,
    );
    let kubeconfig = env.plane.kubeconfig_path().display().to_string();
    let port = free_port();
    let log = env.dir.path().join("go-ccm-configz.log");
    let mut go = std::process::Command::new(&go_binary)
        .args(shared)
        .args([
            format!("--kubeconfig={kubeconfig}"),
            format!("--authentication-kubeconfig={kubeconfig}"),
            format!("--authorization-kubeconfig={kubeconfig}"),
            "--authentication-skip-lookup".into(),
            "--authorization-always-allow-paths=/configz".into(),
            format!("--secure-port={port}"),
            format!("--cert-dir={}", env.dir.path().display()),
            "--cloud-provider=fake".into(),
            format!("--cloud-config={}", env.config.display()),
            "--leader-elect-lease-duration=4s".into(),
            "--leader-elect-renew-deadline=3s".into(),
            "--leader-elect-retry-period=500ms".into(),
            "--node-monitor-period=500ms".into(),
            "--configure-cloud-routes=false".into(),
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(log.with_extension("err")).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("start {} (make go-ccm): {e}", go_binary.display()));
    let theirs = eventually("the Go CCM's /configz", SOON, || async {
        let (status, body) = https_get(port, "/configz", None)?;
        (status == 200).then_some(body)
    })
    .await;
    let _ = go.kill();
    let _ = go.wait();
    let ours = eventually("overcast-ccm's /configz", SOON, || async {
        let (status, body) = ccm.get("/configz")?;
        (status == 200).then_some(body)
    })
    .await;
    let theirs: serde_json::Value = serde_json::from_str(&theirs).unwrap();
    let ours: serde_json::Value = serde_json::from_str(&ours).unwrap();
    assert_eq!(
        ours,
        theirs,
        "ours:\n{}\ntheirs:\n{}",
        serde_json::to_string_pretty(&ours).unwrap(),
        serde_json::to_string_pretty(&theirs).unwrap()
    );
}
