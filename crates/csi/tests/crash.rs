//! overcast-csi killed at every step of create, delete, snapshot, restore,
//! expand, stage and unstage (its crash points abort the process as a
//! kill -9 would), then restarted: the retried request succeeds, no volume
//! or snapshot is duplicated or half made, nothing is left in staging/ or
//! deleting/, no filesystem stays frozen, and the data written before the
//! crash is read back. Needs root (loop devices, mounts).

mod common;

use common::{Driver, entries, fs_capability, loop_devices_under, mounts_under};
use overcast_csi::proto::{
    self, CapacityRange, VolumeCapability, controller_client::ControllerClient,
    node_client::NodeClient,
};
use std::{path::Path, time::Duration};
use tonic::transport::Channel;

const MIB: i64 = 1 << 20;

struct Client {
    controller: ControllerClient<Channel>,
    node: NodeClient<Channel>,
    /// What volumes are made, staged and published with.
    capability: VolumeCapability,
}

impl Client {
    async fn new(driver: &Driver) -> Client {
        Client::with_fs(driver, "").await
    }

    /// A client whose volumes get filesystem `fs_type` ("" for the default).
    async fn with_fs(driver: &Driver, fs_type: &str) -> Client {
        let channel = common::connect(&driver.socket()).await;
        Client {
            controller: ControllerClient::new(channel.clone()),
            node: NodeClient::new(channel),
            capability: fs_capability(fs_type),
        }
    }

    async fn create(
        &mut self,
        name: &str,
        size: i64,
        source: Option<proto::VolumeContentSource>,
    ) -> Result<String, tonic::Status> {
        Ok(self.create_volume(name, size, source).await?.volume_id)
    }

    async fn create_volume(
        &mut self,
        name: &str,
        size: i64,
        source: Option<proto::VolumeContentSource>,
    ) -> Result<proto::Volume, tonic::Status> {
        let response = self
            .controller
            .create_volume(proto::CreateVolumeRequest {
                name: name.into(),
                capacity_range: Some(CapacityRange {
                    required_bytes: size,
                    limit_bytes: 0,
                }),
                volume_capabilities: vec![self.capability.clone()],
                volume_content_source: source,
                ..Default::default()
            })
            .await?;
        Ok(response.into_inner().volume.expect("a volume"))
    }

    async fn stage_and_publish(
        &mut self,
        id: &str,
        dir: &Path,
    ) -> Result<std::path::PathBuf, tonic::Status> {
        let staging = dir.join(format!("staging-{id}"));
        let target = dir.join(format!("target-{id}"));
        self.node
            .node_stage_volume(proto::NodeStageVolumeRequest {
                volume_id: id.into(),
                staging_target_path: staging.display().to_string(),
                volume_capability: Some(self.capability.clone()),
                ..Default::default()
            })
            .await?;
        self.node
            .node_publish_volume(proto::NodePublishVolumeRequest {
                volume_id: id.into(),
                staging_target_path: staging.display().to_string(),
                target_path: target.display().to_string(),
                volume_capability: Some(self.capability.clone()),
                ..Default::default()
            })
            .await?;
        Ok(target)
    }

    async fn unpublish_and_unstage(&mut self, id: &str, dir: &Path) -> Result<(), tonic::Status> {
        self.node
            .node_unpublish_volume(proto::NodeUnpublishVolumeRequest {
                volume_id: id.into(),
                target_path: dir.join(format!("target-{id}")).display().to_string(),
            })
            .await?;
        self.node
            .node_unstage_volume(proto::NodeUnstageVolumeRequest {
                volume_id: id.into(),
                staging_target_path: dir.join(format!("staging-{id}")).display().to_string(),
            })
            .await?;
        Ok(())
    }

    async fn volumes(&mut self) -> Vec<(String, i64)> {
        let list = self
            .controller
            .list_volumes(proto::ListVolumesRequest::default())
            .await
            .expect("ListVolumes");
        list.into_inner()
            .entries
            .into_iter()
            .filter_map(|e| e.volume.map(|v| (v.volume_id, v.capacity_bytes)))
            .collect()
    }

    async fn snapshots(&mut self) -> Vec<String> {
        let list = self
            .controller
            .list_snapshots(proto::ListSnapshotsRequest::default())
            .await
            .expect("ListSnapshots");
        list.into_inner()
            .entries
            .into_iter()
            .filter_map(|e| e.snapshot.map(|s| s.snapshot_id))
            .collect()
    }
}

