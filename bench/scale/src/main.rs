//! `make bench-scale`: for each CCM in turn, on a fresh control plane, create
//! N tainted Nodes and then M LoadBalancer Services, and measure how long the
//! CCM takes to initialise them, its peak RSS and CPU time, and the requests
//! it made to the apiserver (from the apiserver's audit log, by verb and
//! resource), and the apiserver's and etcd's CPU time.
//!
//! The Nodes are created once the CCM is watching Nodes and Services (the
//! audit log shows both watches open), as they join a cluster whose CCM is
//! running; the time from the CCM's start to then is reported on its own.
//!
//! A third run, with no CCM, is the bound on node initialisation: the
//! benchmark makes each Node's two writes (the address patch and the
//! initialising patch) itself as soon as the Node's create returns, with as
//! many writers as the CCMs' node workers: what a CCM making those writes
//! could reach at best. A fourth run only creates the Nodes: the floor under
//! any CCM, whatever it costs. Both run with the `lifted` profile only (they
//! are never throttled).
//!
//! With `--churn` the Services do not wait for the Nodes: while the Nodes
//! join, each of the M Services is created, waited for until it has an
//! ingress, updated (its port changes) and deleted, and waited for until it
//! is gone (the CCM has released it and removed its finalizer), 64 at a time.
//! Each Node that joins also changes the set every load balancer targets.
//!
//! usage: overcast-bench --overcast BIN --go BIN [--nodes N] [--services M]
//!        [--profile default|lifted] [--churn] [--out FILE]
//!        [--apiserver-profile DIR]
//!
//! `--apiserver-profile DIR` saves a CPU profile of the apiserver over the
//! first seconds of each run's Node phase as DIR/<run>-apiserver.pprof
//! (`go tool pprof -top` reads it). Profiling costs the apiserver about 4 % more
//! CPU, and the Service phase waits for the profile to finish.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Node, Service, ServicePort, ServiceSpec};
use kube::api::{ObjectMeta, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use overcast_testenv::{ControlPlane, StartOptions};

use overcast_cloud_provider::names::TAINT_UNINITIALIZED as TAINT;

mod bound_events;
use bound_events::EventQueue;
/// Requests from the benchmark itself are done at this concurrency.
const CLIENT_CONCURRENCY: usize = 64;
const TIMEOUT: Duration = Duration::from_secs(1800);

#[derive(Debug, Clone)]
struct Args {
    overcast: PathBuf,
    go: PathBuf,
    nodes: usize,
    services: usize,
    profile: String,
    out: Option<PathBuf>,
    apiserver_profile: Option<PathBuf>,
    /// The Services churn while the Nodes join (see `churn_services`).
    churn: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        overcast: PathBuf::new(),
        go: PathBuf::new(),
        nodes: 1000,
        services: 1000,
        profile: "lifted".into(),
        out: None,
        apiserver_profile: None,
        churn: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--overcast" => a.overcast = value()?.into(),
            "--go" => a.go = value()?.into(),
            "--nodes" => a.nodes = value()?.parse().context("--nodes")?,
            "--services" => a.services = value()?.parse().context("--services")?,
            "--profile" => a.profile = value()?,
            "--out" => a.out = Some(value()?.into()),
            "--apiserver-profile" => a.apiserver_profile = Some(value()?.into()),
            "--churn" => a.churn = true,
            other => bail!("unknown flag {other}"),
        }
    }
    if !["default", "lifted"].contains(&a.profile.as_str()) {
        bail!("--profile must be default or lifted");
    }
    if let Some(dir) = &a.apiserver_profile {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("--apiserver-profile {}", dir.display()))?;
    }
    Ok(a)
}

/// Flags both CCMs get: the same controllers, client limits and concurrency.
fn common_flags(profile: &str, kubeconfig: &Path) -> Vec<String> {
    let mut f = vec![
        "--cloud-provider=fake".to_string(),
        format!("--kubeconfig={}", kubeconfig.display()),
        "--leader-elect=false".into(),
        "--configure-cloud-routes=false".into(),
        "--controllers=cloud-node,cloud-node-lifecycle,service".into(),
        "--secure-port=0".into(),
    ];
    if profile == "lifted" {
        f.extend(
            [
                "--kube-api-qps=100000",
                "--kube-api-burst=100000",
                "--concurrent-node-syncs=10",
                "--concurrent-service-syncs=10",
            ]
            .map(String::from),
        );
    }
    f
}

/// What initialises the Nodes (and serves the Services) in a run.
enum Initialiser<'a> {
    /// A CCM binary with its extra flags.
    Ccm(&'a Path, Vec<String>),
    /// The benchmark itself, writing what a CCM would write per Node as soon
    /// as the Node exists (with `events`, the `Synced` Event too, as a CCM
    /// that drops none would); Services are left alone.
    Bound { events: bool },
    /// Nothing: the run ends when every Node created is seen by the watch.
    /// The floor under any CCM's time, which starts with those creates.
    CreatesOnly,
}

