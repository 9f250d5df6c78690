//! VIP failover benchmark (`make bench-failover`): how long a client outside
//! the cluster goes unserved when the overcast-ccm that serves a VIP dies.
//!
//! A real cluster of two nodes; on each node's host network (its namespace,
//! interface `eth0`, as the Helm chart's `hostNetwork` Pods run) one
//! overcast-ccm with the local provider, the same inventory and the same
//! leader-election settings. An echo Deployment behind a LoadBalancer Service;
//! a client in the "outside" namespace sends one HTTP request every 10 ms to
//! the VIP (connect and reply each bounded by 100 ms). Each round finds the
//! leader (the node whose `eth0` carries the VIP), sends it SIGKILL or
//! SIGTERM, and measures the interruption: the longest time between two
//! successful requests around the signal, and how many failed. The killed
//! replica is started again as the next round's standby.

use std::io::{BufRead as _, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::{Node, Service};
use kube::Api;
use overcast_testenv::Cluster;

const WAIT: Duration = Duration::from_secs(90);
const REQUEST_EVERY: Duration = Duration::from_millis(10);
const REQUEST_TIMEOUT: Duration = Duration::from_millis(100);
/// A round ends when requests have succeeded this long without a failure.
const SETTLED: Duration = Duration::from_secs(2);
/// A round whose VIP is not served again within this is reported as such.
const ROUND_LIMIT: Duration = Duration::from_secs(60);

struct Args {
    overcast: PathBuf,
    rounds: usize,
    lease_duration: String,
    renew_deadline: String,
    retry_period: String,
    vip_lifetime: Option<String>,
    out: Option<PathBuf>,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        overcast: PathBuf::new(),
        rounds: 4,
        // The Helm chart's defaults for the local provider.
        lease_duration: "1s".into(),
        renew_deadline: "800ms".into(),
        retry_period: "200ms".into(),
        vip_lifetime: None,
        out: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--overcast" => a.overcast = value()?.into(),
            "--rounds" => a.rounds = value()?.parse().context("--rounds")?,
            "--lease-duration" => a.lease_duration = value()?,
            "--renew-deadline" => a.renew_deadline = value()?,
            "--retry-period" => a.retry_period = value()?,
            "--vip-lifetime" => a.vip_lifetime = Some(value()?),
            "--out" => a.out = Some(value()?.into()),
            other => bail!("unknown flag {other}"),
        }
    }
    if a.overcast.as_os_str().is_empty() {
        bail!("--overcast <overcast-ccm binary> is required");
    }
    Ok(a)
}

fn epoch_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The client, run in the outside namespace: one line "<epoch µs> <0|1>" per
/// request on stdout, until stdin closes (the benchmark ends) or an hour.
fn client(target: &str) -> anyhow::Result<()> {
    let addr: SocketAddr = target.parse().context("client address")?;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_on_eof = Arc::clone(&stop);
    std::thread::spawn(move || {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        stop_on_eof.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let mut out = std::io::stdout().lock();
    let end = Instant::now() + Duration::from_secs(3600);
    let mut next = Instant::now();
    while Instant::now() < end && !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let ok = request(addr).is_ok();
        writeln!(out, "{} {}", epoch_micros(), u8::from(ok))?;
        out.flush()?;
        next += REQUEST_EVERY;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            next = now;
        }
    }
    Ok(())
}

fn request(addr: SocketAddr) -> std::io::Result<()> {
    let mut s = TcpStream::connect_timeout(&addr, REQUEST_TIMEOUT)?;
    s.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    let mut reply = [0u8; 12];
    s.read_exact(&mut reply)?;
    if reply.starts_with(b"HTTP/1.") && &reply[9..12] == b"200" {
        Ok(())
    } else {
        Err(std::io::Error::other("not a 200 reply"))
    }
}

/// The client's results as they arrive: (epoch µs, success).
struct Samples {
    child: Child,
    seen: Arc<Mutex<Vec<(u64, bool)>>>,
}

impl Samples {
    fn start(cluster: &Cluster, target: &str) -> anyhow::Result<Samples> {
        let exe = std::env::current_exe()?;
        let mut child = cluster
            .from_outside(exe.to_str().context("benchmark path")?)
            .args(["client", target])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the client")?;
        let stdout = child.stdout.take().context("client stdout")?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut parts = line.split(' ');
                if let (Some(Ok(t)), Some(ok)) = (parts.next().map(str::parse), parts.next()) {
                    sink.lock().unwrap().push((t, ok == "1"));
                }
            }
        });
        Ok(Samples { child, seen })
    }

    fn since(&self, from: u64) -> Vec<(u64, bool)> {
        let seen = self.seen.lock().unwrap();
        seen.iter().copied().filter(|&(t, _)| t >= from).collect()
    }

    /// Waits until requests succeeded for `SETTLED` with no failure.
    fn wait_settled(&self, from: u64, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            let samples = self.since(from);
            let settled_from = match samples.iter().rposition(|&(_, ok)| !ok) {
                Some(i) => samples.get(i + 1).map(|s| s.0),
                None => samples.first().map(|s| s.0),
            };
            if let (Some(start), Some(last)) = (settled_from, samples.last())
                && last.0.saturating_sub(start) >= SETTLED.as_micros() as u64
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("requests through the VIP did not succeed for {SETTLED:?} within {limit:?}")
    }
}