/// Runs `step` on a driver that aborts at `point`, checks it did, restarts
/// the driver without the crash point and returns a client to it.
async fn crash_at<F, Fut>(driver: &mut Driver, point: &str, step: F) -> Client
where
    F: FnOnce(Client) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    driver.restart(&[(overcast_csi::crash::ENV, point)]);
    step(Client::new(driver).await).await;
    let status = driver.wait_exit();
    assert!(
        !status.success(),
        "the driver did not stop at {point}: {status}\n{}",
        driver.log()
    );
    assert!(
        driver
            .log()
            .contains(&format!("crash point {point} reached")),
        "{point} not reached:\n{}",
        driver.log()
    );
    driver.restart(&[]);
    for sub in ["staging", "deleting"] {
        assert_eq!(
            entries(&driver.state(), sub),
            Vec::<String>::new(),
            "after a crash at {point}, a restart left {sub}/"
        );
    }
    Client::new(driver).await
}

/// The size of the filesystem published at `target`, as NodeGetVolumeStats reports it.
async fn fs_bytes(client: &mut Client, id: &str, target: &Path) -> i64 {
    let stats = client
        .node
        .node_get_volume_stats(proto::NodeGetVolumeStatsRequest {
            volume_id: id.into(),
            volume_path: target.display().to_string(),
            ..Default::default()
        })
        .await
        .expect("NodeGetVolumeStats")
        .into_inner();
    stats
        .usage
        .iter()
        .find(|u| u.unit == proto::volume_usage::Unit::Bytes as i32)
        .map(|u| u.total)
        .expect("bytes")
}

