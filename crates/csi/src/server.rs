//! The driver's shared state and the gRPC wiring: each RPC runs its
//! synchronous body (controller.rs, node.rs, identity.rs) on a blocking thread,
//! since every step is a file or host operation.

use crate::{
    TOPOLOGY_NODE_KEY, host,
    metrics::{self, Metrics},
    plan::{FILESYSTEMS, Filesystems},
    proto::{
        self, Topology,
        controller_server::{Controller, ControllerServer},
        identity_server::{Identity, IdentityServer},
        node_server::{Node, NodeServer},
    },
    store::{Kind, Store},
};
use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    sync::{Arc, Mutex},
};
use tonic::{Request, Response, Status};

#[derive(Clone, Debug)]
pub struct Config {
    /// unix:///path or a path.
    pub endpoint: String,
    pub node_id: String,
    pub driver_name: String,
    pub state_dir: PathBuf,
    /// The most bytes volumes and snapshots may take together.
    pub capacity: Option<u64>,
    pub max_volumes_per_node: i64,
    /// The filesystem a mount volume gets when its capability names none.
    pub default_fs_type: String,
    /// The kubelet's plugins_registry directory: when set, the driver
    /// registers itself with the kubelet there.
    pub registration_dir: Option<PathBuf>,
    /// The CSI socket's path as the kubelet sees it (default: the endpoint's).
    pub kubelet_registration_path: Option<PathBuf>,
    /// Where /metrics and /healthz are served over HTTP; none when unset.
    pub http_endpoint: Option<std::net::SocketAddr>,
    /// The path of the metrics (`--metrics-path`, upstream's /metrics).
    pub metrics_path: String,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--endpoint {0:?}: only unix sockets are served (unix:///path or a path)")]
    Endpoint(String),
    #[error(
        "--default-fs-type {0:?} cannot be made on this node (available: {1}; each needs its mkfs and grow tools)"
    )]
    DefaultFsType(String, String),
    #[error("--node-id is empty: set it (or NODE_NAME) to this node's name")]
    NodeId,
    #[error("state directory {0}: {1}")]
    State(PathBuf, std::io::Error),
    #[error("socket {0}: {1}")]
    Socket(PathBuf, std::io::Error),
    #[error("--http-endpoint {0}: {1}")]
    HttpEndpoint(std::net::SocketAddr, std::io::Error),
    #[error("serving CSI: {0}")]
    Serve(#[from] tonic::transport::Error),
}

#[derive(Debug)]
pub struct Driver {
    pub config: Config,
    pub store: Store,
    /// The filesystems this node can make and grow, and the default one.
    pub filesystems: Filesystems,
    /// Objects an RPC is working on: a second RPC for one gets ABORTED, as
    /// the spec asks, and the sidecar retries it.
    busy: Mutex<HashSet<String>>,
    /// Held from a capacity check to the allocation it allows, so two
    /// CreateVolumes cannot both be given the last free bytes.
    pub allocating: Mutex<()>,
    pub metrics: Metrics,
}

/// An object an RPC holds; released when it is dropped.
#[derive(Debug)]
pub struct Busy<'a> {
    driver: &'a Driver,
    key: String,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.driver
            .busy
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
    }
}

impl Driver {
    pub fn new(config: Config) -> Result<Driver, Error> {
        if config.node_id.is_empty() {
            return Err(Error::NodeId);
        }
        let available = host::available_filesystems(FILESYSTEMS);
        let Some(&(default, _)) = available.iter().find(|(f, _)| *f == config.default_fs_type)
        else {
            return Err(Error::DefaultFsType(
                config.default_fs_type.clone(),
                available
                    .iter()
                    .map(|(f, _)| *f)
                    .collect::<Vec<_>>()
                    .join(", "),
            ));
        };
        let filesystems = Filesystems { available, default };
        let store = Store::open(&config.state_dir)
            .map_err(|e| Error::State(config.state_dir.clone(), e))?;
        let driver = Driver {
            metrics: Metrics::new(&config.driver_name, &config.node_id),
            filesystems,
            config,
            store,
            busy: Mutex::new(HashSet::new()),
            allocating: Mutex::new(()),
        };
        driver.thaw_leftovers();
        Ok(driver)
    }