#[derive(Debug, Default)]
struct RunResult {
    /// From the CCM's start until it watched Nodes and Services.
    watching_after: Duration,
    nodes_total: Duration,
    node_p50: Duration,
    node_p99: Duration,
    services_total: Duration,
    /// With --churn: create → ingress and delete → gone, p50 and p99.
    churn: Option<ChurnTimes>,
    peak_rss_kib: u64,
    cpu_seconds: f64,
    /// CPU time of the apiserver and of etcd during the Node phase.
    apiserver_node_cpu: f64,
    /// CPU time of the CCM during the Node phase (none in the bound).
    ccm_node_cpu: f64,
    /// The share of the machine's CPU busy during the Node phase (0 to 1).
    machine_node_busy: f64,
    etcd_node_cpu: f64,
    requests: BTreeMap<String, usize>,
}

impl RunResult {
    fn writes(&self) -> usize {
        self.requests
            .iter()
            .filter(|(k, _)| {
                ["create ", "update ", "patch ", "delete "]
                    .iter()
                    .any(|w| k.starts_with(w))
            })
            .map(|(_, v)| v)
            .sum()
    }
    /// Writes to one resource (and its subresources), e.g. "nodes".
    fn writes_to(&self, resource: &str) -> usize {
        self.requests
            .iter()
            .filter(|(k, _)| {
                let (verb, target) = k.split_once(' ').unwrap_or_default();
                ["create", "update", "patch", "delete"].contains(&verb)
                    && target.split('/').next() == Some(resource)
            })
            .map(|(_, v)| v)
            .sum()
    }

    /// Events created or updated (a repeat of an Event is a patch of it).
    fn events_written(&self) -> usize {
        ["create events", "patch events", "update events"]
            .iter()
            .filter_map(|k| self.requests.get(*k))
            .sum()
    }

    fn lists(&self) -> usize {
        self.requests
            .iter()
            .filter(|(k, _)| k.starts_with("list "))
            .map(|(_, v)| v)
            .sum()
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// VmHWM (peak RSS) in KiB and utime+stime in seconds of a live process.
fn process_usage(pid: u32) -> (u64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces) start at state.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    // SAFETY: sysconf has no preconditions.
    #[allow(unsafe_code)]
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let cpu = fields
        .get(11)
        .zip(fields.get(12))
        .and_then(|(u, s)| Some(u.parse::<f64>().ok()? + s.parse::<f64>().ok()?))
        .unwrap_or(0.0)
        / ticks.max(1.0);
    (rss, cpu)
}

/// The audit log's entries (one JSON object per line) about requests by the
/// user "ccm"; lines that are not JSON are skipped.
fn ccm_entries(audit_log: &str) -> impl Iterator<Item = serde_json::Value> + '_ {
    audit_log
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|v| v["user"]["username"] == "ccm")
}

/// Counts the audit log's requests by the user "ccm", as "verb resource[/sub]".
fn audit_counts(log: &Path) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    let text = std::fs::read_to_string(log).unwrap_or_default();
    for v in ccm_entries(&text).filter(|v| v["stage"] == "ResponseComplete") {
        let verb = v["verb"].as_str().unwrap_or("?");
        let mut resource = v["objectRef"]["resource"]
            .as_str()
            .unwrap_or("?")
            .to_string();
        if let Some(sub) = v["objectRef"]["subresource"].as_str() {
            resource = format!("{resource}/{sub}");
        }
        *counts.entry(format!("{verb} {resource}")).or_insert(0) += 1;
    }
    counts
}

