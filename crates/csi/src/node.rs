//! The node service: a volume's image attached to a loop device, formatted
//! once (never over existing data), mounted at the staging path and
//! bind-mounted into each Pod's target path.

use crate::{
    host, plan,
    plan::AccessKind,
    proto::{
        NodeExpandVolumeRequest, NodeExpandVolumeResponse, NodeGetCapabilitiesRequest,
        NodeGetCapabilitiesResponse, NodeGetInfoRequest, NodeGetInfoResponse,
        NodeGetVolumeStatsRequest, NodeGetVolumeStatsResponse, NodePublishVolumeRequest,
        NodePublishVolumeResponse, NodeServiceCapability, NodeStageVolumeRequest,
        NodeStageVolumeResponse, NodeUnpublishVolumeRequest, NodeUnpublishVolumeResponse,
        NodeUnstageVolumeRequest, NodeUnstageVolumeResponse, VolumeCapability, VolumeCondition,
        VolumeUsage,
        node_service_capability::{self, rpc::Type as Rpc},
        volume_capability::{AccessType, access_mode::Mode},
        volume_usage::Unit,
    },
    server::{Driver, internal, required},
    store::Kind,
};
use std::{fs, path::Path};
use tonic::Status;

const CAPABILITIES: &[Rpc] = &[
    Rpc::StageUnstageVolume,
    Rpc::GetVolumeStats,
    Rpc::ExpandVolume,
    Rpc::VolumeCondition,
    Rpc::SingleNodeMultiWriter,
];

fn capability<'a>(
    cap: Option<&'a VolumeCapability>,
    driver: &Driver,
) -> Result<(&'a VolumeCapability, AccessKind), Status> {
    let cap = cap.ok_or_else(|| Status::invalid_argument("volume_capability is required"))?;
    let kind = plan::access_kind(cap, &driver.filesystems).map_err(Status::invalid_argument)?;
    Ok((cap, kind))
}

fn reader_only(cap: &VolumeCapability) -> bool {
    cap.access_mode
        .as_ref()
        .is_some_and(|m| m.mode == Mode::SingleNodeReaderOnly as i32)
}

fn single_writer(cap: &VolumeCapability) -> bool {
    cap.access_mode
        .as_ref()
        .is_some_and(|m| m.mode == Mode::SingleNodeSingleWriter as i32)
}

fn host_err(what: String) -> impl FnOnce(host::HostError) -> Status {
    move |e| Status::internal(format!("{what}: {e}"))
}

