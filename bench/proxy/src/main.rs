//! Proxy benchmark: the local provider's built-in L4 load balancer (inside a
//! real overcast-ccm, configured through a real LoadBalancer Service) against
//! HAProxy in TCP mode, in front of the same three backends on loopback.
//!
//! Three workloads, each for a fixed time, one proxy at a time:
//! - `connect`: a new connection per request (connect, 64-byte reply, close);
//! - `keepalive`: requests of 64 bytes on long-lived connections;
//! - `bulk`: large replies on a few connections (throughput in MiB/s).
//!
//! Load generator and backends share the machine with the proxy, equally
//! for both proxies; the result is the ratio from one run. Last, the same
//! clients go straight to one backend ("no proxy"): on these cores, what
//! any proxy's throughput is bounded by.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::{Node, Service, ServicePort, ServiceSpec};
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

const BACKENDS: [&str; 3] = ["127.0.40.1", "127.0.40.2", "127.0.40.3"];
const HAPROXY_FRONTEND: &str = "127.0.41.1:8000";
const SERVICE_PORT: u16 = 8000;
const SMALL: u64 = 64;
const BULK: u64 = 64 << 20;

struct Args {
    overcast: PathBuf,
    haproxy: PathBuf,
    seconds: u64,
    concurrency: usize,
    out: Option<PathBuf>,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        overcast: PathBuf::new(),
        haproxy: PathBuf::from("haproxy"),
        seconds: 10,
        concurrency: 32,
        out: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--overcast" => a.overcast = value()?.into(),
            "--haproxy" => a.haproxy = value()?.into(),
            "--seconds" => a.seconds = value()?.parse().context("--seconds")?,
            "--concurrency" => a.concurrency = value()?.parse().context("--concurrency")?,
            "--out" => a.out = Some(value()?.into()),
            other => bail!("unknown flag {other}"),
        }
    }
    if a.overcast.as_os_str().is_empty() {
        bail!("--overcast <overcast-ccm binary> is required");
    }
    Ok(a)
}

/// A backend: reads "<n>\n", answers n bytes, repeats until the client closes.
async fn backend(addr: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = s.set_nodelay(true);
                let (r, mut w) = s.into_split();
                let mut r = BufReader::new(r);
                let chunk = vec![b'x'; 64 * 1024];
                let mut line = String::new();
                loop {
                    line.clear();
                    match r.read_line(&mut line).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    let Ok(mut n) = line.trim().parse::<u64>() else {
                        return;
                    };
                    while n > 0 {
                        let k = n.min(chunk.len() as u64) as usize;
                        if w.write_all(&chunk[..k]).await.is_err() {
                            return;
                        }
                        n -= k as u64;
                    }
                }
            });
        }
    });
    Ok(())
}

async fn request(s: &mut BufReader<TcpStream>, n: u64, buf: &mut [u8]) -> std::io::Result<()> {
    s.get_mut().write_all(format!("{n}\n").as_bytes()).await?;
    let mut left = n as usize;
    let cap = buf.len();
    while left > 0 {
        let k = s.read(&mut buf[..left.min(cap)]).await?;
        if k == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        left -= k;
    }
    Ok(())
}

async fn connect(addr: SocketAddr) -> std::io::Result<BufReader<TcpStream>> {
    let s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    Ok(BufReader::new(s))
}

#[derive(Debug, Default, Clone)]
struct Outcome {
    ops: u64,
    errors: u64,
    bytes: u64,
    latencies_us: Vec<u64>,
    elapsed: Duration,
    /// The share of the machine's CPU busy during the workload (0 to 1).
    machine_busy: f64,
}