/// Whether writing into a mounted filesystem completes (a frozen one blocks).
fn writable(dir: &Path) -> bool {
    let file = dir.join("probe");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(
            std::fs::write(&file, b"probe")
                .and_then(|()| std::fs::remove_file(&file))
                .is_ok(),
        );
    });
    rx.recv_timeout(Duration::from_secs(10)).unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_any_step_of_create_or_delete_leaves_one_volume_or_none() {
    let mut driver = Driver::start(&[]);
    for point in ["commit:filled", "commit:before-rename", "commit:renamed"] {
        let name = format!("pvc-{}", point.replace(':', "-"));
        let mut client = crash_at(&mut driver, point, |mut c| {
            let name = name.clone();
            async move {
                c.create(&name, 32 * MIB, None)
                    .await
                    .expect_err("the driver aborts mid-create");
            }
        })
        .await;
        let id = client
            .create(&name, 32 * MIB, None)
            .await
            .expect("the retried create succeeds");
        let volumes = client.volumes().await;
        assert_eq!(
            volumes.iter().filter(|(v, _)| *v == id).count(),
            1,
            "after {point}: {volumes:?}"
        );
        assert_eq!(
            volumes
                .iter()
                .find(|(v, _)| *v == id)
                .map(|(_, size)| *size),
            Some(32 * MIB)
        );
        client
            .controller
            .delete_volume(proto::DeleteVolumeRequest {
                volume_id: id,
                ..Default::default()
            })
            .await
            .expect("delete");
    }

    let mut client = Client::new(&driver).await;
    let id = client
        .create("pvc-deleted", 32 * MIB, None)
        .await
        .expect("create");
    let mut client = crash_at(&mut driver, "remove:renamed", |mut c| {
        let id = id.clone();
        async move {
            c.controller
                .delete_volume(proto::DeleteVolumeRequest {
                    volume_id: id,
                    ..Default::default()
                })
                .await
                .expect_err("the driver aborts mid-delete");
        }
    })
    .await;
    assert!(
        client.volumes().await.is_empty(),
        "a volume whose delete was interrupted after its rename is gone"
    );
    client
        .controller
        .delete_volume(proto::DeleteVolumeRequest {
            volume_id: id,
            ..Default::default()
        })
        .await
        .expect("the retried delete succeeds");
    assert_eq!(entries(&driver.state(), "volumes"), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_while_staging_snapshotting_or_expanding_loses_no_data() {
    let mut driver = Driver::start(&[]);
    let dir = driver.dir.path().to_path_buf();
    let mut client = Client::new(&driver).await;

    // Killed after attaching, then (a fresh volume) after formatting:
    // staging again mounts the filesystem made before the crash, never a
    // second one over it, and what was written stays.
    for point in ["stage:attached", "stage:formatted"] {
        let id = client
            .create(&format!("pvc-{}", point.replace(':', "-")), 64 * MIB, None)
            .await
            .expect("create");
        let mut c = crash_at(&mut driver, point, |mut c| {
            let (id, dir) = (id.clone(), dir.clone());
            async move {
                c.stage_and_publish(&id, &dir)
                    .await
                    .expect_err("the driver aborts mid-stage");
            }
        })
        .await;
        let target = c
            .stage_and_publish(&id, &dir)
            .await
            .expect("staging again succeeds");
        std::fs::write(target.join("data"), point).unwrap();
        c.unpublish_and_unstage(&id, &dir).await.expect("unstage");
        let target = c
            .stage_and_publish(&id, &dir)
            .await
            .expect("stage once more");
        assert_eq!(std::fs::read_to_string(target.join("data")).unwrap(), point);
        c.unpublish_and_unstage(&id, &dir).await.expect("unstage");
        c.controller
            .delete_volume(proto::DeleteVolumeRequest {
                volume_id: id,
                ..Default::default()
            })
            .await
            .expect("delete");
        client = c;
    }
    let id = client
        .create("pvc-data", 64 * MIB, None)
        .await
        .expect("create");
    let target = client.stage_and_publish(&id, &dir).await.expect("stage");
    std::fs::write(target.join("data"), "before the snapshot").unwrap();

    // Killed while the volume's filesystem is frozen for the copy: the
    // restart thaws it, and the retried snapshot is the only one.
    let mut client = crash_at(&mut driver, "copy:frozen", |mut c| {
        let id = id.clone();
        async move {
            c.controller
                .create_snapshot(proto::CreateSnapshotRequest {
                    source_volume_id: id,
                    name: "snap-1".into(),
                    ..Default::default()
                })
                .await
                .expect_err("the driver aborts mid-snapshot");
        }
    })
    .await;
    assert!(
        writable(&target),
        "the volume's filesystem stayed frozen after the restart"
    );
    let snapshot = client
        .controller
        .create_snapshot(proto::CreateSnapshotRequest {
            source_volume_id: id.clone(),
            name: "snap-1".into(),
            ..Default::default()
        })
        .await
        .expect("the retried snapshot succeeds")
        .into_inner()
        .snapshot
        .expect("a snapshot");
    assert_eq!(client.snapshots().await, vec![snapshot.snapshot_id.clone()]);
    std::fs::write(target.join("data"), "after the snapshot").unwrap();

    // Restored: the data as it was when the snapshot was taken.
    let source = proto::VolumeContentSource {
        r#type: Some(proto::volume_content_source::Type::Snapshot(
            proto::volume_content_source::SnapshotSource {
                snapshot_id: snapshot.snapshot_id.clone(),
            },
        )),
    };
    let restored = client
        .create("pvc-restored", 64 * MIB, Some(source))
        .await
        .expect("restore");
    let restored_target = client
        .stage_and_publish(&restored, &dir)
        .await
        .expect("stage the restored volume");
    assert_eq!(
        std::fs::read_to_string(restored_target.join("data")).unwrap(),
        "before the snapshot"
    );

    // Killed in NodeExpandVolume after the image grew, before the device
    // was told: the image keeps its new size (no second record to lose).
    let target_path = target.display().to_string();
    let mut client = crash_at(&mut driver, "expand:grown", |mut c| {
        let (id, target_path) = (id.clone(), target_path.clone());
        async move {
            c.node
                .node_expand_volume(proto::NodeExpandVolumeRequest {
                    volume_id: id,
                    volume_path: target_path,
                    capacity_range: Some(CapacityRange {
                        required_bytes: 128 * MIB,
                        limit_bytes: 0,
                    }),
                    ..Default::default()
                })
                .await
                .expect_err("the driver aborts mid-expansion");
        }
    })
    .await;
    let volumes = client.volumes().await;
    assert_eq!(
        volumes
            .iter()
            .find(|(v, _)| *v == id)
            .map(|(_, size)| *size),
        Some(128 * MIB),
        "{volumes:?}"
    );
    // ext4 grows unmounted (growing it mounted needs CAP_SYS_RESOURCE, which
    // this machine's root lacks): staging again grows it, data intact.
    client
        .unpublish_and_unstage(&id, &dir)
        .await
        .expect("unstage");
    let target = client
        .stage_and_publish(&id, &dir)
        .await
        .expect("stage the expanded volume");
    assert!(
        fs_bytes(&mut client, &id, &target).await > 100 * MIB,
        "the filesystem did not grow"
    );
    assert_eq!(
        std::fs::read_to_string(target.join("data")).unwrap(),
        "after the snapshot"
    );

    // Killed between unmounting and detaching: unstaging again detaches.
    client
        .unpublish_and_unstage(&restored, &dir)
        .await
        .expect("unstage the restored volume");
    client
        .node
        .node_unpublish_volume(proto::NodeUnpublishVolumeRequest {
            volume_id: id.clone(),
            target_path: target.display().to_string(),
        })
        .await
        .expect("unpublish");
    let mut client = crash_at(&mut driver, "unstage:unmounted", |mut c| {
        let (id, dir) = (id.clone(), dir.clone());
        async move {
            c.node
                .node_unstage_volume(proto::NodeUnstageVolumeRequest {
                    volume_id: id.clone(),
                    staging_target_path: dir.join(format!("staging-{id}")).display().to_string(),
                })
                .await
                .expect_err("the driver aborts mid-unstage");
        }
    })
    .await;
    client
        .node
        .node_unstage_volume(proto::NodeUnstageVolumeRequest {
            volume_id: id.clone(),
            staging_target_path: dir.join(format!("staging-{id}")).display().to_string(),
        })
        .await
        .expect("the retried unstage succeeds");
    for volume in [&id, &restored] {
        client
            .controller
            .delete_volume(proto::DeleteVolumeRequest {
                volume_id: volume.to_string(),
                ..Default::default()
            })
            .await
            .expect("delete");
    }
    client
        .controller
        .delete_snapshot(proto::DeleteSnapshotRequest {
            snapshot_id: snapshot.snapshot_id,
            ..Default::default()
        })
        .await
        .expect("delete snapshot");
    assert!(
        mounts_under(&dir).is_empty(),
        "mounts left: {:?}",
        mounts_under(&dir)
    );
    assert!(
        loop_devices_under(&dir).is_empty(),
        "loop devices left: {:?}",
        loop_devices_under(&dir)
    );
    for sub in ["volumes", "snapshots", "staging", "deleting"] {
        assert_eq!(
            entries(&driver.state(), sub),
            Vec::<String>::new(),
            "{sub} left behind"
        );
    }
}

