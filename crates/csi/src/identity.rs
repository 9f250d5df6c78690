//! The identity service: name, version, capabilities, readiness.

use crate::{
    proto::{
        GetPluginCapabilitiesRequest, GetPluginCapabilitiesResponse, GetPluginInfoRequest,
        GetPluginInfoResponse, PluginCapability, ProbeRequest, ProbeResponse, plugin_capability,
    },
    server::Driver,
};
use tonic::Status;

impl Driver {
    pub fn get_plugin_info(
        &self,
        _: GetPluginInfoRequest,
    ) -> Result<GetPluginInfoResponse, Status> {
        Ok(GetPluginInfoResponse {
            name: self.config.driver_name.clone(),
            vendor_version: env!("CARGO_PKG_VERSION").to_string(),
            manifest: Default::default(),
        })
    }

    pub fn get_plugin_capabilities(
        &self,
        _: GetPluginCapabilitiesRequest,
    ) -> Result<GetPluginCapabilitiesResponse, Status> {
        use plugin_capability::{Service, Type, VolumeExpansion, service, volume_expansion};
        let service = |t: service::Type| PluginCapability {
            r#type: Some(Type::Service(Service { r#type: t as i32 })),
        };
        Ok(GetPluginCapabilitiesResponse {
            capabilities: vec![
                service(service::Type::ControllerService),
                service(service::Type::VolumeAccessibilityConstraints),
                // Filesystems are grown while mounted (resize2fs, xfs_growfs).
                PluginCapability {
                    r#type: Some(Type::VolumeExpansion(VolumeExpansion {
                        r#type: volume_expansion::Type::Online as i32,
                    })),
                },
            ],
        })
    }

    /// Ready when the state directory can be read: every answer comes from it.
    pub fn probe(&self, _: ProbeRequest) -> Result<ProbeResponse, Status> {
        std::fs::read_dir(self.store.root().join("volumes")).map_err(|e| {
            Status::failed_precondition(format!(
                "state directory {}: {e}",
                self.store.root().display()
            ))
        })?;
        Ok(ProbeResponse { ready: Some(true) })
    }
}