    /// A snapshot of a mounted volume freezes its filesystem while copying;
    /// a kill -9 in between would leave it frozen, so a start thaws every
    /// mounted volume (thawing one that is not frozen is refused harmlessly).
    fn thaw_leftovers(&self) {
        let (Ok(devices), Ok(mounts)) = (host::loop_devices(), host::mounts()) else {
            return;
        };
        for volume in self.store.volumes().unwrap_or_default() {
            let image = self.store.image(Kind::Volume, &volume.id);
            if let Some(dev) = host::device_of(&devices, &image)
                && let Some(mount) = mounts.iter().find(|m| m.source == dev)
                && host::thaw(&mount.mount_point).is_ok()
            {
                tracing::warn!(volume = %volume.id, mount = %mount.mount_point.display(), "thawed a filesystem a snapshot left frozen");
            }
        }
    }

    /// Claims `key` for this RPC, or ABORTED if another RPC holds it.
    pub fn claim(&self, key: &str) -> Result<Busy<'_>, Status> {
        let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        if !busy.insert(key.to_string()) {
            return Err(Status::aborted(format!(
                "an operation on {key} is in progress"
            )));
        }
        Ok(Busy {
            driver: self,
            key: key.to_string(),
        })
    }

    /// This node's topology segment.
    pub fn topology(&self) -> Topology {
        Topology {
            segments: HashMap::from([(TOPOLOGY_NODE_KEY.to_string(), self.config.node_id.clone())]),
        }
    }

    /// Whether a topology (a segment map) can be this node: it names this
    /// node under our key, or does not use our key.
    pub fn is_here(&self, topology: &Topology) -> bool {
        topology
            .segments
            .get(TOPOLOGY_NODE_KEY)
            .is_none_or(|node| *node == self.config.node_id)
    }

    /// The bytes a new volume or snapshot may take.
    pub fn free_bytes(&self) -> Result<u64, Status> {
        // What is allocated matters only under --capacity: skip the walk otherwise.
        let allocated = match self.config.capacity {
            Some(_) => self.store.allocated().map_err(internal)?,
            None => 0,
        };
        self.free_bytes_given(allocated)
    }

    /// [`Driver::free_bytes`] for a caller that has read `allocated` already.
    pub fn free_bytes_given(&self, allocated: u64) -> Result<u64, Status> {
        let on_disk = host::usage(self.store.root())
            .map_err(internal)?
            .available_bytes;
        Ok(self.config.capacity.map_or(on_disk, |capacity| {
            on_disk.min(capacity.saturating_sub(allocated))
        }))
    }
}

/// A request's field that must not be empty, or INVALID_ARGUMENT naming it.
pub fn required<'a>(value: &'a str, field: &str) -> Result<&'a str, Status> {
    if value.is_empty() {
        Err(Status::invalid_argument(format!("{field} is required")))
    } else {
        Ok(value)
    }
}

/// An unexpected failure of the node or its files, as INTERNAL.
pub fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

#[derive(Clone, Debug)]
struct Csi(Arc<Driver>);

impl Csi {
    /// Runs `body` for RPC `rpc` of `service` and times it into the metrics.
    async fn blocking<Req, Resp>(
        &self,
        request: Request<Req>,
        (service, rpc): (&str, &str),
        body: fn(&Driver, Req) -> Result<Resp, Status>,
    ) -> Result<Response<Resp>, Status>
    where
        Req: Send + 'static,
        Resp: Send + 'static,
    {
        let started = std::time::Instant::now();
        let driver = self.0.clone();
        let request = request.into_inner();
        let result = tokio::task::spawn_blocking(move || body(&driver, request))
            .await
            .map_err(|e| Status::internal(format!("the request's task failed: {e}")))
            .and_then(|r| r);
        let code = result
            .as_ref()
            .map_or_else(Status::code, |_| tonic::Code::Ok);
        self.0
            .metrics
            .observe(&metrics::method_name(service, rpc), code, started.elapsed());
        result.map(Response::new)
    }
}