/// xfs grows mounted: NodeExpandVolume on the published path with the new
/// size, as the kubelet calls it after the external-resizer recorded it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mounted_xfs_volume_grows_online() {
    let driver = Driver::start(&[]);
    let dir = driver.dir.path().to_path_buf();
    let mut client = Client::with_fs(&driver, "xfs").await;
    let volume = client
        .create_volume("pvc-xfs", 64 * MIB, None)
        .await
        .expect("create");
    // xfs cannot be smaller than 300 MiB: the request was grown to it.
    assert_eq!(volume.capacity_bytes, 300 * MIB);
    let id = volume.volume_id;
    let target = client
        .stage_and_publish(&id, &dir)
        .await
        .expect("stage and publish");
    std::fs::write(target.join("data"), "xfs").unwrap();
    let before = fs_bytes(&mut client, &id, &target).await;
    let grown = client
        .node
        .node_expand_volume(proto::NodeExpandVolumeRequest {
            volume_id: id.clone(),
            volume_path: target.display().to_string(),
            capacity_range: Some(CapacityRange {
                required_bytes: 400 * MIB,
                limit_bytes: 0,
            }),
            ..Default::default()
        })
        .await
        .expect("NodeExpandVolume")
        .into_inner();
    assert_eq!(grown.capacity_bytes, 400 * MIB);
    let after = fs_bytes(&mut client, &id, &target).await;
    assert!(
        after > before + 90 * MIB,
        "the filesystem did not grow: {before} -> {after}"
    );
    assert_eq!(std::fs::read_to_string(target.join("data")).unwrap(), "xfs");
    client
        .unpublish_and_unstage(&id, &dir)
        .await
        .expect("unpublish and unstage");
    client
        .controller
        .delete_volume(proto::DeleteVolumeRequest {
            volume_id: id,
            ..Default::default()
        })
        .await
        .expect("delete");
}