impl Outcome {
    fn rate(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }
    fn mib_per_s(&self) -> f64 {
        self.bytes as f64 / (1024.0 * 1024.0) / self.elapsed.as_secs_f64()
    }
    /// With a fixed number of clients each waiting for its answer, the mean
    /// is clients / throughput: the same for two proxies of equal
    /// throughput, however their p50 and p99 differ.
    fn mean_ms(&self) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        self.latencies_us.iter().sum::<u64>() as f64 / self.latencies_us.len() as f64 / 1000.0
    }
    fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let mut v = self.latencies_us.clone();
        v.sort_unstable();
        let i = ((v.len() as f64 - 1.0) * p).round() as usize;
        v[i] as f64 / 1000.0
    }
}

#[derive(Clone, Copy, Debug)]
enum Workload {
    Connect,
    Keepalive,
    Bulk,
}

async fn drive(
    target: SocketAddr,
    workload: Workload,
    workers: usize,
    duration: Duration,
) -> Outcome {
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (stop, errors) = (Arc::clone(&stop), Arc::clone(&errors));
        tasks.push(tokio::spawn(async move {
            let mut out = Outcome::default();
            let mut buf = vec![0u8; 256 * 1024];
            let mut conn: Option<BufReader<TcpStream>> = None;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let n = match workload {
                    Workload::Bulk => BULK,
                    _ => SMALL,
                };
                let result = async {
                    let mut c = match (workload, conn.take()) {
                        (Workload::Connect, _) | (_, None) => connect(target).await?,
                        (_, Some(c)) => c,
                    };
                    request(&mut c, n, &mut buf).await?;
                    if !matches!(workload, Workload::Connect) {
                        conn = Some(c);
                    }
                    Ok::<_, std::io::Error>(())
                }
                .await;
                match result {
                    Ok(()) => {
                        out.ops += 1;
                        out.bytes += n;
                        out.latencies_us.push(t.elapsed().as_micros() as u64);
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            out
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = Outcome::default();
    for t in tasks {
        let o = t.await.expect("worker");
        total.ops += o.ops;
        total.bytes += o.bytes;
        total.latencies_us.extend(o.latencies_us);
    }
    total.errors = errors.load(Ordering::Relaxed);
    total.elapsed = start.elapsed();
    total
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Fields 14 and 15 of stat(5), counted from "state" (field 3) here.
    (ticks(11) + ticks(12)) / 100.0
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

struct Measured {
    name: &'static str,
    results: Vec<(Workload, Outcome, f64)>,
    rss: f64,
}

/// `pid`: the proxy's process, whose CPU is counted (none: no proxy).
async fn measure(name: &'static str, pid: Option<u32>, target: SocketAddr, a: &Args) -> Measured {
    let duration = Duration::from_secs(a.seconds);
    // Warm-up: connections, health checks, caches.
    drive(target, Workload::Connect, 4, Duration::from_secs(1)).await;
    let mut results = Vec::new();
    for (workload, workers) in [
        (Workload::Connect, a.concurrency),
        (Workload::Keepalive, a.concurrency),
        (Workload::Bulk, 4),
    ] {
        let before = pid.map_or(0.0, cpu_seconds);
        let machine_before = overcast_testenv::MachineCpu::now();
        let mut o = drive(target, workload, workers, duration).await;
        o.machine_busy = overcast_testenv::MachineCpu::now().busy_since(&machine_before);
        let cpu = pid.map_or(0.0, cpu_seconds) - before;
        eprintln!(
            "{name:>9} {workload:?}: {:.0} ops/s, {:.1} MiB/s, p50 {:.3} ms, p99 {:.3} ms, {} errors, proxy CPU {cpu:.2}s",
            o.rate(),
            o.mib_per_s(),
            o.percentile_ms(0.5),
            o.percentile_ms(0.99),
            o.errors
        );
        results.push((workload, o, cpu));
    }
    Measured {
        name,
        results,
        rss: pid.map_or(f64::NAN, rss_mib),
    }
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_for<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    probe: impl FnMut() -> F,
) -> anyhow::Result<T> {
    Ok(overcast_testenv::wait_until(what, Duration::from_secs(60), probe).await?)
}

/// Runs overcast-ccm with the local provider and a Service in front of the
/// backends; returns the process, the VIP and the NodePort.
async fn start_overcast(
    plane: &overcast_testenv::ControlPlane,
    a: &Args,
) -> anyhow::Result<(Killed, SocketAddr, u16)> {
    let client = plane.client().await?;
    let mut inventory = String::from("instances:\n");
    for (i, ip) in BACKENDS.iter().enumerate() {
        inventory +=
            &format!("  - name: node-{i}\n    addresses: [{{type: InternalIP, address: {ip}}}]\n");
    }
    inventory += "loadBalancer:\n  pools: [{name: bench, addresses: [127.0.42.1]}]\n";
    let config = plane.dir().join("local.yaml");
    std::fs::write(&config, inventory)?;
    let log = std::fs::File::create(plane.dir().join("overcast-ccm.log"))?;
    let child = Command::new(&a.overcast)
        .args([
            format!("--kubeconfig={}", plane.kubeconfig_path().display()),
            "--cloud-provider=local".into(),
            format!("--cloud-config={}", config.display()),
            "--configure-cloud-routes=false".into(),
            "--secure-port=0".into(),
        ])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting overcast-ccm")?;
    let ccm = Killed(child);
    let nodes: Api<Node> = Api::all(client.clone());
    for i in 0..BACKENDS.len() {
        let node = overcast_testenv::uninitialized_node(&format!("node-{i}"));
        nodes.create(&PostParams::default(), &node).await?;
    }
    let services: Api<Service> = Api::namespaced(client, "default");
    let svc = services
        .create(
            &PostParams::default(),
            &Service {
                metadata: ObjectMeta {
                    name: Some("bench".into()),
                    ..Default::default()
                },
                spec: Some(ServiceSpec {
                    type_: Some("LoadBalancer".into()),
                    ports: Some(vec![ServicePort {
                        port: SERVICE_PORT.into(),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await?;
    let node_port = svc
        .spec
        .and_then(|s| s.ports?.first()?.node_port)
        .context("no nodePort")? as u16;
    let vip =
        overcast_testenv::load_balancer_ip(&services, "bench", Duration::from_secs(60)).await?;
    let target: SocketAddr = format!("{vip}:{SERVICE_PORT}").parse()?;
    Ok((ccm, target, node_port))
}

fn start_haproxy(a: &Args, dir: &std::path::Path, node_port: u16) -> anyhow::Result<Killed> {
    let mut cfg = format!(
        "global\n  maxconn 8000\n  nbthread 2\n\ndefaults\n  mode tcp\n  timeout connect 2s\n  timeout client 60s\n  timeout server 60s\n\nfrontend bench\n  bind {HAPROXY_FRONTEND}\n  default_backend nodes\n\nbackend nodes\n  balance roundrobin\n"
    );
    for (i, ip) in BACKENDS.iter().enumerate() {
        cfg += &format!("  server node-{i} {ip}:{node_port} check inter 5s fall 2 rise 2\n");
    }
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, cfg)?;
    let log = std::fs::File::create(dir.join("haproxy.log"))?;
    let child = Command::new(&a.haproxy)
        .args(["-db", "-f"])
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {} (apt-get install haproxy)", a.haproxy.display()))?;
    Ok(Killed(child))
}

fn haproxy_version(a: &Args) -> String {
    Command::new(&a.haproxy)
        .arg("-v")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_string))
        .unwrap_or_default()
}

fn report(a: &Args, overcast: &Measured, haproxy: &Measured, direct: &Measured) -> String {
    let mut s = format!(
        "### proxy: {}s per workload, {} connections (bulk: 4)\n\n- HAProxy: {}\n\n| measure | overcast | HAProxy | overcast / HAProxy | no proxy |\n|---|---|---|---|---|\n",
        a.seconds,
        a.concurrency,
        haproxy_version(a)
    );
    let mut row = |what: String, o: f64, h: f64, d: Option<f64>| {
        let ratio = if h == 0.0 {
            "-".to_string()
        } else {
            format!("{:.2}", o / h)
        };
        let d = d.map_or("-".to_string(), |d| format!("{d:.2}"));
        s += &format!("| {what} | {o:.2} | {h:.2} | {ratio} | {d} |\n");
    };
    for (((w, o, ocpu), (_, h, hcpu)), (_, d, _)) in overcast
        .results
        .iter()
        .zip(&haproxy.results)
        .zip(&direct.results)
    {
        let name = format!("{w:?}").to_lowercase();
        match w {
            Workload::Bulk => row(
                format!("{name}: MiB/s"),
                o.mib_per_s(),
                h.mib_per_s(),
                Some(d.mib_per_s()),
            ),
            _ => row(
                format!("{name}: requests/s"),
                o.rate(),
                h.rate(),
                Some(d.rate()),
            ),
        }
        row(
            format!("{name}: latency mean (ms)"),
            o.mean_ms(),
            h.mean_ms(),
            Some(d.mean_ms()),
        );
        row(
            format!("{name}: latency p50 (ms)"),
            o.percentile_ms(0.5),
            h.percentile_ms(0.5),
            Some(d.percentile_ms(0.5)),
        );
        row(
            format!("{name}: latency p99 (ms)"),
            o.percentile_ms(0.99),
            h.percentile_ms(0.99),
            Some(d.percentile_ms(0.99)),
        );
        row(
            format!("{name}: proxy CPU s per 10k requests"),
            ocpu / o.ops.max(1) as f64 * 10_000.0,
            hcpu / h.ops.max(1) as f64 * 10_000.0,
            None,
        );
        row(
            format!("{name}: machine CPU busy (%)"),
            o.machine_busy * 100.0,
            h.machine_busy * 100.0,
            Some(d.machine_busy * 100.0),
        );
        row(
            format!("{name}: errors"),
            o.errors as f64,
            h.errors as f64,
            Some(d.errors as f64),
        );
    }
    row(
        "proxy RSS after the run (MiB)".into(),
        overcast.rss,
        haproxy.rss,
        None,
    );
    let _ = (overcast.name, haproxy.name, direct.name);
    s += "\nThe overcast figures are the whole overcast-ccm process (controllers idle). \
          \"no proxy\": the same clients straight to one backend, what any proxy's figures \
          are bounded by on these cores.\n\n";
    s
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let a = args()?;
    let plane = overcast_testenv::ControlPlane::start().await?;
    let (ccm, overcast_target, node_port) = start_overcast(&plane, &a).await?;
    for ip in BACKENDS {
        backend(format!("{ip}:{node_port}").parse()?).await?;
    }
    wait_for("traffic through the overcast VIP", || async {
        let mut c = connect(overcast_target).await.ok()?;
        request(&mut c, 1, &mut [0u8; 8]).await.ok()
    })
    .await?;
    let overcast = measure("overcast", Some(ccm.0.id()), overcast_target, &a).await;
    drop(ccm);

    let haproxy = start_haproxy(&a, plane.dir(), node_port)?;
    let haproxy_target: SocketAddr = HAPROXY_FRONTEND.parse()?;
    wait_for("traffic through HAProxy", || async {
        let mut c = connect(haproxy_target).await.ok()?;
        request(&mut c, 1, &mut [0u8; 8]).await.ok()
    })
    .await?;
    let measured_haproxy = measure("haproxy", Some(haproxy.0.id()), haproxy_target, &a).await;
    drop(haproxy);
    plane.stop();
    let backend: SocketAddr = format!("{}:{node_port}", BACKENDS[0]).parse()?;
    let direct = measure("no proxy", None, backend, &a).await;

    let text = report(&a, &overcast, &measured_haproxy, &direct);
    print!("{text}");
    if let Some(out) = &a.out {
        use std::io::Write as _;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(out)?
            .write_all(text.as_bytes())?;
    }
    Ok(())
}
