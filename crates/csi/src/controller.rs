//! The controller service: volumes and snapshots made, listed, grown and
//! removed on this node's state directory. Each RPC validates (plan.rs),
//! claims the object, then acts on the store and the host.

use crate::{
    host, plan,
    proto::{
        CapacityRange, ControllerGetCapabilitiesRequest, ControllerGetCapabilitiesResponse,
        ControllerGetVolumeRequest, ControllerGetVolumeResponse, ControllerServiceCapability,
        CreateSnapshotRequest, CreateSnapshotResponse, CreateVolumeRequest, CreateVolumeResponse,
        DeleteSnapshotRequest, DeleteSnapshotResponse, DeleteVolumeRequest, DeleteVolumeResponse,
        GetCapacityRequest, GetCapacityResponse, ListSnapshotsRequest, ListSnapshotsResponse,
        ListVolumesRequest, ListVolumesResponse, Snapshot, TopologyRequirement,
        ValidateVolumeCapabilitiesRequest, ValidateVolumeCapabilitiesResponse, Volume,
        VolumeCondition, VolumeContentSource, controller_get_volume_response,
        controller_service_capability::{self, rpc::Type as Rpc},
        list_snapshots_response, list_volumes_response,
        validate_volume_capabilities_response::Confirmed,
        volume_content_source,
    },
    server::{Driver, internal, required},
    store::{Kind, SnapshotMeta, Source, VolumeMeta},
};
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};
use tonic::Status;

/// What the controller service offers; each one is exercised by csi-sanity.
/// Not EXPAND_VOLUME: a volume is grown by NodeExpandVolume on its node
/// (the external-resizer then only records the new size, its "trivial"
/// resizer), since no controller-side resizer can reach a node-local volume.
const CAPABILITIES: &[Rpc] = &[
    Rpc::CreateDeleteVolume,
    Rpc::ListVolumes,
    Rpc::GetCapacity,
    Rpc::CreateDeleteSnapshot,
    Rpc::ListSnapshots,
    Rpc::CloneVolume,
    Rpc::GetVolume,
    Rpc::VolumeCondition,
    Rpc::SingleNodeMultiWriter,
];

