//! The kubelet's plugin registration (what node-driver-registrar does for
//! other drivers): a Registration service on `<dir>/<driver>-reg.sock` in the
//! kubelet's plugins_registry directory. The kubelet's plugin watcher finds
//! the socket, asks GetInfo for the driver's name and CSI socket, then calls
//! NodeGetInfo on that socket and records the driver in the Node's CSINode
//! object (node ID, topology keys) and its topology labels on the Node.

use crate::proto::registration::{
    InfoRequest, PluginInfo, RegistrationStatus, RegistrationStatusResponse,
    registration_server::{Registration, RegistrationServer},
};
use std::path::{Path, PathBuf};
use tonic::{Request, Response, Status};

/// The CSI versions the kubelet is told the driver serves.
const SUPPORTED_VERSIONS: &[&str] = &["1.0.0"];

#[derive(Debug)]
struct Registrar {
    driver_name: String,
    /// The CSI socket's path as the kubelet sees it.
    endpoint: String,
}

#[tonic::async_trait]
impl Registration for Registrar {
    async fn get_info(&self, _: Request<InfoRequest>) -> Result<Response<PluginInfo>, Status> {
        Ok(Response::new(PluginInfo {
            r#type: "CSIPlugin".into(),
            name: self.driver_name.clone(),
            endpoint: self.endpoint.clone(),
            supported_versions: SUPPORTED_VERSIONS.iter().map(|v| v.to_string()).collect(),
        }))
    }

    async fn notify_registration_status(
        &self,
        request: Request<RegistrationStatus>,
    ) -> Result<Response<RegistrationStatusResponse>, Status> {
        let status = request.into_inner();
        if status.plugin_registered {
            tracing::info!(driver = %self.driver_name, endpoint = %self.endpoint, "registered with the kubelet");
        } else {
            tracing::error!(driver = %self.driver_name, error = %status.error, "the kubelet refused the registration");
        }
        Ok(Response::new(RegistrationStatusResponse {}))
    }
}

/// The registration socket for `driver_name` in the kubelet's `dir`.
pub fn socket(dir: &Path, driver_name: &str) -> PathBuf {
    dir.join(format!("{driver_name}-reg.sock"))
}

pub fn service(driver_name: &str, endpoint: &Path) -> RegistrationServer<impl Registration> {
    RegistrationServer::new(Registrar {
        driver_name: driver_name.to_string(),
        endpoint: endpoint.display().to_string(),
    })
}