impl Drop for Samples {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one round measured around the signal sent at `signalled` (epoch µs).
#[derive(Debug, Clone)]
struct Interruption {
    /// The longest time between two successful requests that spans the signal.
    longest_gap_ms: f64,
    failed: usize,
}

/// Pure: the interruption in `samples` (sorted by time) around `signalled`.
fn interruption(samples: &[(u64, bool)], signalled: u64) -> Option<Interruption> {
    let before = samples.iter().rposition(|&(t, ok)| ok && t <= signalled)?;
    let mut longest = 0u64;
    let mut last_ok = samples[before].0;
    let mut failed = 0;
    for &(t, ok) in &samples[before + 1..] {
        if ok {
            longest = longest.max(t - last_ok);
            last_ok = t;
        } else {
            failed += 1;
        }
    }
    Some(Interruption {
        longest_gap_ms: longest as f64 / 1000.0,
        failed,
    })
}

struct Replica {
    node: String,
    child: Option<Child>,
    log: PathBuf,
}

fn start_replica(
    cluster: &Cluster,
    a: &Args,
    node: &str,
    config: &Path,
    log: &Path,
) -> anyhow::Result<Child> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let child = cluster
        .on_node(node, a.overcast.to_str().context("overcast-ccm path")?)
        .args([
            format!(
                "--kubeconfig={}",
                cluster.plane().kubeconfig_path().display()
            ),
            "--cloud-provider=local".into(),
            format!("--cloud-config={}", config.display()),
            "--configure-cloud-routes=false".into(),
            "--secure-port=0".into(),
            format!("--leader-elect-lease-duration={}", a.lease_duration),
            format!("--leader-elect-renew-deadline={}", a.renew_deadline),
            format!("--leader-elect-retry-period={}", a.retry_period),
        ])
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("starting overcast-ccm on {node}"))?;
    Ok(child)
}

fn inventory(cluster: &Cluster, vip_lifetime: Option<&str>) -> String {
    let mut out = String::from("instances:\n");
    for name in cluster.node_names() {
        out += &format!(
            "  - name: {name}\n    instanceType: bench.small\n    region: home\n    zone: zone-a\n    \
             addresses: [{{type: InternalIP, address: {}}}]\n",
            cluster.node_ip(name)
        );
    }
    let (first, last) = cluster.free_addresses();
    out += &format!(
        "loadBalancer:\n  interface: eth0\n  pools:\n    - name: default\n      addresses: [{first}-{last}]\n"
    );
    if let Some(lifetime) = vip_lifetime {
        out += &format!("  vipLifetime: {lifetime}\n");
    }
    out
}

const APP: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: echo}
spec:
  replicas: 2
  selector: {matchLabels: {app: echo}}
  template:
    metadata: {labels: {app: echo}}
    spec:
      containers:
        - name: echo
          image: IMAGE
          imagePullPolicy: Never
          readinessProbe: {httpGet: {path: /healthz, port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: echo}
spec:
  type: LoadBalancer
  selector: {app: echo}
  ports: [{name: http, port: 80, targetPort: 8080}]
"#;

/// The node whose `eth0` carries `vip` now, if one does.
fn holder(cluster: &Cluster, vip: &str) -> Option<String> {
    cluster.node_names().iter().find_map(|node| {
        let out = cluster
            .on_node(node, "ip")
            .args(["-o", "addr", "show", "dev", "eth0"])
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout)
            .contains(&format!(" {vip}/"))
            .then(|| node.clone())
    })
}

fn main() -> anyhow::Result<()> {
    let mut argv = std::env::args().skip(1);
    if argv.next().as_deref() == Some("client") {
        return client(&argv.next().context("client <address:port>")?);
    }
    let a = args()?;
    let runtime = tokio::runtime::Runtime::new()?;
    let cluster = runtime.block_on(Cluster::start(2))?;
    let result = run(&runtime, &cluster, &a);
    cluster.stop();
    let report = result?;
    print!("{report}");
    if let Some(out) = &a.out {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(out)?;
        f.write_all(report.as_bytes())?;
    }
    Ok(())
}