/// Waits until the CCM, started just before, has both its Node and its
/// Service watch open (the audit log's `ResponseStarted` of each `watch` by
/// the user "ccm"): its informers have listed and are watching. Returns the
/// time that took; fails if the CCM exits or is not watching within a minute.
async fn wait_until_watching(
    audit_log: &Path,
    ccm: &mut Child,
    ccm_log: &Path,
) -> anyhow::Result<Duration> {
    const LIMIT: Duration = Duration::from_secs(60);
    let started = Instant::now();
    while started.elapsed() < LIMIT {
        if watching(&std::fs::read_to_string(audit_log).unwrap_or_default()) {
            return Ok(started.elapsed());
        }
        if let Some(status) = ccm.try_wait()? {
            bail!(
                "the CCM exited ({status}) before watching Nodes and Services; its log: {}",
                ccm_log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    bail!(
        "the CCM was not watching Nodes and Services {} s after its start; its log: {}",
        LIMIT.as_secs(),
        ccm_log.display()
    )
}

/// Whether an audit log shows the user "ccm" watching both Nodes and Services.
fn watching(audit_log: &str) -> bool {
    let (mut nodes, mut services) = (false, false);
    for v in ccm_entries(audit_log).filter(|v| v["verb"] == "watch") {
        match v["objectRef"]["resource"].as_str() {
            Some("nodes") => nodes = true,
            Some("services") => services = true,
            _ => {}
        }
    }
    nodes && services
}

fn control_plane_cpu(plane: &ControlPlane) -> (f64, f64) {
    plane
        .process_ids()
        .map(|(apiserver, etcd)| (process_usage(apiserver).1, process_usage(etcd).1))
        .unwrap_or_default()
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn run_one(
    name: &str,
    initialiser: Initialiser<'_>,
    args: &Args,
) -> anyhow::Result<RunResult> {
    let dir = tempfile_dir()?;
    let policy = dir.join("audit-policy.yaml");
    std::fs::write(
        &policy,
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n  - level: Metadata\n    users: [ccm]\n  - level: None\n",
    )?;
    let audit_log = dir.join("audit.log");
    let plane = ControlPlane::start_with(
        &overcast_testenv::bin_dir(),
        &StartOptions {
            extra_users: vec!["ccm".into()],
            apiserver_args: vec![
                format!("--audit-policy-file={}", policy.display()),
                format!("--audit-log-path={}", audit_log.display()),
                "--audit-log-format=json".into(),
                "--audit-log-maxsize=0".into(),
                "--max-requests-inflight=2000".into(),
                "--max-mutating-requests-inflight=1000".into(),
            ],
            ..StartOptions::default()
        },
    )
    .await?;
    let mut config = plane.config().await?;
    config.read_timeout = Some(Duration::from_secs(300));
    let client = Client::try_from(config)?;

    let log_path = dir.join(format!("{name}.log"));
    let creates_only = matches!(initialiser, Initialiser::CreatesOnly);
    let (child, watching_after, bound_client) = match initialiser {
        Initialiser::CreatesOnly => (None, Duration::ZERO, None),
        Initialiser::Ccm(binary, extra) => {
            let mut flags = common_flags(&args.profile, &plane.user_kubeconfig_path("ccm"));
            flags.extend(extra);
            let log = std::fs::File::create(&log_path)?;
            let child = Command::new(binary)
                .args(&flags)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .with_context(|| format!("starting {}", binary.display()))?;
            let mut child = Killed(child);
            let watching_after = wait_until_watching(&audit_log, &mut child.0, &log_path).await?;
            (Some(child), watching_after, None)
        }
        Initialiser::Bound { events } => {
            // The writes go as the user "ccm" so the audit log counts them.
            let kubeconfig =
                kube::config::Kubeconfig::read_from(plane.user_kubeconfig_path("ccm"))?;
            let mut config = kube::Config::from_custom_kubeconfig(
                kubeconfig,
                &kube::config::KubeConfigOptions::default(),
            )
            .await?;
            config.read_timeout = Some(Duration::from_secs(300));
            (
                None,
                Duration::ZERO,
                Some((Client::try_from(config)?, events)),
            )
        }
    };
    let plane_cpu_before = control_plane_cpu(&plane);
    let ccm_pid = child.as_ref().map(|c| c.0.id());
    let ccm_cpu = || ccm_pid.map_or(0.0, |pid| process_usage(pid).1);
    let ccm_cpu_before = ccm_cpu();
    let machine_before = overcast_testenv::MachineCpu::now();
    let profile = args.apiserver_profile.as_ref().map(|dir| {
        let path = dir.join(format!("{name}-apiserver.pprof"));
        tokio::spawn(save_apiserver_profile(client.clone(), path))
    });

    let node_times = watch_until(
        Api::<Node>::all(client.clone()),
        args.nodes,
        move |n: &Node| {
            creates_only
                || !n
                    .spec
                    .as_ref()
                    .and_then(|s| s.taints.as_ref())
                    .is_some_and(|t| t.iter().any(|t| t.key == TAINT))
        },
    );
    // With --churn, the Services churn while the Nodes join.
    // In the bound run, the benchmark makes the Services' writes too.
    let churn = (args.churn && !creates_only)
        .then(|| tokio::spawn(churn_services(client.clone(), args.services)));
    let bound_services = match (&churn, &bound_client) {
        (Some(_), Some((ccm, events))) => {
            let (queue, writer) = events
                .then(|| EventQueue::start(ccm.clone(), "service-controller"))
                .unzip();
            let server = tokio::spawn(serve_services_like_a_ccm(ccm.clone(), queue));
            Some((server, writer))
        }
        _ => None,
    };
    let created = Arc::new(Mutex::new(BTreeMap::new()));
    let started = Instant::now();
    let nodes: Api<Node> = Api::all(client.clone());
    // In the bound run, the names of created Nodes go to writers that stand
    // in for a CCM's node workers (as many as the lifted profile's).
    let (to_initialise, initialised) = match &bound_client {
        Some((ccm, events)) => {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<String>();
            // A CCM's Events go to one writer per controller behind a
            // queue, off the workers' path: so here.
            let (event_tx, event_writer) = if *events {
                let (queue, writer) = EventQueue::start(ccm.clone(), "cloud-node-controller");
                (Some(queue), Some(writer))
            } else {
                (None, None)
            };
            let ccm = ccm.clone();
            let writers = tokio::spawn(async move {
                tokio_stream_from(rx)
                    .map(|name| initialise_like_a_ccm(ccm.clone(), name, event_tx.clone()))
                    .buffer_unordered(NODE_WORKERS)
                    .try_collect::<Vec<()>>()
                    .await?;
                drop(event_tx);
                if let Some(writer) = event_writer {
                    writer.await??;
                }
                anyhow::Ok(())
            });
            (Some(tx), Some(writers))
        }
        None => (None, None),
    };
    futures::stream::iter(0..args.nodes)
        .map(|i| {
            let nodes = nodes.clone();
            let created = Arc::clone(&created);
            let to_initialise = to_initialise.clone();
            async move {
                let name = format!("node-{i:05}");
                nodes
                    .create(
                        &PostParams::default(),
                        &overcast_testenv::uninitialized_node(&name),
                    )
                    .await?;
                created.lock().unwrap().insert(name.clone(), Instant::now());
                if let Some(tx) = to_initialise {
                    let _ = tx.send(name);
                }
                anyhow::Ok(())
            }
        })
        .buffer_unordered(CLIENT_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    drop(to_initialise);
    let done = tokio::time::timeout(TIMEOUT, node_times)
        .await
        .context("nodes not initialised in time")??;
    let nodes_total = started.elapsed();
    let plane_cpu_after = control_plane_cpu(&plane);
    let ccm_node_cpu = ccm_cpu() - ccm_cpu_before;
    let machine_node_busy = overcast_testenv::MachineCpu::now().busy_since(&machine_before);
    // Trailing Events of the bound land after the Nodes, as a CCM's do.
    if let Some(writers) = initialised {
        writers.await??;
    }
    if let Some(profile) = profile {
        profile.await??;
    }
    let created = created.lock().unwrap().clone();
    let mut latencies: Vec<Duration> = done
        .iter()
        .filter_map(|(n, t)| created.get(n).map(|c| t.saturating_duration_since(*c)))
        .collect();
    latencies.sort();
    let mut result = RunResult {
        watching_after,
        nodes_total,
        node_p50: percentile(&latencies, 0.5),
        node_p99: percentile(&latencies, 0.99),
        apiserver_node_cpu: plane_cpu_after.0 - plane_cpu_before.0,
        ccm_node_cpu,
        machine_node_busy,
        etcd_node_cpu: plane_cpu_after.1 - plane_cpu_before.1,
        ..Default::default()
    };
    // Services are served only where a CCM runs.
    if let Some(mut churned) = churn {
        let (total, times) = match bound_services {
            // The bound's service writes failing would leave the churn waiting.
            Some((mut server, event_writer)) => {
                let churned = tokio::select! {
                    churned = &mut churned => churned??,
                    served = &mut server => {
                        served??;
                        bail!("the bound's service writer stopped")
                    }
                };
                server.abort();
                // The server's queue went with it: its writer ends once the
                // queued Events are written, and a failed Event write fails
                // the run, as on the Node side.
                if let Some(writer) = event_writer {
                    writer.await??;
                }
                churned
            }
            None => churned.await??,
        };
        result.services_total = total;
        result.churn = Some(times);
    } else if child.is_some() {
        let svc_times = watch_until(
            Api::<Service>::namespaced(client.clone(), "default"),
            args.services,
            has_ingress,
        );
        let started = Instant::now();
        let services: Api<Service> = Api::namespaced(client.clone(), "default");
        futures::stream::iter(0..args.services)
            .map(|i| {
                let services = services.clone();
                async move {
                    services
                        .create(&PostParams::default(), &lb_service(&format!("svc-{i:05}")))
                        .await?;
                    anyhow::Ok(())
                }
            })
            .buffer_unordered(CLIENT_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        tokio::time::timeout(TIMEOUT, svc_times)
            .await
            .context("services not served in time")??;
        result.services_total = started.elapsed();
    }
    if let Some(child) = &child {
        // Let trailing writes (events) land before counting.
        tokio::time::sleep(Duration::from_secs(3)).await;
        (result.peak_rss_kib, result.cpu_seconds) = process_usage(child.0.id());
    }
    result.requests = audit_counts(&audit_log);
    drop(plane);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(result)
}

#[derive(Debug, Default, Clone, Copy)]
struct ChurnTimes {
    served_p50: Duration,
    served_p99: Duration,
    gone_p50: Duration,
    gone_p99: Duration,
}

/// Those waiting for a Service to have an ingress, or to be gone.
#[derive(Default)]
struct ServiceWaiters {
    served: std::collections::HashMap<String, tokio::sync::oneshot::Sender<()>>,
    gone: std::collections::HashMap<String, tokio::sync::oneshot::Sender<()>>,
}

fn has_ingress(s: &Service) -> bool {
    s.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .is_some_and(|i| !i.is_empty())
}

/// Each of `count` Services, `CLIENT_CONCURRENCY` at a time: created, waited
/// for until it has an ingress, its port changed, deleted, waited for until
/// it is gone. The time for all, and each one's create → ingress and
/// delete → gone.
async fn churn_services(client: Client, count: usize) -> anyhow::Result<(Duration, ChurnTimes)> {
    let services: Api<Service> = Api::namespaced(client, "default");
    let waiters = Arc::new(Mutex::new(ServiceWaiters::default()));
    let watch = {
        let (api, waiters) = (services.clone(), Arc::clone(&waiters));
        tokio::spawn(async move {
            let stream = watcher::watcher(api, watcher::Config::default());
            futures::pin_mut!(stream);
            while let Some(event) = stream.try_next().await? {
                let mut w = waiters.lock().unwrap();
                let ready = match event {
                    watcher::Event::Apply(s) | watcher::Event::InitApply(s) if has_ingress(&s) => {
                        w.served.remove(&s.name_any())
                    }
                    watcher::Event::Delete(s) => w.gone.remove(&s.name_any()),
                    _ => None,
                };
                if let Some(tx) = ready {
                    let _ = tx.send(());
                }
            }
            anyhow::Ok(())
        })
    };
    let started = Instant::now();
    let times = futures::stream::iter(0..count)
        .map(|i| {
            let (services, waiters) = (services.clone(), Arc::clone(&waiters));
            async move {
                let name = format!("churn-{i:05}");
                let (tx, served) = tokio::sync::oneshot::channel();
                waiters.lock().unwrap().served.insert(name.clone(), tx);
                let t = Instant::now();
                services
                    .create(&PostParams::default(), &lb_service(&name))
                    .await?;
                tokio::time::timeout(TIMEOUT, served)
                    .await
                    .with_context(|| format!("{name} not served in time"))??;
                let to_serve = t.elapsed();
                services
                    .patch(
                        &name,
                        &kube::api::PatchParams::default(),
                        &kube::api::Patch::Merge(
                            serde_json::json!({"spec": {"ports": [{"port": 8080}]}}),
                        ),
                    )
                    .await?;
                let (tx, gone) = tokio::sync::oneshot::channel();
                waiters.lock().unwrap().gone.insert(name.clone(), tx);
                let t = Instant::now();
                services.delete(&name, &Default::default()).await?;
                tokio::time::timeout(TIMEOUT, gone)
                    .await
                    .with_context(|| format!("{name} not released in time"))??;
                anyhow::Ok((to_serve, t.elapsed()))
            }
        })
        .buffer_unordered(CLIENT_CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await;
    watch.abort();
    let times = times?;
    let total = started.elapsed();
    let (mut served, mut gone): (Vec<_>, Vec<_>) = times.into_iter().unzip();
    served.sort();
    gone.sort();
    Ok((
        total,
        ChurnTimes {
            served_p50: percentile(&served, 0.5),
            served_p99: percentile(&served, 0.99),
            gone_p50: percentile(&gone, 0.5),
            gone_p99: percentile(&gone, 0.99),
        },
    ))
}

/// Seconds of apiserver CPU profile taken from the start of the Node phase.
const PROFILE_SECONDS: u64 = 8;

async fn save_apiserver_profile(client: Client, path: PathBuf) -> anyhow::Result<()> {
    use http_body_util::BodyExt as _;
    let request = http::Request::get(format!("/debug/pprof/profile?seconds={PROFILE_SECONDS}"))
        .body(kube::client::Body::empty())?;
    let response = client
        .send(request)
        .await
        .context("apiserver CPU profile")?;
    if !response.status().is_success() {
        bail!("apiserver CPU profile: HTTP {}", response.status());
    }
    let bytes = response.into_body().collect().await?.to_bytes();
    std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Node workers of the bound run: the lifted profile's --concurrent-node-syncs.
const NODE_WORKERS: usize = 10;

fn tokio_stream_from<T>(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<T>,
) -> impl futures::Stream<Item = T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// The two writes any CCM must make to initialise a Node with the fake
/// cloud's answer: addresses (status), then labels, provider ID and taint
/// removal. Merge patches, as overcast-ccm sends. The `Synced` Event only with
/// `events` (the queue to the Event writer, which drops Events when full, as
/// both CCMs' recorders do).
async fn initialise_like_a_ccm(
    client: Client,
    name: String,
    events: Option<EventQueue>,
) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let params = kube::api::PatchParams::default();
    nodes
        .patch_status(
            &name,
            &params,
            &kube::api::Patch::Merge(serde_json::json!({"status": {"addresses": [
                {"type": "InternalIP", "address": "10.0.0.1"}
            ]}})),
        )
        .await?;
    nodes
        .patch(
            &name,
            &params,
            &kube::api::Patch::Merge(serde_json::json!({
                "metadata": {"labels": {
                    "node.kubernetes.io/instance-type": "bm.small",
                    "topology.kubernetes.io/zone": "rack-1",
                    "topology.kubernetes.io/region": "eu-home",
                }},
                "spec": {"providerID": format!("fake://{name}"), "taints": []},
            })),
        )
        .await?;
    if let Some(events) = events {
        events.node_synced(&name);
    }
    Ok(())
}

/// The bound's service controller under --churn: the Service writes any CCM
/// must make, as soon as the watch shows the need — the cleanup finalizer
/// and then the ingress on a new Service, the finalizer's removal on a
/// deleted one (merge patches, as overcast-ccm sends them) — with as many
/// writers as the lifted profile's service workers. A port change needs no
/// write: the ingress stays. With `events`, the Events upstream's service
/// controller records around them: Ensuring and Ensured for a new Service and
/// for a port change (repeats, so patches), Deleting and Deleted for a
/// deleted one.
async fn serve_services_like_a_ccm(
    client: Client,
    events: Option<EventQueue>,
) -> anyhow::Result<()> {
    use overcast_cloud_provider::names::FINALIZER_LOAD_BALANCER_CLEANUP as FINALIZER;
    let api: Api<Service> = Api::namespaced(client, "default");
    let params = kube::api::PatchParams::default();
    // The ports each Service was last served with: a change is an update.
    let served_ports: Arc<Mutex<std::collections::HashMap<String, String>>> = Arc::default();
    let record = |svc: &Service, reason: &'static str, message: &'static str| {
        if let Some(events) = &events {
            events.record(
                overcast_cloud_provider::object_reference(svc),
                reason,
                message,
            );
        }
    };
    watcher::watcher(api.clone(), watcher::Config::default())
        .map_err(anyhow::Error::from)
        .try_for_each_concurrent(SERVICE_WORKERS, |event| {
            let (api, params, served_ports) = (api.clone(), params.clone(), Arc::clone(&served_ports));
            async move {
                let (watcher::Event::Apply(svc) | watcher::Event::InitApply(svc)) = event else {
                    return Ok(());
                };
                let balanced = svc.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer");
                if !balanced {
                    return Ok(());
                }
                let name = svc.name_any();
                let finalized = svc.finalizers().iter().any(|f| f == FINALIZER);
                let ports = serde_json::to_string(&svc.spec.as_ref().map(|s| &s.ports))?;
                let patch = |body| kube::api::Patch::Merge(body);
                let written = if svc.metadata.deletion_timestamp.is_some() {
                    if !finalized {
                        return Ok(());
                    }
                    record(&svc, "DeletingLoadBalancer", "Deleting load balancer");
                    let removed = api
                        .patch(&name, &params, &patch(serde_json::json!({"metadata": {"finalizers": null}})))
                        .await
                        .map(|_| ());
                    if removed.is_ok() {
                        record(&svc, "DeletedLoadBalancer", "Deleted load balancer");
                    }
                    removed
                } else if finalized {
                    let previous = served_ports.lock().unwrap().insert(name.clone(), ports.clone());
                    if previous.is_some_and(|p| p != ports) {
                        record(&svc, "EnsuringLoadBalancer", "Ensuring load balancer");
                        record(&svc, "EnsuredLoadBalancer", "Ensured load balancer");
                    }
                    return Ok(());
                } else {
                    served_ports.lock().unwrap().insert(name.clone(), ports);
                    record(&svc, "EnsuringLoadBalancer", "Ensuring load balancer");
                    let served = match api
                        .patch(&name, &params, &patch(serde_json::json!({"metadata": {"finalizers": [FINALIZER]}})))
                        .await
                    {
                        Ok(_) => api
                            .patch_status(
                                &name,
                                &params,
                                &patch(serde_json::json!({"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.1"}]}}})),
                            )
                            .await
                            .map(|_| ()),
                        Err(e) => Err(e),
                    };
                    if served.is_ok() {
                        record(&svc, "EnsuredLoadBalancer", "Ensured load balancer");
                    }
                    served
                };
                match written {
                    // Deleted meanwhile: nothing left to write.
                    Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
                    other => other.with_context(|| format!("bound: writing Service {name}")),
                }
            }
        })
        .await
}

/// Service workers of the bound run: the lifted profile's --concurrent-service-syncs.
const SERVICE_WORKERS: usize = 10;

/// Resolves with the time each object first satisfied `done`, once `count` have.
fn watch_until<K>(
    api: Api<K>,
    count: usize,
    done: impl Fn(&K) -> bool + Send + 'static,
) -> impl std::future::Future<Output = anyhow::Result<BTreeMap<String, Instant>>>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    K::DynamicType: Default,
{
    let handle = tokio::spawn(async move {
        let mut seen = BTreeMap::new();
        let stream = watcher::watcher(api, watcher::Config::default());
        futures::pin_mut!(stream);
        while let Some(event) = stream.try_next().await? {
            let objs = match event {
                watcher::Event::Apply(o) | watcher::Event::InitApply(o) => vec![o],
                _ => vec![],
            };
            for o in objs {
                if done(&o) {
                    seen.entry(o.name_any()).or_insert_with(Instant::now);
                }
            }
            if seen.len() >= count {
                break;
            }
        }
        anyhow::Ok(seen)
    });
    async move { handle.await? }
}

fn lb_service(name: &str) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(name.into()),
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
    }
}

/// A fresh directory per run: runs share the process, and a leftover audit
/// log would be counted again.
fn tempfile_dir() -> anyhow::Result<PathBuf> {
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "overcast-bench-{}-{}",
        std::process::id(),
        RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn secs(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    overcast_testenv::install_crypto_provider();
    let args = parse_args()?;
    let fake_config =
        std::env::temp_dir().join(format!("overcast-bench-fake-{}.yaml", std::process::id()));
    std::fs::write(
        &fake_config,
        "anyInstance:\n  instanceType: bm.small\n  zone: rack-1\n  region: eu-home\n  addresses: [{type: InternalIP, address: 10.0.0.1}]\n",
    )?;
    eprintln!(
        "bench: overcast-ccm, {} nodes, {} services, profile {}",
        args.nodes, args.services, args.profile
    );
    let ours = run_one(
        "overcast",
        Initialiser::Ccm(
            &args.overcast,
            vec![format!("--cloud-config={}", fake_config.display())],
        ),
        &args,
    )
    .await?;
    eprintln!("bench: go cloud-controller-manager");
    let go = run_one(
        "go",
        Initialiser::Ccm(&args.go, vec!["--v=0".to_string()]),
        &args,
    )
    .await?;
    let _ = std::fs::remove_file(&fake_config);
    // The bound and the floor are unthrottled: they compare with the CCMs
    // only when the CCMs are too.
    let limits = if args.profile == "lifted" {
        eprintln!("bench: bound (the benchmark writes what a CCM would, no CCM)");
        let bound = run_one("bound", Initialiser::Bound { events: false }, &args).await?;
        eprintln!("bench: bound with Events (the same and the Events a CCM records about them)");
        let bound_events =
            run_one("bound-events", Initialiser::Bound { events: true }, &args).await?;
        eprintln!("bench: floor (the Nodes are created, nothing more)");
        let floor = run_one("floor", Initialiser::CreatesOnly, &args).await?;
        Some((bound, bound_events, floor))
    } else {
        None
    };

    let ratio = |a: f64, b: f64| {
        if b == 0.0 {
            "n/a".to_string()
        } else {
            format!("{:.2}", a / b)
        }
    };
    let mut out = String::new();
    out.push_str(&format!(
        "### {} nodes, {} services{}, profile `{}`\n\n| measure | overcast-ccm | Go CCM | overcast / Go |\n|---|---|---|---|\n",
        args.nodes,
        args.services,
        if args.churn { " churning" } else { "" },
        args.profile
    ));
    let events_row = if args.churn {
        "Events written (Synced per Node; Ensuring, Ensured, Deleting and Deleted per Service)"
            .to_string()
    } else {
        format!(
            "Events written, of the {} recorded (Synced per Node, Ensuring and Ensured per Service)",
            args.nodes + 2 * args.services
        )
    };
    let mut rows: Vec<(&str, f64, f64, String, String)> = vec![
        (
            "start → watching Nodes and Services (s)",
            ours.watching_after.as_secs_f64(),
            go.watching_after.as_secs_f64(),
            secs(ours.watching_after),
            secs(go.watching_after),
        ),
        (
            "all nodes initialised (s)",
            ours.nodes_total.as_secs_f64(),
            go.nodes_total.as_secs_f64(),
            secs(ours.nodes_total),
            secs(go.nodes_total),
        ),
        (
            "node init latency p50 (s)",
            ours.node_p50.as_secs_f64(),
            go.node_p50.as_secs_f64(),
            secs(ours.node_p50),
            secs(go.node_p50),
        ),
        (
            "node init latency p99 (s)",
            ours.node_p99.as_secs_f64(),
            go.node_p99.as_secs_f64(),
            secs(ours.node_p99),
            secs(go.node_p99),
        ),
        (
            if args.churn {
                "all services churned: created, served, updated, deleted, released (s)"
            } else {
                "all services have status (s)"
            },
            ours.services_total.as_secs_f64(),
            go.services_total.as_secs_f64(),
            secs(ours.services_total),
            secs(go.services_total),
        ),
        (
            "peak RSS (MiB)",
            ours.peak_rss_kib as f64 / 1024.0,
            go.peak_rss_kib as f64 / 1024.0,
            format!("{:.1}", ours.peak_rss_kib as f64 / 1024.0),
            format!("{:.1}", go.peak_rss_kib as f64 / 1024.0),
        ),
        (
            "CPU time (s)",
            ours.cpu_seconds,
            go.cpu_seconds,
            format!("{:.2}", ours.cpu_seconds),
            format!("{:.2}", go.cpu_seconds),
        ),
        (
            "apiserver CPU while Nodes initialise (s)",
            ours.apiserver_node_cpu,
            go.apiserver_node_cpu,
            format!("{:.2}", ours.apiserver_node_cpu),
            format!("{:.2}", go.apiserver_node_cpu),
        ),
        (
            "CCM CPU while Nodes initialise (s)",
            ours.ccm_node_cpu,
            go.ccm_node_cpu,
            format!("{:.2}", ours.ccm_node_cpu),
            format!("{:.2}", go.ccm_node_cpu),
        ),
        (
            "machine CPU busy while Nodes initialise (%)",
            ours.machine_node_busy * 100.0,
            go.machine_node_busy * 100.0,
            format!("{:.1}", ours.machine_node_busy * 100.0),
            format!("{:.1}", go.machine_node_busy * 100.0),
        ),
        (
            "etcd CPU while Nodes initialise (s)",
            ours.etcd_node_cpu,
            go.etcd_node_cpu,
            format!("{:.2}", ours.etcd_node_cpu),
            format!("{:.2}", go.etcd_node_cpu),
        ),
        (
            // Both CCMs drop Events when their queue is full (client-go:
            // 1,000 queued, then silently), so this varies with timing.
            events_row.as_str(),
            ours.events_written() as f64,
            go.events_written() as f64,
            ours.events_written().to_string(),
            go.events_written().to_string(),
        ),
        (
            "writes to Nodes per Node",
            ours.writes_to("nodes") as f64 / args.nodes as f64,
            go.writes_to("nodes") as f64 / args.nodes as f64,
            format!("{:.3}", ours.writes_to("nodes") as f64 / args.nodes as f64),
            format!("{:.3}", go.writes_to("nodes") as f64 / args.nodes as f64),
        ),
        (
            "writes to Services per Service",
            ours.writes_to("services") as f64 / args.services.max(1) as f64,
            go.writes_to("services") as f64 / args.services.max(1) as f64,
            format!(
                "{:.3}",
                ours.writes_to("services") as f64 / args.services.max(1) as f64
            ),
            format!(
                "{:.3}",
                go.writes_to("services") as f64 / args.services.max(1) as f64
            ),
        ),
        (
            "apiserver writes (all)",
            ours.writes() as f64,
            go.writes() as f64,
            ours.writes().to_string(),
            go.writes().to_string(),
        ),
        (
            "apiserver LISTs",
            ours.lists() as f64,
            go.lists() as f64,
            ours.lists().to_string(),
            go.lists().to_string(),
        ),
    ];
    if let (Some(o), Some(g)) = (ours.churn, go.churn) {
        for (what, a, b) in [
            (
                "churn: create → ingress p50 (s)",
                o.served_p50,
                g.served_p50,
            ),
            (
                "churn: create → ingress p99 (s)",
                o.served_p99,
                g.served_p99,
            ),
            ("churn: delete → released p50 (s)", o.gone_p50, g.gone_p50),
            ("churn: delete → released p99 (s)", o.gone_p99, g.gone_p99),
        ] {
            rows.push((what, a.as_secs_f64(), b.as_secs_f64(), secs(a), secs(b)));
        }
    }
    for (what, a, b, sa, sb) in rows {
        out.push_str(&format!("| {what} | {sa} | {sb} | {} |\n", ratio(a, b)));
    }
    if let Some((bound, bound_events, floor)) = &limits {
        out.push_str(&format!(
            "\nBound: with no CCM, the benchmark making each Node's two writes (merge patches, \
             as overcast-ccm sends them) itself as soon as its create returns, with \
             {NODE_WORKERS} writers, had all Nodes initialised in {} s (p50 {} s, p99 {} s; \
             apiserver CPU {:.2} s, etcd {:.2} s, machine {:.1} % busy): {} × the Go CCM's \
             throughput. Creating the \
             Nodes alone, with nothing initialising them, took {} s (apiserver CPU {:.2} s): a \
             CCM that cost the apiserver nothing could be at most {} × as fast as the Go CCM.\n",
            secs(bound.nodes_total),
            secs(bound.node_p50),
            secs(bound.node_p99),
            bound.apiserver_node_cpu,
            bound.etcd_node_cpu,
            bound.machine_node_busy * 100.0,
            ratio(
                go.nodes_total.as_secs_f64(),
                bound.nodes_total.as_secs_f64()
            ),
            secs(floor.nodes_total),
            floor.apiserver_node_cpu,
            ratio(
                go.nodes_total.as_secs_f64(),
                floor.nodes_total.as_secs_f64()
            ),
        ));
        out.push_str(&format!(
            "\nBound with Events: the same writes and the Events a CCM records about them (a \
             `Synced` Event per Node; with --churn, Ensuring and Ensured per Service created \
             or updated, Deleting and Deleted per Service deleted), each controller's by one \
             writer behind a queue of 1,000 that drops Events when full, as both CCMs' \
             recorders do: {} s (apiserver CPU {:.2} s, {} Events written).\n\n\
             | of the bound (bound time / CCM time) | overcast-ccm | Go CCM |\n|---|---|---|\n\
             | bound | {} | {} |\n| bound with Events | {} | {} |\n",
            secs(bound_events.nodes_total),
            bound_events.apiserver_node_cpu,
            bound_events.events_written(),
            ratio(
                bound.nodes_total.as_secs_f64(),
                ours.nodes_total.as_secs_f64()
            ),
            ratio(
                bound.nodes_total.as_secs_f64(),
                go.nodes_total.as_secs_f64()
            ),
            ratio(
                bound_events.nodes_total.as_secs_f64(),
                ours.nodes_total.as_secs_f64()
            ),
            ratio(
                bound_events.nodes_total.as_secs_f64(),
                go.nodes_total.as_secs_f64()
            ),
        ));
        if let Some(churn) = bound.churn {
            out.push_str(&format!(
                "\nWith --churn the bound also makes the Services' writes (finalizer, ingress; \
                 the finalizer's removal) with {SERVICE_WORKERS} writers: all churned in {} s \
                 (create → ingress p50 {} s, p99 {} s; delete → released p50 {} s, p99 {} s). \
                 The bound's Nodes are timed with the same churn. Services churned, of the \
                 bound: overcast-ccm {}, Go CCM {}.\n",
                secs(bound.services_total),
                secs(churn.served_p50),
                secs(churn.served_p99),
                secs(churn.gone_p50),
                secs(churn.gone_p99),
                ratio(
                    bound.services_total.as_secs_f64(),
                    ours.services_total.as_secs_f64()
                ),
                ratio(
                    bound.services_total.as_secs_f64(),
                    go.services_total.as_secs_f64()
                ),
            ));
        }
    }
    out.push_str("\nRequests by verb and resource (from the apiserver's audit log):\n\n| request | overcast-ccm | Go CCM |\n|---|---|---|\n");
    let keys: std::collections::BTreeSet<&String> =
        ours.requests.keys().chain(go.requests.keys()).collect();
    for k in keys {
        out.push_str(&format!(
            "| {k} | {} | {} |\n",
            ours.requests.get(k).copied().unwrap_or(0),
            go.requests.get(k).copied().unwrap_or(0)
        ));
    }
    out.push('\n');
    println!("{out}");
    if let Some(path) = &args.out {
        use std::io::Write as _;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?
            .write_all(out.as_bytes())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::watching;

    fn entry(user: &str, verb: &str, resource: &str) -> String {
        format!(
            r#"{{"kind":"Event","stage":"ResponseStarted","verb":"{verb}","user":{{"username":"{user}"}},"objectRef":{{"resource":"{resource}","apiVersion":"v1"}}}}"#
        )
    }

    #[test]
    fn watching_needs_both_watches_by_the_ccm() {
        let nodes = entry("ccm", "watch", "nodes");
        let services = entry("ccm", "watch", "services");
        assert!(!watching(""));
        assert!(!watching(&nodes));
        assert!(!watching(&format!(
            "{nodes}\n{}",
            entry("ccm", "list", "services")
        )));
        assert!(!watching(&format!(
            "{nodes}\n{}",
            entry("admin", "watch", "services")
        )));
        assert!(watching(&format!("{nodes}\nnot json\n{services}")));
    }
}
