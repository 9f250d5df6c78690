//! Prometheus metrics with upstream's names. They live for the process
//! and count from its start; [`register`] puts them into the registry the
//! application serves on /metrics (none is in prometheus' default
//! registry, so a vendor's binary can register any name there).

use std::sync::LazyLock;

use overcast_cloud_provider::metrics::{MetricsError, register_all};
use prometheus::{
    GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts,
    Registry, exponential_buckets,
};

fn seconds_buckets() -> Vec<f64> {
    // client-go's workqueue: ExponentialBuckets(10e-9, 10, 10).
    exponential_buckets(10e-9, 10.0, 10).expect("static buckets")
}

macro_rules! lazy {
    ($name:ident: $ty:ty = $init:expr) => {
        pub static $name: LazyLock<$ty> =
            LazyLock::new(|| $init.expect("a valid metric definition"));
    };
}

lazy!(WORKQUEUE_DEPTH: IntGaugeVec = IntGaugeVec::new(
    Opts::new("workqueue_depth", "Current depth of workqueue"), &["name"]));
lazy!(WORKQUEUE_ADDS: IntCounterVec = IntCounterVec::new(
    Opts::new("workqueue_adds_total", "Total number of adds handled by workqueue"), &["name"]));
lazy!(WORKQUEUE_RETRIES: IntCounterVec = IntCounterVec::new(
    Opts::new("workqueue_retries_total", "Total number of retries handled by workqueue"), &["name"]));
lazy!(WORKQUEUE_QUEUE_DURATION: HistogramVec = HistogramVec::new(
    HistogramOpts::new("workqueue_queue_duration_seconds",
        "How long in seconds an item stays in workqueue before being requested.")
        .buckets(seconds_buckets()), &["name"]));
lazy!(WORKQUEUE_WORK_DURATION: HistogramVec = HistogramVec::new(
    HistogramOpts::new("workqueue_work_duration_seconds",
        "How long in seconds processing an item from workqueue takes.")
        .buckets(seconds_buckets()), &["name"]));
lazy!(WORKQUEUE_UNFINISHED_WORK: GaugeVec = GaugeVec::new(
    Opts::new("workqueue_unfinished_work_seconds",
        "How many seconds of work has been done that is in progress and hasn't been observed by work_duration. Large values indicate stuck threads. One can deduce the number of stuck threads by observing the rate at which this increases."),
    &["name"]));
lazy!(WORKQUEUE_LONGEST_RUNNING: GaugeVec = GaugeVec::new(
    Opts::new("workqueue_longest_running_processor_seconds",
        "How many seconds has the longest running processor for workqueue been running."),
    &["name"]));

// cloud-node-controller (upstream controllers/node/metrics.go): buckets 1·4^k, 6.
lazy!(NODE_TAINT_REMOVAL_DELAY: Histogram = Histogram::with_opts(
    HistogramOpts::new("node_controller_cloud_provider_taint_removal_delay_seconds",
        "Number of seconds after node creation when NodeController removed the cloud-provider taint of a single node.")
        .buckets(exponential_buckets(1.0, 4.0, 6).expect("static buckets"))));
lazy!(NODE_INITIAL_SYNC_DELAY: Histogram = Histogram::with_opts(
    HistogramOpts::new("node_controller_initial_node_sync_delay_seconds",
        "Number of seconds after node creation when NodeController finished the initial synchronization of a single node.")
        .buckets(exponential_buckets(1.0, 4.0, 6).expect("static buckets"))));

// service-lb-controller (upstream controllers/service/metrics.go).
lazy!(SERVICE_LOADBALANCER_SYNC: IntCounter = IntCounter::new(
    "service_controller_loadbalancer_sync_total",
    "A metric counting the amount of times any load balancer has been configured, as an effect of service/node changes on the cluster"));
lazy!(SERVICE_NODESYNC_ERRORS: IntCounter = IntCounter::new(
    "service_controller_nodesync_error_total",
    "A metric counting the amount of times any load balancer has been configured and errored, as an effect of node changes on the cluster"));
lazy!(SERVICE_UPDATE_HOSTS_LATENCY: Histogram = Histogram::with_opts(
    HistogramOpts::new("service_controller_update_loadbalancer_host_latency_seconds",
        "A metric measuring the latency for updating each load balancer hosts.")
        .buckets(exponential_buckets(1.0, 2.0, 15).expect("static buckets"))));
lazy!(SERVICE_NODESYNC_LATENCY: Histogram = Histogram::with_opts(
    HistogramOpts::new("service_controller_nodesync_latency_seconds",
        "A metric measuring the latency for nodesync which updates loadbalancer hosts on cluster node updates.")
        .buckets(exponential_buckets(1.0, 2.0, 15).expect("static buckets"))));

// node-route-controller.
lazy!(ROUTE_SYNC: IntCounter = IntCounter::new(
    "route_controller_route_sync_total",
    "A metric counting the amount of times routes have been synced with the cloud provider."));

/// Registers every controller metric into `registry` (the application's).
pub fn register(registry: &Registry) -> Result<(), MetricsError> {
    register_all(
        registry,
        vec![
            Box::new(WORKQUEUE_DEPTH.clone()),
            Box::new(WORKQUEUE_ADDS.clone()),
            Box::new(WORKQUEUE_RETRIES.clone()),
            Box::new(WORKQUEUE_QUEUE_DURATION.clone()),
            Box::new(WORKQUEUE_WORK_DURATION.clone()),
            Box::new(WORKQUEUE_UNFINISHED_WORK.clone()),
            Box::new(WORKQUEUE_LONGEST_RUNNING.clone()),
            Box::new(NODE_TAINT_REMOVAL_DELAY.clone()),
            Box::new(NODE_INITIAL_SYNC_DELAY.clone()),
            Box::new(SERVICE_LOADBALANCER_SYNC.clone()),
            Box::new(SERVICE_NODESYNC_ERRORS.clone()),
            Box::new(SERVICE_UPDATE_HOSTS_LATENCY.clone()),
            Box::new(SERVICE_NODESYNC_LATENCY.clone()),
            Box::new(ROUTE_SYNC.clone()),
        ],
    )
}

/// Seconds since a Kubernetes timestamp, for the node delay histograms.
pub fn seconds_since(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> f64 {
    let now = k8s_openapi::jiff::Timestamp::now();
    (now.as_millisecond() - t.0.as_millisecond()).max(0) as f64 / 1000.0
}