/// An impl of a service trait whose RPCs each run a `Driver` method of the
/// same name on a blocking thread; `extra` holds hand-written RPCs.
/// (async_trait must see the methods, so the macro makes the whole impl.)
macro_rules! service {
    ($service:ident { $($method:ident: $req:ident => $resp:ident;)* } $($extra:tt)*) => {
        #[tonic::async_trait]
        impl $service for Csi {
            $(
                async fn $method(&self, request: Request<proto::$req>) -> Result<Response<proto::$resp>, Status> {
                    self.blocking(request, (stringify!($service), stringify!($method)), Driver::$method).await
                }
            )*
            $($extra)*
        }
    };
}

service! {
    Identity {
        get_plugin_info: GetPluginInfoRequest => GetPluginInfoResponse;
        get_plugin_capabilities: GetPluginCapabilitiesRequest => GetPluginCapabilitiesResponse;
        probe: ProbeRequest => ProbeResponse;
    }
}

service! {
    Controller {
        create_volume: CreateVolumeRequest => CreateVolumeResponse;
        delete_volume: DeleteVolumeRequest => DeleteVolumeResponse;
        validate_volume_capabilities: ValidateVolumeCapabilitiesRequest => ValidateVolumeCapabilitiesResponse;
        list_volumes: ListVolumesRequest => ListVolumesResponse;
        get_capacity: GetCapacityRequest => GetCapacityResponse;
        controller_get_capabilities: ControllerGetCapabilitiesRequest => ControllerGetCapabilitiesResponse;
        create_snapshot: CreateSnapshotRequest => CreateSnapshotResponse;
        delete_snapshot: DeleteSnapshotRequest => DeleteSnapshotResponse;
        list_snapshots: ListSnapshotsRequest => ListSnapshotsResponse;
        controller_get_volume: ControllerGetVolumeRequest => ControllerGetVolumeResponse;
    }

    async fn controller_publish_volume(
        &self,
        _: Request<proto::ControllerPublishVolumeRequest>,
    ) -> Result<Response<proto::ControllerPublishVolumeResponse>, Status> {
        Err(Status::unimplemented("node-local volumes are not attached: there is no ControllerPublishVolume"))
    }

    async fn controller_unpublish_volume(
        &self,
        _: Request<proto::ControllerUnpublishVolumeRequest>,
    ) -> Result<Response<proto::ControllerUnpublishVolumeResponse>, Status> {
        Err(Status::unimplemented("node-local volumes are not attached: there is no ControllerUnpublishVolume"))
    }

    async fn controller_expand_volume(
        &self,
        _: Request<proto::ControllerExpandVolumeRequest>,
    ) -> Result<Response<proto::ControllerExpandVolumeResponse>, Status> {
        Err(Status::unimplemented("volumes are grown on their node: NodeExpandVolume with the new capacity_range"))
    }

    async fn controller_modify_volume(
        &self,
        _: Request<proto::ControllerModifyVolumeRequest>,
    ) -> Result<Response<proto::ControllerModifyVolumeResponse>, Status> {
        Err(Status::unimplemented("volumes have no mutable parameters"))
    }
}

service! {
    Node {
        node_stage_volume: NodeStageVolumeRequest => NodeStageVolumeResponse;
        node_unstage_volume: NodeUnstageVolumeRequest => NodeUnstageVolumeResponse;
        node_publish_volume: NodePublishVolumeRequest => NodePublishVolumeResponse;
        node_unpublish_volume: NodeUnpublishVolumeRequest => NodeUnpublishVolumeResponse;
        node_get_volume_stats: NodeGetVolumeStatsRequest => NodeGetVolumeStatsResponse;
        node_expand_volume: NodeExpandVolumeRequest => NodeExpandVolumeResponse;
        node_get_capabilities: NodeGetCapabilitiesRequest => NodeGetCapabilitiesResponse;
        node_get_info: NodeGetInfoRequest => NodeGetInfoResponse;
    }
}

fn socket_path(endpoint: &str) -> Result<PathBuf, Error> {
    let path = endpoint.strip_prefix("unix://").unwrap_or(endpoint);
    if path.is_empty() || path.contains("://") {
        return Err(Error::Endpoint(endpoint.to_string()));
    }
    Ok(PathBuf::from(path))
}

