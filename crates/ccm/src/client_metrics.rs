//! The metrics the Go CCM exports that dashboards chart and overcast-ccm
//! had not: client-go's `rest_client_*` (k8s.io/client-go/tools/metrics,
//! registered by component-base's restclient adapter) for every request to
//! the apiserver, and the Prometheus Go client's `process_*` collector, read
//! from /proc/self here.

use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Request, Response};
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Gauge, HistogramOpts, HistogramVec, IntCounterVec, Opts};
use tower::{Layer, Service};

/// client-go's request-latency buckets (component-base
/// metrics/prometheus/restclient: 5 ms to 60 s).
const LATENCY_BUCKETS: [f64; 12] = [
    0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0,
];

static REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    IntCounterVec::new(
        Opts::new(
            "rest_client_requests_total",
            "Number of HTTP requests, partitioned by status code, method, and host.",
        ),
        &["code", "host", "method"],
    )
    .expect("a valid metric")
});

static LATENCY: LazyLock<HistogramVec> = LazyLock::new(|| {
    HistogramVec::new(
        HistogramOpts::new(
            "rest_client_request_duration_seconds",
            "Request latency in seconds. Broken down by verb, and host.",
        )
        .buckets(LATENCY_BUCKETS.to_vec()),
        &["host", "verb"],
    )
    .expect("a valid metric")
});

/// The collectors of this module, for the application's registry.
pub fn collectors() -> Vec<Box<dyn Collector>> {
    vec![
        Box::new(REQUESTS.clone()),
        Box::new(LATENCY.clone()),
        Box::new(ProcessCollector::new()),
    ]
}

/// Counts and times each request of a client to `host` (the apiserver's
/// host:port, as client-go labels it).
#[derive(Debug, Clone)]
pub struct ClientMetricsLayer {
    host: String,
}

impl ClientMetricsLayer {
    pub fn new(cluster_url: &http::Uri) -> Self {
        Self {
            host: cluster_url
                .authority()
                .map(|a| a.as_str().to_string())
                .unwrap_or_default(),
        }
    }
}

impl<S> Layer<S> for ClientMetricsLayer {
    type Service = Measured<S>;
    fn layer(&self, inner: S) -> Measured<S> {
        Measured {
            inner,
            host: self.host.clone(),
        }
    }
}

#[derive(Debug)]
pub struct Measured<S> {
    inner: S,
    host: String,
}

impl<S, B, Q> Service<Request<Q>> for Measured<S>
where
    S: Service<Request<Q>, Response = Response<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Q>) -> Self::Future {
        let method = req.method().as_str().to_string();
        let host = self.host.clone();
        let started = Instant::now();
        let sent = self.inner.call(req);
        Box::pin(async move {
            let answer = sent.await;
            // client-go's "<error>" when no answer came.
            let code = match &answer {
                Ok(r) => r.status().as_u16().to_string(),
                Err(_) => "<error>".to_string(),
            };
            LATENCY
                .with_label_values(&[host.as_str(), method.as_str()])
                .observe(started.elapsed().as_secs_f64());
            REQUESTS
                .with_label_values(&[code.as_str(), host.as_str(), method.as_str()])
                .inc();
            answer
        })
    }
}

/// The Go client's process collector, by the same names:
/// `process_cpu_seconds_total`, `process_resident_memory_bytes`,
/// `process_virtual_memory_bytes`, `process_open_fds`, `process_max_fds`,
/// `process_start_time_seconds`; read from /proc/self at each scrape.
#[derive(Debug)]
pub struct ProcessCollector {
    cpu: Gauge,
    resident: Gauge,
    virtual_memory: Gauge,
    open_fds: Gauge,
    max_fds: Gauge,
    start_time: Gauge,
    descs: Vec<Desc>,
}

impl ProcessCollector {
    pub fn new() -> Self {
        let gauge = |name: &str, help: &str| Gauge::new(name, help).expect("a valid metric");
        let cpu = gauge(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
        );
        let resident = gauge(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
        );
        let virtual_memory = gauge(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
        );
        let open_fds = gauge("process_open_fds", "Number of open file descriptors.");
        let max_fds = gauge(
            "process_max_fds",
            "Maximum number of open file descriptors.",
        );
        let start_time = gauge(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
        );
        let descs = [
            &cpu,
            &resident,
            &virtual_memory,
            &open_fds,
            &max_fds,
            &start_time,
        ]
        .iter()
        .flat_map(|g| g.desc().into_iter().cloned())
        .collect();
        Self {
            cpu,
            resident,
            virtual_memory,
            open_fds,
            max_fds,
            start_time,
            descs,
        }
    }

    fn read(&self) {
        let Some(stat) = std::fs::read_to_string("/proc/self/stat").ok() else {
            return;
        };
        let Some(fields) = stat_fields(&stat) else {
            return;
        };
        // SAFETY: sysconf has no preconditions.
        #[allow(unsafe_code)]
        let (ticks, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK) as f64,
                libc::sysconf(libc::_SC_PAGESIZE) as f64,
            )
        };
        let field = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
        // Fields after the command, numbered as in proc(5) from 3 (state).
        if let (Some(utime), Some(stime)) = (field(14 - 3), field(15 - 3)) {
            self.cpu.set((utime + stime) / ticks);
        }
        if let Some(vsize) = field(23 - 3) {
            self.virtual_memory.set(vsize);
        }
        if let Some(rss) = field(24 - 3) {
            self.resident.set(rss * page);
        }
        if let (Some(start), Some(boot)) = (field(22 - 3), boot_time()) {
            self.start_time.set(boot + start / ticks);
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            self.open_fds.set(dir.count() as f64);
        }
        if let Some(max) = max_open_files() {
            self.max_fds.set(max);
        }
    }
}

impl Default for ProcessCollector {
    fn default() -> Self {
        Self::new()
    }
}

impl Collector for ProcessCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.read();
        [
            &self.cpu,
            &self.resident,
            &self.virtual_memory,
            &self.open_fds,
            &self.max_fds,
            &self.start_time,
        ]
        .iter()
        .flat_map(|g| g.collect())
        .collect()
    }
}

/// /proc/self/stat's fields after `(comm)`, which may itself hold spaces
/// and parentheses: state first.
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    let (_, after) = stat.rsplit_once(')')?;
    Some(after.split_whitespace().collect())
}

fn boot_time() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

fn max_open_files() -> Option<f64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_with_spaces_and_parentheses_does_not_shift_the_fields() {
        let stat = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 4 0 1000 12345678 300";
        let f = stat_fields(stat).unwrap();
        assert_eq!(f[0], "S");
        assert_eq!(f[14 - 3], "250");
        assert_eq!(f[24 - 3], "300");
    }

    #[test]
    fn this_process_is_measured() {
        let c = ProcessCollector::new();
        let families = c.collect();
        let value = |name: &str| {
            families
                .iter()
                .find(|f| f.name() == name)
                .map(|f| f.get_metric()[0].get_gauge().get_value())
                .unwrap()
        };
        assert!(value("process_resident_memory_bytes") > 1e5);
        assert!(value("process_open_fds") >= 3.0);
        assert!(value("process_max_fds") >= value("process_open_fds"));
        assert!(value("process_start_time_seconds") > 1.6e9);
    }
}