fn run(runtime: &tokio::runtime::Runtime, cluster: &Cluster, a: &Args) -> anyhow::Result<String> {
    let client = runtime.block_on(cluster.plane().client())?;
    let config = cluster.dir().join("local.yaml");
    std::fs::write(&config, inventory(cluster, a.vip_lifetime.as_deref()))?;
    let mut replicas = Vec::new();
    for node in cluster.node_names() {
        let log = cluster.dir().join(format!("overcast-ccm-{node}.log"));
        let child = start_replica(cluster, a, node, &config, &log)?;
        replicas.push(Replica {
            node: node.clone(),
            child: Some(child),
            log,
        });
    }
    let result = rounds(runtime, cluster, a, &client, &config, &mut replicas);
    for r in &mut replicas {
        if let Some(mut child) = r.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
    if result.is_err() {
        for r in &replicas {
            eprintln!(
                "--- overcast-ccm on {} ---\n{}",
                r.node,
                std::fs::read_to_string(&r.log).unwrap_or_default()
            );
        }
    }
    result
}

fn rounds(
    runtime: &tokio::runtime::Runtime,
    cluster: &Cluster,
    a: &Args,
    client: &kube::Client,
    config: &Path,
    replicas: &mut [Replica],
) -> anyhow::Result<String> {
    let nodes: Api<Node> = Api::all(client.clone());
    for name in cluster.node_names() {
        runtime.block_on(overcast_testenv::wait_until(
            &format!("{name} initialised"),
            WAIT,
            || async {
                let node = nodes.get(name).await.ok()?;
                (!overcast_testenv::has_uninitialized_taint(&node)).then_some(())
            },
        ))?;
    }
    cluster
        .plane()
        .kubectl_apply(&APP.replace("IMAGE", overcast_testenv::cluster::ECHO_SERVER))?;
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let vip = runtime.block_on(overcast_testenv::load_balancer_ip(&services, "echo", WAIT))?;
    let samples = Samples::start(cluster, &format!("{vip}:80"))?;
    samples.wait_settled(0, WAIT)?;

    let mut results: Vec<(&str, String, Interruption)> = Vec::new();
    for round in 0..a.rounds {
        let (signal, name) = if round % 2 == 0 {
            (libc::SIGKILL, "SIGKILL")
        } else {
            (libc::SIGTERM, "SIGTERM")
        };
        let leader = {
            let deadline = Instant::now() + WAIT;
            loop {
                if let Some(node) = holder(cluster, &vip) {
                    break node;
                }
                if Instant::now() > deadline {
                    bail!("no node carries the VIP {vip}");
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        };
        let replica = replicas
            .iter_mut()
            .find(|r| r.node == leader)
            .context("the leader's replica")?;
        let mut child = replica.child.take().context("the leader is running")?;
        let signalled = epoch_micros();
        // kill(1): libc::kill is unsafe, which the workspace denies.
        let _ = Command::new("kill")
            .args([format!("-{signal}"), child.id().to_string()])
            .status();
        let settled = samples.wait_settled(signalled, ROUND_LIMIT);
        let _ = child.wait();
        settled.with_context(|| format!("round {round} ({name} of the leader on {leader})"))?;
        let measured = interruption(&samples.since(0), signalled)
            .context("no successful request before the signal")?;
        eprintln!(
            "round {round}: {name} to the leader on {leader}: {:.0} ms without a reply, {} requests failed",
            measured.longest_gap_ms, measured.failed
        );
        results.push((name, leader.clone(), measured));
        // The killed replica comes back as the standby of the next round.
        let log = replica.log.clone();
        replica.child = Some(start_replica(cluster, a, &leader, config, &log)?);
        std::thread::sleep(Duration::from_secs(3));
    }
    Ok(report(a, &results))
}

fn report(a: &Args, results: &[(&str, String, Interruption)]) -> String {
    let mut out = format!(
        "Two overcast-ccm replicas (local provider, `interface: eth0`) on two real nodes; \
         --leader-elect-lease-duration={} --leader-elect-renew-deadline={} --leader-elect-retry-period={}, \
         vipLifetime {}; a request every {} ms from outside, each bounded by {} ms.\n\n\
         | round | signal to the leader | longest time without a reply | failed requests |\n|---|---|---|---|\n",
        a.lease_duration,
        a.renew_deadline,
        a.retry_period,
        a.vip_lifetime.as_deref().unwrap_or("default"),
        REQUEST_EVERY.as_millis(),
        REQUEST_TIMEOUT.as_millis(),
    );
    for (i, (signal, node, m)) in results.iter().enumerate() {
        out += &format!(
            "| {i} | {signal} ({node}) | {:.0} ms | {} |\n",
            m.longest_gap_ms, m.failed
        );
    }
    for signal in ["SIGKILL", "SIGTERM"] {
        let mut gaps: Vec<f64> = results
            .iter()
            .filter(|r| r.0 == signal)
            .map(|r| r.2.longest_gap_ms)
            .collect();
        if gaps.is_empty() {
            continue;
        }
        gaps.sort_by(f64::total_cmp);
        out += &format!(
            "\n{signal}: median {:.0} ms, worst {:.0} ms over {} rounds.",
            gaps[gaps.len() / 2],
            gaps[gaps.len() - 1],
            gaps.len()
        );
    }
    out + "\n\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interruption_is_the_longest_gap_between_successes_after_the_signal() {
        let samples = [
            (0, true),
            (10, true),
            (20, true),
            (30, false),
            (40, false),
            (1_020, true),
            (1_030, true),
        ];
        let m = interruption(&samples, 15).unwrap();
        assert_eq!(m.failed, 2);
        assert!((m.longest_gap_ms - 1.0).abs() < 1e-9, "{m:?}");
        assert!(interruption(&samples[3..5], 35).is_none());
    }
}