impl Driver {
    pub fn node_get_capabilities(
        &self,
        _: NodeGetCapabilitiesRequest,
    ) -> Result<NodeGetCapabilitiesResponse, Status> {
        Ok(NodeGetCapabilitiesResponse {
            capabilities: CAPABILITIES
                .iter()
                .map(|rpc| NodeServiceCapability {
                    r#type: Some(node_service_capability::Type::Rpc(
                        node_service_capability::Rpc {
                            r#type: *rpc as i32,
                        },
                    )),
                })
                .collect(),
        })
    }

    pub fn node_get_info(&self, _: NodeGetInfoRequest) -> Result<NodeGetInfoResponse, Status> {
        Ok(NodeGetInfoResponse {
            node_id: self.config.node_id.clone(),
            max_volumes_per_node: self.config.max_volumes_per_node,
            accessible_topology: Some(self.topology()),
        })
    }

    pub fn node_stage_volume(
        &self,
        req: NodeStageVolumeRequest,
    ) -> Result<NodeStageVolumeResponse, Status> {
        let id = required(&req.volume_id, "volume_id")?;
        let staging = Path::new(required(&req.staging_target_path, "staging_target_path")?);
        let (cap, kind) = capability(req.volume_capability.as_ref(), self)?;
        let meta = self.existing_volume(id)?;
        if meta.block != kind.is_block() {
            let made = if meta.block { "block" } else { "filesystem" };
            return Err(Status::invalid_argument(format!(
                "volume {id} was made for {made} access"
            )));
        }
        let _busy = self.claim(id)?;
        let dev = host::attach(&self.store.image(Kind::Volume, id))
            .map_err(host_err(format!("attaching volume {id}")))?;
        crate::crash::point("stage:attached");
        let AccessKind::Mount { fs_type } = kind else {
            // A block volume is staged once its device exists; publish binds it.
            return Ok(NodeStageVolumeResponse {});
        };
        if let Some(mount) = host::mount_at(staging).map_err(internal)? {
            if mount.source == dev {
                return Ok(NodeStageVolumeResponse {});
            }
            return Err(Status::already_exists(format!(
                "staging path {} already has {} mounted, not volume {id}",
                staging.display(),
                mount.source
            )));
        }
        match host::probe(&dev).map_err(host_err(format!("probing volume {id}")))? {
            None => {
                host::mkfs(&fs_type, &dev)
                    .map_err(host_err(format!("formatting volume {id} as {fs_type}")))?;
                tracing::info!(volume = %id, fs_type, "formatted volume");
                crate::crash::point("stage:formatted");
            }
            Some(found) if found == fs_type => {}
            Some(found) => {
                return Err(Status::failed_precondition(format!(
                    "volume {id} holds {found}, not the {fs_type} asked for: a volume with data is never reformatted"
                )));
            }
        }
        // A volume expanded while it was not staged (or whose NodeExpandVolume
        // was interrupted) is grown now: ext filesystems before mounting,
        // since growing them mounted needs CAP_SYS_RESOURCE.
        let device_size = host::block_device_size(&dev).map_err(internal)?;
        if fs_type.starts_with("ext") && host::ext_fs_size(&dev).map_err(internal)? < device_size {
            host::grow_ext_offline(&dev)
                .map_err(host_err(format!("growing the filesystem of volume {id}")))?;
            tracing::info!(volume = %id, device_size, "grew the filesystem to its device");
        }
        fs::create_dir_all(staging)
            .map_err(|e| internal(format!("making {}: {e}", staging.display())))?;
        let mut options = match &cap.access_type {
            Some(AccessType::Mount(m)) => m.mount_flags.clone(),
            _ => Vec::new(),
        };
        if reader_only(cap) {
            options.push("ro".into());
        }
        if fs_type == "xfs" && !options.iter().any(|o| o == "nouuid") {
            // A restored snapshot or a clone has its source's filesystem
            // UUID, and xfs refuses to mount a second filesystem with a
            // UUID already mounted (the source, still in use).
            options.push("nouuid".into());
        }
        host::mount(&dev, staging, &fs_type, &options).map_err(host_err(format!(
            "mounting volume {id} at {}",
            staging.display()
        )))?;
        if fs_type == "xfs" && !reader_only(cap) {
            // xfs grows only mounted; a no-op when it already fills its device.
            host::grow_fs(&fs_type, &dev, staging)
                .map_err(host_err(format!("growing the filesystem of volume {id}")))?;
        }
        tracing::info!(volume = %id, staging = %staging.display(), "staged volume");
        Ok(NodeStageVolumeResponse {})
    }

    pub fn node_unstage_volume(
        &self,
        req: NodeUnstageVolumeRequest,
    ) -> Result<NodeUnstageVolumeResponse, Status> {
        let id = required(&req.volume_id, "volume_id")?;
        let staging = Path::new(required(&req.staging_target_path, "staging_target_path")?);
        self.existing_volume(id)?;
        let _busy = self.claim(id)?;
        host::unmount(staging).map_err(host_err(format!("unmounting volume {id}")))?;
        crate::crash::point("unstage:unmounted");
        if let Some(dev) =
            host::loop_device(&self.store.image(Kind::Volume, id)).map_err(internal)?
        {
            host::detach(&dev).map_err(host_err(format!("detaching volume {id}")))?;
        }
        tracing::info!(volume = %id, "unstaged volume");
        Ok(NodeUnstageVolumeResponse {})
    }

    pub fn node_publish_volume(
        &self,
        req: NodePublishVolumeRequest,
    ) -> Result<NodePublishVolumeResponse, Status> {
        let id = required(&req.volume_id, "volume_id")?;
        let target = Path::new(required(&req.target_path, "target_path")?);
        let staging = Path::new(required(&req.staging_target_path, "staging_target_path")?);
        let (cap, kind) = capability(req.volume_capability.as_ref(), self)?;
        self.existing_volume(id)?;
        let _busy = self.claim(id)?;
        let read_only = req.readonly || reader_only(cap);
        let not_staged = || {
            Status::failed_precondition(format!(
                "volume {id} is not staged at {}",
                staging.display()
            ))
        };
        let dev = host::loop_device(&self.store.image(Kind::Volume, id))
            .map_err(internal)?
            .ok_or_else(not_staged)?;
        if let Some(mount) = host::mount_at(target).map_err(internal)? {
            // Published before (a retry): the same volume with the same mode is done.
            if mount.read_only == read_only {
                return Ok(NodePublishVolumeResponse {});
            }
            return Err(Status::already_exists(format!(
                "target path {} is already published {}",
                target.display(),
                if mount.read_only {
                    "read-only"
                } else {
                    "read-write"
                }
            )));
        }
        if single_writer(cap) {
            // The target is not published (checked above): any use of the
            // device but the staging mount is another Pod's publication.
            let staging_path = fs::canonicalize(staging).ok();
            let uses = host::uses_of_device(&dev).map_err(internal)?;
            if let Some(other) = uses.iter().find(|p| Some(*p) != staging_path.as_ref()) {
                return Err(Status::failed_precondition(format!(
                    "volume {id} is SINGLE_NODE_SINGLE_WRITER and already published at {}",
                    other.display()
                )));
            }
        }
        let source = if kind.is_block() {
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent)
                    .map_err(|e| internal(format!("making {}: {e}", parent.display())))?;
            }
            fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(target)
                .map_err(|e| internal(format!("making {}: {e}", target.display())))?;
            std::path::PathBuf::from(&dev)
        } else {
            match host::mount_at(staging).map_err(internal)? {
                Some(m) if m.source == dev => {}
                _ => return Err(not_staged()),
            }
            fs::create_dir_all(target)
                .map_err(|e| internal(format!("making {}: {e}", target.display())))?;
            staging.to_path_buf()
        };
        host::bind(&source, target, read_only).map_err(host_err(format!(
            "publishing volume {id} at {}",
            target.display()
        )))?;
        tracing::info!(volume = %id, target = %target.display(), read_only, "published volume");
        Ok(NodePublishVolumeResponse {})
    }

    pub fn node_unpublish_volume(
        &self,
        req: NodeUnpublishVolumeRequest,
    ) -> Result<NodeUnpublishVolumeResponse, Status> {
        let id = required(&req.volume_id, "volume_id")?;
        let target = Path::new(required(&req.target_path, "target_path")?);
        self.existing_volume(id)?;
        let _busy = self.claim(id)?;
        host::unmount(target).map_err(host_err(format!("unpublishing volume {id}")))?;
        let removed = match fs::symlink_metadata(target) {
            Ok(m) if m.is_dir() => fs::remove_dir(target),
            Ok(_) => fs::remove_file(target),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        };
        removed.map_err(|e| internal(format!("removing {}: {e}", target.display())))?;
        tracing::info!(volume = %id, target = %target.display(), "unpublished volume");
        Ok(NodeUnpublishVolumeResponse {})
    }

    pub fn node_get_volume_stats(
        &self,
        req: NodeGetVolumeStatsRequest,
    ) -> Result<NodeGetVolumeStatsResponse, Status> {
        let id = required(&req.volume_id, "volume_id")?;
        let path = Path::new(required(&req.volume_path, "volume_path")?);
        self.existing_volume(id)?;
        if !path.exists() {
            return Err(Status::not_found(format!(
                "volume path {} does not exist",
                path.display()
            )));
        }
        let image = self.store.image(Kind::Volume, id);
        let dev = host::loop_device(&image).map_err(internal)?;
        if host::is_block_device(path) {
            let total = dev
                .as_deref()
                .map(host::block_device_size)
                .transpose()
                .map_err(internal)?
                .unwrap_or(0);
            return Ok(NodeGetVolumeStatsResponse {
                usage: vec![VolumeUsage {
                    available: 0,
                    total: total as i64,
                    used: 0,
                    unit: Unit::Bytes as i32,
                }],
                volume_condition: Some(VolumeCondition {
                    abnormal: dev.is_none(),
                    message: if dev.is_some() {
                        "device attached".into()
                    } else {
                        "volume is not attached".into()
                    },
                }),
            });
        }
        let usage = host::usage(path).map_err(internal)?;
        let mount = host::mount_at(path).map_err(internal)?;
        let condition = match (&mount, &dev) {
            (Some(m), Some(d)) if m.source == *d => VolumeCondition {
                abnormal: false,
                message: "volume is mounted".into(),
            },
            _ => VolumeCondition {
                abnormal: true,
                message: format!("volume {id} is not mounted at {}", path.display()),
            },
        };
        Ok(NodeGetVolumeStatsResponse {
            usage: vec![
                VolumeUsage {
                    available: usage.available_bytes as i64,
                    total: usage.total_bytes as i64,
                    used: usage.used_bytes as i64,
                    unit: Unit::Bytes as i32,
                },
                VolumeUsage {
                    available: usage.free_inodes as i64,
                    total: usage.total_inodes as i64,
                    used: usage.total_inodes.saturating_sub(usage.free_inodes) as i64,
                    unit: Unit::Inodes as i32,
                },
            ],
            volume_condition: Some(condition),
        })
    }

    pub fn node_expand_volume(
        &self,
        req: NodeExpandVolumeRequest,
    ) -> Result<NodeExpandVolumeResponse, Status> {
        let id = required(&req.volume_id, "volume_id")?;
        let path = Path::new(required(&req.volume_path, "volume_path")?);
        let meta = self.existing_volume(id)?;
        if !path.exists() {
            return Err(Status::not_found(format!(
                "volume path {} does not exist",
                path.display()
            )));
        }
        let block = match req.volume_capability.as_ref() {
            Some(cap) => plan::access_kind(cap, &self.filesystems)
                .map_err(Status::invalid_argument)?
                .is_block(),
            None => meta.block,
        };
        let _busy = self.claim(id)?;
        let image = self.store.image(Kind::Volume, id);
        let dev = host::loop_device(&image)
            .map_err(internal)?
            .ok_or_else(|| {
                Status::failed_precondition(format!("volume {id} is not staged on this node"))
            })?;
        // The image grows here, on the volume's node (see controller.rs).
        if let Some(range) = req.capacity_range.as_ref() {
            self.grow_image(id, range)?;
        }
        host::refresh(&dev).map_err(host_err(format!("resizing the device of volume {id}")))?;
        if !block {
            let mount = host::mount_of_device(&dev)
                .map_err(internal)?
                .ok_or_else(|| {
                    Status::failed_precondition(format!("volume {id} is not mounted on this node"))
                })?;
            host::grow_fs(&mount.fs_type, &dev, &mount.mount_point).map_err(|e| {
                let hint = if mount.fs_type.starts_with("ext") && e.0.contains("Permission denied") {
                    " (growing a mounted ext filesystem needs CAP_SYS_RESOURCE: run the node plugin privileged; it is grown at its next staging otherwise)"
                } else {
                    ""
                };
                Status::internal(format!("growing the filesystem of volume {id}: {e}{hint}"))
            })?;
            tracing::info!(volume = %id, "grew the filesystem");
        }
        let size = host::block_device_size(&dev).map_err(internal)?;
        Ok(NodeExpandVolumeResponse {
            capacity_bytes: size as i64,
        })
    }
}
