//! The driver's metrics and its diagnostics HTTP server (`--http-endpoint`,
//! named as the upstream sidecars name theirs): `/metrics` in Prometheus'
//! text format and `/healthz` (the Probe RPC's check, for a liveness probe).
//!
//! Every CSI call is timed into `overcast_csi_operations_seconds`, labelled as
//! csi-lib-utils labels the sidecars' `csi_sidecar_operations_seconds`
//! (`method_name` the full gRPC method, `grpc_status_code` the Go name of the
//! code), so one dashboard reads both. The volume gauges are read from the
//! state directory at each scrape: they are what is on disk, not a count kept
//! in memory.

use crate::server::Driver;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::body::Bytes;
use prometheus::{HistogramOpts, HistogramVec, IntGauge, Opts, Registry, TextEncoder};
use std::{net::SocketAddr, sync::Arc, time::Duration};
use tonic::Code;

/// csi-lib-utils' default buckets for operation latency, in seconds.
const BUCKETS: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 25.0, 50.0, 120.0, 300.0, 600.0,
];

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    operations: HistogramVec,
    volumes: IntGauge,
    snapshots: IntGauge,
    allocated_bytes: IntGauge,
    free_bytes: IntGauge,
}

impl Metrics {
    pub fn new(driver_name: &str, node: &str) -> Metrics {
        let labels = std::collections::HashMap::from([
            ("driver_name".to_string(), driver_name.to_string()),
            ("node".to_string(), node.to_string()),
        ]);
        let registry = Registry::new_custom(None, Some(labels))
            .expect("constant labels are valid label names");
        let operations = HistogramVec::new(
            HistogramOpts::new(
                "overcast_csi_operations_seconds",
                "Duration of the CSI calls the driver served, by method and gRPC status.",
            )
            .buckets(BUCKETS.to_vec()),
            &["method_name", "grpc_status_code"],
        )
        .expect("a valid histogram");
        let gauge = |name: &str, help: &str| IntGauge::with_opts(Opts::new(name, help)).unwrap();
        let metrics = Metrics {
            operations,
            volumes: gauge("overcast_csi_volumes", "Volumes on this node."),
            snapshots: gauge("overcast_csi_snapshots", "Snapshots on this node."),
            allocated_bytes: gauge(
                "overcast_csi_allocated_bytes",
                "Bytes this node's volumes and snapshots take.",
            ),
            free_bytes: gauge(
                "overcast_csi_free_bytes",
                "Bytes a new volume may take here (what GetCapacity answers, before rounding).",
            ),
            registry,
        };
        for collector in [
            Box::new(metrics.operations.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(metrics.volumes.clone()),
            Box::new(metrics.snapshots.clone()),
            Box::new(metrics.allocated_bytes.clone()),
            Box::new(metrics.free_bytes.clone()),
        ] {
            metrics
                .registry
                .register(collector)
                .expect("each metric is registered once in the driver's own registry");
        }
        metrics
    }

    /// Records one served call: `method` as `/csi.v1.Controller/CreateVolume`.
    pub fn observe(&self, method: &str, code: Code, took: Duration) {
        self.operations
            .with_label_values(&[method, go_code_name(code)])
            .observe(took.as_secs_f64());
    }
}

/// The gRPC method of a service's RPC: `("Controller", "create_volume")` is
/// `/csi.v1.Controller/CreateVolume`.
pub fn method_name(service: &str, rpc: &str) -> String {
    let camel: String = rpc
        .split('_')
        .map(|word| {
            let mut chars = word.chars();
            chars
                .next()
                .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect();
    format!("/csi.v1.{service}/{camel}")
}

/// A code as grpc-go's `codes.Code.String()` spells it, the label the
/// sidecars' metrics carry.
fn go_code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

/// `--http-endpoint`: `:PORT` (every address, as upstream's flag) or `HOST:PORT`.
pub fn parse_endpoint(value: &str) -> Result<SocketAddr, String> {
    let full = match value.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => value.to_string(),
    };
    full.parse().map_err(|e| {
        format!("--http-endpoint {value:?}: {e} (expected :PORT or HOST:PORT, e.g. :9809)")
    })
}

/// The text of `/metrics`, with the volume gauges read now.
fn render(driver: &Driver) -> Result<String, String> {
    let metrics = &driver.metrics;
    let volumes = driver.store.volumes().map_err(|e| e.to_string())?;
    let snapshots = driver.store.snapshots().map_err(|e| e.to_string())?;
    metrics.volumes.set(volumes.len() as i64);
    metrics.snapshots.set(snapshots.len() as i64);
    let allocated = driver.store.allocated().map_err(|e| e.to_string())?;
    metrics
        .allocated_bytes
        .set(i64::try_from(allocated).unwrap_or(i64::MAX));
    let free = driver
        .free_bytes_given(allocated)
        .map_err(|s| s.message().to_string())?;
    metrics
        .free_bytes
        .set(i64::try_from(free).unwrap_or(i64::MAX));
    TextEncoder::new()
        .encode_to_string(&metrics.registry.gather())
        .map_err(|e| e.to_string())
}

fn answer(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response")
}

/// Answers on the async thread itself, not the blocking pool: the pool is
/// bounded to the CSI calls' concurrency, and a liveness probe queued behind
/// long snapshot copies would get the driver restarted mid-copy. Both
/// answers are a few directory reads.
fn route(driver: &Driver, path: &str, metrics_path: &str) -> Response<Full<Bytes>> {
    let text = "text/plain; charset=utf-8";
    if path == metrics_path {
        match render(driver) {
            Ok(body) => answer(StatusCode::OK, "text/plain; version=0.0.4", body),
            Err(e) => answer(StatusCode::INTERNAL_SERVER_ERROR, text, format!("{e}\n")),
        }
    } else if path == "/healthz" {
        match driver.probe(Default::default()) {
            Ok(_) => answer(StatusCode::OK, text, "ok\n".into()),
            Err(status) => answer(
                StatusCode::INTERNAL_SERVER_ERROR,
                text,
                format!("{}\n", status.message()),
            ),
        }
    } else {
        answer(StatusCode::NOT_FOUND, text, "not found\n".into())
    }
}

/// Serves `/metrics` (at `metrics_path`) and `/healthz` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, driver: Arc<Driver>, metrics_path: String) {
    let metrics_path: Arc<str> = metrics_path.into();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            // Out of file descriptors, say: wait rather than spin.
            Err(e) => {
                tracing::warn!(error = %e, "accepting a diagnostics connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let driver = driver.clone();
        let metrics_path = metrics_path.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let response = route(&driver, req.uri().path(), &metrics_path);
                    async move { Ok::<_, std::convert::Infallible>(response) }
                });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_names_are_the_grpc_ones() {
        assert_eq!(
            method_name("Controller", "create_volume"),
            "/csi.v1.Controller/CreateVolume"
        );
        assert_eq!(
            method_name("Node", "node_get_volume_stats"),
            "/csi.v1.Node/NodeGetVolumeStats"
        );
        assert_eq!(method_name("Identity", "probe"), "/csi.v1.Identity/Probe");
    }

    #[test]
    fn endpoints_parse_as_upstream_flags_do() {
        assert_eq!(parse_endpoint(":9809").unwrap().to_string(), "0.0.0.0:9809");
        assert_eq!(
            parse_endpoint("127.0.0.1:8080").unwrap().to_string(),
            "127.0.0.1:8080"
        );
        let e = parse_endpoint("9809").unwrap_err();
        assert!(
            e.contains("--http-endpoint \"9809\"") && e.contains(":PORT"),
            "{e}"
        );
    }
}
