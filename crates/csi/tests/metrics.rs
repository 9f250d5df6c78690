//! overcast-csi's diagnostics endpoint (`--http-endpoint`): `/healthz`, and
//! `/metrics` with each CSI call timed by method and gRPC code, and the
//! volumes, snapshots and bytes on the node as the state directory holds
//! them; a taken port fails the start with the flag named.

mod common;

use common::Driver;
use overcast_csi::proto::{self, CapacityRange, controller_client::ControllerClient};
use std::{
    io::{Read, Write},
    net::TcpStream,
    process::Command,
};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// (status code, body) of an HTTP GET.
fn get(port: u16, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The value of metric `name`'s sample that carries every label of `labels`
/// (the driver's constant labels among them).
fn sample(metrics: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, rest) = series.split_once('{')?;
        let has_all = labels
            .iter()
            .chain(&[
                ("driver_name", "local.csi.overcast.dev"),
                ("node", "node-a"),
            ])
            .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
        (metric == name && has_all).then(|| value.parse().ok())?
    })
}

fn create(name: &str, parameters: &[(&str, &str)]) -> proto::CreateVolumeRequest {
    proto::CreateVolumeRequest {
        name: name.into(),
        capacity_range: Some(CapacityRange {
            required_bytes: 16 << 20,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![common::fs_capability("ext4")],
        parameters: parameters
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    }
}

#[tokio::test]
async fn metrics_count_calls_by_method_and_code_and_show_what_is_on_disk() {
    let port = free_port();
    let endpoint = format!("127.0.0.1:{port}");
    let driver = Driver::start_with_args(&["--http-endpoint", &endpoint]);
    assert_eq!(get(port, "/healthz"), (200, "ok\n".into()));
    assert_eq!(get(port, "/nothing").0, 404);

    let mut controller = ControllerClient::new(common::connect(&driver.socket()).await);
    let volume = controller
        .create_volume(create("pv-metrics", &[]))
        .await
        .expect("CreateVolume")
        .into_inner()
        .volume
        .unwrap();
    let refused = controller
        .create_volume(create("pv-refused", &[("fstype", "xfs")]))
        .await
        .expect_err("an unknown parameter is refused");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);

    let (status, metrics) = get(port, "/metrics");
    assert_eq!(status, 200);
    let calls = |metrics: &str, method: &str, code: &str| {
        let method = format!("/csi.v1.Controller/{method}");
        sample(
            metrics,
            "overcast_csi_operations_seconds_count",
            &[("method_name", &method), ("grpc_status_code", code)],
        )
    };
    assert_eq!(
        calls(&metrics, "CreateVolume", "OK"),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        calls(&metrics, "CreateVolume", "InvalidArgument"),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(sample(&metrics, "overcast_csi_volumes", &[]), Some(1.0));
    assert_eq!(sample(&metrics, "overcast_csi_snapshots", &[]), Some(0.0));
    assert_eq!(
        sample(&metrics, "overcast_csi_allocated_bytes", &[]),
        Some(volume.capacity_bytes as f64)
    );
    assert!(sample(&metrics, "overcast_csi_free_bytes", &[]).is_some_and(|b| b > 0.0));

    controller
        .delete_volume(proto::DeleteVolumeRequest {
            volume_id: volume.volume_id,
            ..Default::default()
        })
        .await
        .expect("DeleteVolume");
    let (_, metrics) = get(port, "/metrics");
    assert_eq!(sample(&metrics, "overcast_csi_volumes", &[]), Some(0.0));
    assert_eq!(
        calls(&metrics, "DeleteVolume", "OK"),
        Some(1.0),
        "{metrics}"
    );

    // A second driver on the taken port stops at once, naming the flag.
    let state = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_overcast-csi"))
        .args(["--node-id", "node-b", "--http-endpoint", &endpoint])
        .arg("--endpoint")
        .arg(state.path().join("csi.sock"))
        .arg("--state-dir")
        .arg(state.path().join("state"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("--http-endpoint {endpoint}:")),
        "{stderr}"
    );
    assert!(
        !state.path().join("csi.sock").exists(),
        "nothing was served"
    );
}