impl Driver {
    pub fn controller_get_capabilities(
        &self,
        _: ControllerGetCapabilitiesRequest,
    ) -> Result<ControllerGetCapabilitiesResponse, Status> {
        Ok(ControllerGetCapabilitiesResponse {
            capabilities: CAPABILITIES
                .iter()
                .map(|rpc| ControllerServiceCapability {
                    r#type: Some(controller_service_capability::Type::Rpc(
                        controller_service_capability::Rpc {
                            r#type: *rpc as i32,
                        },
                    )),
                })
                .collect(),
        })
    }

    /// The volume an ID names, or NOT_FOUND (an ID of another shape is one
    /// this driver never gave out, so it is not found either).
    pub fn existing_volume(&self, id: &str) -> Result<VolumeMeta, Status> {
        self.existing(id, "vol", "volume", |id| self.store.volume(id))
    }

    fn existing_snapshot(&self, id: &str) -> Result<SnapshotMeta, Status> {
        self.existing(id, "snap", "snapshot", |id| self.store.snapshot(id))
    }

    fn existing<T>(
        &self,
        id: &str,
        prefix: &str,
        what: &str,
        read: impl FnOnce(&str) -> std::io::Result<Option<T>>,
    ) -> Result<T, Status> {
        let found = if plan::valid_id(id, prefix) {
            read(id).map_err(internal)?
        } else {
            None
        };
        found.ok_or_else(|| {
            Status::not_found(format!(
                "{what} {id} does not exist on node {}",
                self.config.node_id
            ))
        })
    }

    fn volume_message(&self, meta: &VolumeMeta, size: u64) -> Volume {
        Volume {
            capacity_bytes: size as i64,
            volume_id: meta.id.clone(),
            volume_context: Default::default(),
            content_source: meta.source.as_ref().map(|source| VolumeContentSource {
                r#type: Some(match source {
                    Source::Snapshot(id) => volume_content_source::Type::Snapshot(
                        volume_content_source::SnapshotSource {
                            snapshot_id: id.clone(),
                        },
                    ),
                    Source::Volume(id) => {
                        volume_content_source::Type::Volume(volume_content_source::VolumeSource {
                            volume_id: id.clone(),
                        })
                    }
                }),
            }),
            accessible_topology: vec![self.topology()],
        }
    }

    /// Volumes can be made here only if the request's requisite topology
    /// includes this node (or names none).
    fn check_topology(&self, requirement: Option<&TopologyRequirement>) -> Result<(), Status> {
        let Some(requirement) = requirement else {
            return Ok(());
        };
        if requirement.requisite.is_empty() || requirement.requisite.iter().any(|t| self.is_here(t))
        {
            return Ok(());
        }
        Err(Status::resource_exhausted(format!(
            "volumes are made on node {} only, and the requisite topology excludes it",
            self.config.node_id
        )))
    }

    /// Where an image's contents come from, with its size; a source that
    /// is not here is NOT_FOUND.
    fn content_source(
        &self,
        source: Option<&VolumeContentSource>,
    ) -> Result<Option<(Source, u64)>, Status> {
        let Some(kind) = source.and_then(|s| s.r#type.as_ref()) else {
            return Ok(None);
        };
        Ok(Some(match kind {
            volume_content_source::Type::Snapshot(s) => {
                let snap = self.existing_snapshot(&s.snapshot_id)?;
                (
                    Source::Snapshot(snap.id.clone()),
                    self.store
                        .size(Kind::Snapshot, &snap.id)
                        .map_err(internal)?,
                )
            }
            volume_content_source::Type::Volume(v) => {
                let vol = self.existing_volume(&v.volume_id)?;
                (
                    Source::Volume(vol.id.clone()),
                    self.store.size(Kind::Volume, &vol.id).map_err(internal)?,
                )
            }
        }))
    }

    fn ensure_free(&self, bytes: u64, what: &str) -> Result<(), Status> {
        let free = self.free_bytes()?;
        if bytes > free {
            return Err(Status::resource_exhausted(format!(
                "node {} has {free} bytes free for volumes, {what} needs {bytes}",
                self.config.node_id
            )));
        }
        Ok(())
    }

    pub fn create_volume(&self, req: CreateVolumeRequest) -> Result<CreateVolumeResponse, Status> {
        let name = required(&req.name, "name")?;
        let kinds = plan::access_kinds(&req.volume_capabilities, &self.filesystems)
            .map_err(Status::invalid_argument)?;
        let params = plan::parameters(&req.parameters).map_err(Status::invalid_argument)?;
        self.check_topology(req.accessibility_requirements.as_ref())?;
        let id = plan::volume_id(name);
        let _busy = self.claim(&id)?;
        let range = req.capacity_range.as_ref();
        if let Some(existing) = self.store.volume(&id).map_err(internal)? {
            let size = self.store.size(Kind::Volume, &id).map_err(internal)?;
            if existing.name != name {
                return Err(Status::internal(format!(
                    "volume ID {id} of {name:?} is taken by {:?}",
                    existing.name
                )));
            }
            if !plan::size_fits(size, range) {
                return Err(Status::already_exists(format!(
                    "volume {name:?} exists with {size} bytes, outside the requested capacity range"
                )));
            }
            if existing.source != requested_source(req.volume_content_source.as_ref()) {
                return Err(Status::already_exists(format!(
                    "volume {name:?} exists with another content source"
                )));
            }
            return Ok(CreateVolumeResponse {
                volume: Some(self.volume_message(&existing, size)),
            });
        }
        let source = self.content_source(req.volume_content_source.as_ref())?;
        let source_size = source.as_ref().map_or(0, |(_, size)| *size);
        let size = plan::allocation_size(
            range,
            plan::minimum_size(&kinds, &self.filesystems).max(source_size),
        )?;
        let meta = VolumeMeta {
            name: name.to_string(),
            id: id.clone(),
            block: kinds.iter().any(plan::AccessKind::is_block),
            source: source.map(|(s, _)| s),
            owner: params.owner,
        };
        let _allocating = self.allocating.lock().unwrap_or_else(|p| p.into_inner());
        self.ensure_free(size, &format!("volume {name:?}"))?;
        let from = match &meta.source {
            Some(Source::Snapshot(sid)) => Some(self.store.image(Kind::Snapshot, sid)),
            Some(Source::Volume(vid)) => Some(self.store.image(Kind::Volume, vid)),
            None => None,
        };
        self.store
            .commit(Kind::Volume, &id, &meta, |image| {
                if let Some(from) = &from {
                    copy_consistent(from, image).map_err(std::io::Error::other)?;
                }
                host::preallocate(image, size).map_err(std::io::Error::other)
            })
            .map_err(|e| internal(format!("making volume {name:?} ({id}): {e}")))?;
        tracing::info!(volume = %id, name, size, "created volume");
        Ok(CreateVolumeResponse {
            volume: Some(self.volume_message(&meta, size)),
        })
    }

    pub fn delete_volume(&self, req: DeleteVolumeRequest) -> Result<DeleteVolumeResponse, Status> {
        let id = required(&req.volume_id, "volume_id")?;
        if !plan::valid_id(id, "vol") {
            return Ok(DeleteVolumeResponse {});
        }
        let _busy = self.claim(id)?;
        if self.store.volume(id).map_err(internal)?.is_none() {
            return Ok(DeleteVolumeResponse {});
        }
        if let Some(dev) =
            host::loop_device(&self.store.image(Kind::Volume, id)).map_err(internal)?
        {
            return Err(Status::failed_precondition(format!(
                "volume {id} is staged on node {} ({dev}): unstage it before deleting it",
                self.config.node_id
            )));
        }
        self.store
            .remove(Kind::Volume, id)
            .map_err(|e| internal(format!("deleting volume {id}: {e}")))?;
        tracing::info!(volume = %id, "deleted volume");
        Ok(DeleteVolumeResponse {})
    }

    pub fn validate_volume_capabilities(
        &self,
        req: ValidateVolumeCapabilitiesRequest,
    ) -> Result<ValidateVolumeCapabilitiesResponse, Status> {
        let id = required(&req.volume_id, "volume_id")?;
        if req.volume_capabilities.is_empty() {
            return Err(Status::invalid_argument("volume_capabilities is required"));
        }
        let meta = self.existing_volume(id)?;
        let verdict = plan::access_kinds(&req.volume_capabilities, &self.filesystems)
            .and_then(|kinds| {
                if kinds.iter().any(|k| k.is_block() != meta.block) {
                    let made = if meta.block { "block" } else { "filesystem" };
                    return Err(format!("volume {id} was made for {made} access"));
                }
                Ok(())
            })
            .and_then(|()| plan::parameters(&req.parameters).map(drop));
        Ok(match verdict {
            Ok(()) => ValidateVolumeCapabilitiesResponse {
                confirmed: Some(Confirmed {
                    volume_context: req.volume_context,
                    volume_capabilities: req.volume_capabilities,
                    parameters: req.parameters,
                    mutable_parameters: Default::default(),
                }),
                message: String::new(),
            },
            Err(message) => ValidateVolumeCapabilitiesResponse {
                confirmed: None,
                message,
            },
        })
    }

    /// A volume's condition as the node sees it: abnormal when its image is gone.
    fn condition(&self, id: &str) -> VolumeCondition {
        match std::fs::metadata(self.store.image(Kind::Volume, id)) {
            Ok(_) => VolumeCondition {
                abnormal: false,
                message: "volume image is present".into(),
            },
            Err(e) => VolumeCondition {
                abnormal: true,
                message: format!("volume image: {e}"),
            },
        }
    }

    /// This node, if the volume is attached here (`devices`: [`host::loop_devices`]).
    fn published_nodes(&self, id: &str, devices: &HashMap<PathBuf, String>) -> Vec<String> {
        match host::device_of(devices, &self.store.image(Kind::Volume, id)) {
            Some(_) => vec![self.config.node_id.clone()],
            None => Vec::new(),
        }
    }

    pub fn list_volumes(&self, req: ListVolumesRequest) -> Result<ListVolumesResponse, Status> {
        let volumes = self.store.volumes().map_err(internal)?;
        let ids: Vec<String> = volumes.iter().map(|v| v.id.clone()).collect();
        let (page, next_token) = plan::page(&ids, &req.starting_token, req.max_entries)?;
        let devices = host::loop_devices().map_err(internal)?;
        let mut entries = Vec::with_capacity(page.len());
        for meta in volumes.iter().filter(|v| page.contains(&v.id)) {
            let size = self.store.size(Kind::Volume, &meta.id).map_err(internal)?;
            entries.push(list_volumes_response::Entry {
                volume: Some(self.volume_message(meta, size)),
                status: Some(list_volumes_response::VolumeStatus {
                    published_node_ids: self.published_nodes(&meta.id, &devices),
                    volume_condition: Some(self.condition(&meta.id)),
                }),
            });
        }
        Ok(ListVolumesResponse {
            entries,
            next_token,
        })
    }

    pub fn controller_get_volume(
        &self,
        req: ControllerGetVolumeRequest,
    ) -> Result<ControllerGetVolumeResponse, Status> {
        let id = required(&req.volume_id, "volume_id")?;
        let meta = self.existing_volume(id)?;
        let size = self.store.size(Kind::Volume, id).map_err(internal)?;
        Ok(ControllerGetVolumeResponse {
            volume: Some(self.volume_message(&meta, size)),
            status: Some(controller_get_volume_response::VolumeStatus {
                published_node_ids: self
                    .published_nodes(id, &host::loop_devices().map_err(internal)?),
                volume_condition: Some(self.condition(id)),
            }),
        })
    }

    pub fn get_capacity(&self, req: GetCapacityRequest) -> Result<GetCapacityResponse, Status> {
        // A StorageClass that CreateVolume will refuse still gets the node's
        // capacity: the scheduler then places its Pods, and the refusal
        // reaches the claim as a ProvisioningFailed Event naming the
        // parameter. Refused here, the class would get no CSIStorageCapacity
        // and its Pods only "did not have enough free storage".
        if let Err(e) = plan::parameters(&req.parameters) {
            tracing::warn!(error = %e, "answering GetCapacity for parameters CreateVolume refuses");
        }
        let serves = req
            .accessible_topology
            .as_ref()
            .is_none_or(|t| self.is_here(t))
            && (req.volume_capabilities.is_empty()
                || plan::access_kinds(&req.volume_capabilities, &self.filesystems).is_ok());
        // Capabilities this node cannot serve, or another node: no capacity.
        let free = if serves { self.free_bytes()? } else { 0 };
        let usable = free / plan::MIB * plan::MIB;
        Ok(GetCapacityResponse {
            available_capacity: usable as i64,
            maximum_volume_size: Some(usable as i64),
            minimum_volume_size: Some(plan::MIB as i64),
        })
    }

    /// Grows a volume's image to `wanted` bytes (whole MiB), if it is
    /// smaller, with the space checked as for a new volume, and tells its
    /// loop device; the volume's size afterwards. The caller holds the volume.
    pub fn grow_image(&self, id: &str, range: &CapacityRange) -> Result<u64, Status> {
        let current = self.store.size(Kind::Volume, id).map_err(internal)?;
        let wanted = plan::allocation_size(Some(range), plan::MIB)?;
        if wanted <= current {
            return Ok(current);
        }
        let _allocating = self.allocating.lock().unwrap_or_else(|p| p.into_inner());
        self.ensure_free(wanted - current, &format!("growing volume {id}"))?;
        let image = self.store.image(Kind::Volume, id);
        host::preallocate(&image, wanted)
            .map_err(|e| internal(format!("growing volume {id}: {e}")))?;
        crate::crash::point("expand:grown");
        if let Some(dev) = host::loop_device(&image).map_err(internal)? {
            host::refresh(&dev).map_err(internal)?;
        }
        tracing::info!(volume = %id, from = current, to = wanted, "grew the volume's image");
        Ok(wanted)
    }

    fn snapshot_message(&self, meta: &SnapshotMeta) -> Snapshot {
        Snapshot {
            size_bytes: meta.size_bytes as i64,
            snapshot_id: meta.id.clone(),
            source_volume_id: meta.source_volume_id.clone(),
            creation_time: Some(prost_types::Timestamp {
                seconds: meta.created_seconds,
                nanos: meta.created_nanos,
            }),
            ready_to_use: true,
            group_snapshot_id: String::new(),
        }
    }

    pub fn create_snapshot(
        &self,
        req: CreateSnapshotRequest,
    ) -> Result<CreateSnapshotResponse, Status> {
        let name = required(&req.name, "name")?;
        let source = required(&req.source_volume_id, "source_volume_id")?;
        if let Some(key) = req.parameters.keys().min() {
            return Err(Status::invalid_argument(format!(
                "VolumeSnapshotClass parameter {key:?} is not supported (snapshots take no parameters)"
            )));
        }
        let id = plan::snapshot_id(name);
        let _busy = self.claim(&id)?;
        if let Some(existing) = self.store.snapshot(&id).map_err(internal)? {
            if existing.source_volume_id != source {
                return Err(Status::already_exists(format!(
                    "snapshot {name:?} exists, of volume {} rather than {source}",
                    existing.source_volume_id
                )));
            }
            return Ok(CreateSnapshotResponse {
                snapshot: Some(self.snapshot_message(&existing)),
            });
        }
        let volume = self.existing_volume(source)?;
        let size = self
            .store
            .size(Kind::Volume, &volume.id)
            .map_err(internal)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let meta = SnapshotMeta {
            name: name.to_string(),
            id: id.clone(),
            source_volume_id: volume.id.clone(),
            size_bytes: size,
            created_seconds: now.as_secs() as i64,
            created_nanos: now.subsec_nanos() as i32,
        };
        let from = self.store.image(Kind::Volume, &volume.id);
        let _allocating = self.allocating.lock().unwrap_or_else(|p| p.into_inner());
        self.ensure_free(size, &format!("snapshot {name:?}"))?;
        self.store
            .commit(Kind::Snapshot, &id, &meta, |image| {
                copy_consistent(&from, image).map_err(std::io::Error::other)
            })
            .map_err(|e| {
                internal(format!(
                    "making snapshot {name:?} ({id}) of {}: {e}",
                    volume.id
                ))
            })?;
        tracing::info!(snapshot = %id, volume = %volume.id, size, "created snapshot");
        Ok(CreateSnapshotResponse {
            snapshot: Some(self.snapshot_message(&meta)),
        })
    }

    pub fn delete_snapshot(
        &self,
        req: DeleteSnapshotRequest,
    ) -> Result<DeleteSnapshotResponse, Status> {
        let id = required(&req.snapshot_id, "snapshot_id")?;
        if !plan::valid_id(id, "snap") {
            return Ok(DeleteSnapshotResponse {});
        }
        let _busy = self.claim(id)?;
        self.store
            .remove(Kind::Snapshot, id)
            .map_err(|e| internal(format!("deleting snapshot {id}: {e}")))?;
        Ok(DeleteSnapshotResponse {})
    }

    pub fn list_snapshots(
        &self,
        req: ListSnapshotsRequest,
    ) -> Result<ListSnapshotsResponse, Status> {
        let snapshots: Vec<SnapshotMeta> = self
            .store
            .snapshots()
            .map_err(internal)?
            .into_iter()
            .filter(|s| req.snapshot_id.is_empty() || s.id == req.snapshot_id)
            .filter(|s| {
                req.source_volume_id.is_empty() || s.source_volume_id == req.source_volume_id
            })
            .collect();
        let ids: Vec<String> = snapshots.iter().map(|s| s.id.clone()).collect();
        let (page, next_token) = plan::page(&ids, &req.starting_token, req.max_entries)?;
        let entries = snapshots
            .iter()
            .filter(|s| page.contains(&s.id))
            .map(|s| list_snapshots_response::Entry {
                snapshot: Some(self.snapshot_message(s)),
            })
            .collect();
        Ok(ListSnapshotsResponse {
            entries,
            next_token,
        })
    }
}

/// The source a request names, whether or not it exists.
fn requested_source(source: Option<&VolumeContentSource>) -> Option<Source> {
    Some(match source?.r#type.as_ref()? {
        volume_content_source::Type::Snapshot(s) => Source::Snapshot(s.snapshot_id.clone()),
        volume_content_source::Type::Volume(v) => Source::Volume(v.volume_id.clone()),
    })
}

/// Copies a volume's image; if the volume is mounted on this node its
/// filesystem is frozen meanwhile, so the copy is what a crash at that
/// moment would have left (a Pod's writes wait, they are not lost).
fn copy_consistent(from: &Path, to: &Path) -> Result<(), host::HostError> {
    let mount = match host::loop_device(from)? {
        Some(dev) => host::mount_of_device(&dev)?,
        None => None,
    };
    if let Some(mount) = &mount {
        host::freeze(&mount.mount_point)?;
    }
    crate::crash::point("copy:frozen");
    let copied = host::sparse_copy(from, to);
    if let Some(mount) = &mount {
        host::thaw(&mount.mount_point)?;
    }
    copied
}
