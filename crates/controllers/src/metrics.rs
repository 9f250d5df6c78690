//! Prometheus metrics with upstream's names, in the process-wide default
//! registry (the app serves it on /metrics).

use std::sync::LazyLock;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts,
    exponential_buckets, register_histogram, register_histogram_vec, register_int_counter,
    register_int_counter_vec, register_int_gauge_vec,
};

fn seconds_buckets() -> Vec<f64> {
    // client-go's workqueue: ExponentialBuckets(10e-9, 10, 10).
    exponential_buckets(10e-9, 10.0, 10).expect("static buckets")
}

macro_rules! lazy {
    ($name:ident: $ty:ty = $init:expr) => {
        pub static $name: LazyLock<$ty> = LazyLock::new(|| $init.expect("metric registers once"));
    };
}

lazy!(WORKQUEUE_DEPTH: IntGaugeVec = register_int_gauge_vec!(
    Opts::new("workqueue_depth", "Current depth of workqueue"), &["name"]));
lazy!(WORKQUEUE_ADDS: IntCounterVec = register_int_counter_vec!(
    Opts::new("workqueue_adds_total", "Total number of adds handled by workqueue"), &["name"]));
lazy!(WORKQUEUE_RETRIES: IntCounterVec = register_int_counter_vec!(
    Opts::new("workqueue_retries_total", "Total number of retries handled by workqueue"), &["name"]));
lazy!(WORKQUEUE_QUEUE_DURATION: HistogramVec = register_histogram_vec!(
    HistogramOpts::new("workqueue_queue_duration_seconds",
        "How long in seconds an item stays in workqueue before being requested.")
        .buckets(seconds_buckets()), &["name"]));
lazy!(WORKQUEUE_WORK_DURATION: HistogramVec = register_histogram_vec!(
    HistogramOpts::new("workqueue_work_duration_seconds",
        "How long in seconds processing an item from workqueue takes.")
        .buckets(seconds_buckets()), &["name"]));
lazy!(WORKQUEUE_UNFINISHED_WORK: prometheus::GaugeVec = prometheus::register_gauge_vec!(
    Opts::new("workqueue_unfinished_work_seconds",
        "How many seconds of work has been done that is in progress and hasn't been observed by work_duration. Large values indicate stuck threads. One can deduce the number of stuck threads by observing the rate at which this increases."),
    &["name"]));
lazy!(WORKQUEUE_LONGEST_RUNNING: prometheus::GaugeVec = prometheus::register_gauge_vec!(
    Opts::new("workqueue_longest_running_processor_seconds",
        "How many seconds has the longest running processor for workqueue been running."),
    &["name"]));

// cloud-node-controller (upstream controllers/node/metrics.go): buckets 1·4^k, 6.
lazy!(NODE_TAINT_REMOVAL_DELAY: Histogram = register_histogram!(
    HistogramOpts::new("node_controller_cloud_provider_taint_removal_delay_seconds",
        "Number of seconds after node creation when NodeController removed the cloud-provider taint of a single node.")
        .buckets(exponential_buckets(1.0, 4.0, 6).expect("static buckets"))));
lazy!(NODE_INITIAL_SYNC_DELAY: Histogram = register_histogram!(
    HistogramOpts::new("node_controller_initial_node_sync_delay_seconds",
        "Number of seconds after node creation when NodeController finished the initial synchronization of a single node.")
        .buckets(exponential_buckets(1.0, 4.0, 6).expect("static buckets"))));

// service-lb-controller (upstream controllers/service/metrics.go).
lazy!(SERVICE_LOADBALANCER_SYNC: IntCounter = register_int_counter!(
    "service_controller_loadbalancer_sync_total",
    "A metric counting the amount of times any load balancer has been configured, as an effect of service/node changes on the cluster"));
lazy!(SERVICE_NODESYNC_ERRORS: IntCounter = register_int_counter!(
    "service_controller_nodesync_error_total",
    "A metric counting the amount of times any load balancer has been configured and errored, as an effect of node changes on the cluster"));
lazy!(SERVICE_UPDATE_HOSTS_LATENCY: Histogram = register_histogram!(
    HistogramOpts::new("service_controller_update_loadbalancer_host_latency_seconds",
        "A metric measuring the latency for updating each load balancer hosts.")
        .buckets(exponential_buckets(1.0, 2.0, 15).expect("static buckets"))));
lazy!(SERVICE_NODESYNC_LATENCY: Histogram = register_histogram!(
    HistogramOpts::new("service_controller_nodesync_latency_seconds",
        "A metric measuring the latency for nodesync which updates loadbalancer hosts on cluster node updates.")
        .buckets(exponential_buckets(1.0, 2.0, 15).expect("static buckets"))));

// node-route-controller.
lazy!(ROUTE_SYNC: IntCounter = register_int_counter!(
    "route_controller_route_sync_total",
    "A metric counting the amount of times routes have been synced with the cloud provider."));

/// Seconds since a Kubernetes timestamp, for the node delay histograms.
pub fn seconds_since(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> f64 {
    let now = k8s_openapi::jiff::Timestamp::now();
    (now.as_millisecond() - t.0.as_millisecond()).max(0) as f64 / 1000.0
}