/// Serves the driver until SIGTERM or SIGINT.
pub async fn run(config: Config) -> Result<(), Error> {
    let socket = socket_path(&config.endpoint)?;
    let driver = Arc::new(Driver::new(config)?);
    // Before the CSI socket: a taken port fails the start before anything
    // is served.
    let diagnostics = match driver.config.http_endpoint {
        Some(address) => {
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .map_err(|e| Error::HttpEndpoint(address, e))?;
            tracing::info!(%address, metrics = %driver.config.metrics_path, "serving /metrics and /healthz");
            Some(tokio::spawn(metrics::serve(
                listener,
                driver.clone(),
                driver.config.metrics_path.clone(),
            )))
        }
        None => None,
    };
    let listener = bind(&socket)?;
    tracing::info!(
        socket = %socket.display(),
        node = %driver.config.node_id,
        driver = %driver.config.driver_name,
        state = %driver.config.state_dir.display(),
        filesystems = ?driver.filesystems.available.iter().map(|(f, _)| *f).collect::<Vec<_>>(),
        default_fs_type = driver.filesystems.default,
        "serving CSI"
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let reg_socket = driver
        .config
        .registration_dir
        .as_ref()
        .map(|dir| crate::registration::socket(dir, &driver.config.driver_name));
    let registration = match &reg_socket {
        Some(reg_socket) => {
            let listener = bind(reg_socket)?;
            let endpoint = driver
                .config
                .kubelet_registration_path
                .clone()
                .unwrap_or_else(|| socket.clone());
            let service = crate::registration::service(&driver.config.driver_name, &endpoint);
            tracing::info!(socket = %reg_socket.display(), endpoint = %endpoint.display(), "serving the kubelet's plugin registration");
            let mut stopped = stopped.clone();
            Some(tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(service)
                    .serve_with_incoming_shutdown(
                        accept(listener, crate::authority::rewrite),
                        async move {
                            let _ = stopped.wait_for(|s| *s).await;
                        },
                    ),
            ))
        }
        None => None,
    };
    let csi = Csi(driver);
    let served = tonic::transport::Server::builder()
        .add_service(IdentityServer::new(csi.clone()))
        .add_service(ControllerServer::new(csi.clone()))
        .add_service(NodeServer::new(csi))
        .serve_with_incoming_shutdown(accept(listener, |stream| stream), shutdown())
        .await;
    let _ = stop.send(true);
    if let Some(task) = diagnostics {
        task.abort();
    }
    if let Some(task) = registration {
        task.await
            .map_err(|e| Error::Socket(socket.clone(), std::io::Error::other(e)))??;
    }
    // Gone on a clean stop, as node-driver-registrar removes its socket: the
    // kubelet's plugin watcher sees it go and deregisters the driver, so an
    // uninstalled driver leaves no CSINode entry behind. (After a kill -9 the
    // socket stays, and the next start replaces it.)
    for path in reg_socket.iter().chain([&socket]) {
        if let Err(e) = std::fs::remove_file(path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(socket = %path.display(), error = %e, "removing the socket");
        }
    }
    served?;
    tracing::info!("stopped");
    Ok(())
}

/// Listens on a unix socket, replacing one a killed predecessor left (it
/// would make bind fail).
fn bind(socket: &std::path::Path) -> Result<tokio::net::UnixListener, Error> {
    match std::fs::remove_file(socket) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(Error::Socket(socket.to_path_buf(), e));
        }
        _ => {}
    }
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::Socket(socket.to_path_buf(), e))?;
    }
    tokio::net::UnixListener::bind(socket).map_err(|e| Error::Socket(socket.to_path_buf(), e))
}

/// The connections a listener accepts, each passed through `wrap`.
fn accept<T>(
    listener: tokio::net::UnixListener,
    wrap: fn(tokio::net::UnixStream) -> T,
) -> impl futures::Stream<Item = std::io::Result<T>> {
    futures::stream::unfold(listener, move |listener| async move {
        let conn = listener.accept().await.map(|(stream, _)| wrap(stream));
        Some((conn, listener))
    })
}

async fn shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
