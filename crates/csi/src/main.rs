use clap::Parser;
use overcast_csi::{Config, DEFAULT_DRIVER_NAME};
use std::io::IsTerminal;
use std::path::PathBuf;

/// A CSI driver for node-local volumes (identity, controller and node services).
#[derive(Debug, Parser)]
#[command(name = "overcast-csi", version)]
struct Args {
    /// The socket to serve CSI on: unix:///path or a path.
    #[arg(long, env = "CSI_ENDPOINT", default_value = "unix:///csi/csi.sock")]
    endpoint: String,
    /// This node's name (the Node object's), the volumes' topology value.
    #[arg(long, env = "NODE_NAME")]
    node_id: String,
    /// The CSI driver name, as the CSIDriver object and StorageClasses name it.
    #[arg(long, default_value = DEFAULT_DRIVER_NAME)]
    driver_name: String,
    /// Where volumes and snapshots are kept on this node.
    #[arg(long, default_value = "/var/lib/overcast-csi")]
    state_dir: PathBuf,
    /// The most bytes volumes and snapshots may take together (default: the
    /// free space of the state directory's filesystem).
    #[arg(long)]
    capacity: Option<u64>,
    /// The most volumes this node may have staged at once, 0 for no limit.
    #[arg(long, default_value_t = 0)]
    max_volumes_per_node: i64,
    /// The filesystem a volume gets when its StorageClass names none
    /// (csi.storage.k8s.io/fstype): ext4, ext3, ext2 or xfs.
    #[arg(long, default_value = overcast_csi::plan::DEFAULT_FS_TYPE)]
    default_fs_type: String,
    /// The kubelet's plugin registration directory (e.g.
    /// /var/lib/kubelet/plugins_registry): register the driver there, as
    /// node-driver-registrar would. Unset: no registration.
    #[arg(long)]
    registration_dir: Option<PathBuf>,
    /// The CSI socket's path as the kubelet sees it (default: --endpoint's).
    #[arg(long)]
    kubelet_registration_path: Option<PathBuf>,
    /// Serve /metrics and /healthz over HTTP here: `:PORT` or `HOST:PORT`
    /// (e.g. `:9809`). Unset: not served.
    #[arg(long, value_parser = overcast_csi::parse_http_endpoint)]
    http_endpoint: Option<std::net::SocketAddr>,
    /// The HTTP path of the metrics.
    #[arg(long, default_value = "/metrics", value_parser = absolute_path)]
    metrics_path: String,
}

fn absolute_path(value: &str) -> Result<String, String> {
    if value.starts_with('/') {
        Ok(value.to_string())
    } else {
        Err(format!("--metrics-path {value:?} must start with /"))
    }
}

/// The most CSI calls that run at once; the rest wait their turn. Each is
/// file and host-tool work on one node's disk, so more would not finish
/// sooner, and every blocking thread holds a stack and an allocator arena:
/// with tokio's default of 512, 100 claims at once took the driver from 9 to
/// 24 MiB (make bench-csi).
const CONCURRENT_CALLS: usize = 8;

fn main() -> std::process::ExitCode {
    match tokio::runtime::Builder::new_multi_thread()
        .max_blocking_threads(CONCURRENT_CALLS)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(serve()),
        Err(e) => {
            eprintln!("overcast-csi: starting the runtime: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // No colour codes in a container's log file.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let args = Args::parse();
    let config = Config {
        endpoint: args.endpoint,
        node_id: args.node_id,
        driver_name: args.driver_name,
        state_dir: args.state_dir,
        capacity: args.capacity,
        max_volumes_per_node: args.max_volumes_per_node,
        default_fs_type: args.default_fs_type,
        registration_dir: args.registration_dir,
        kubelet_registration_path: args.kubelet_registration_path,
        http_endpoint: args.http_endpoint,
        metrics_path: args.metrics_path,
    };
    match overcast_csi::run(config).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("overcast-csi: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
