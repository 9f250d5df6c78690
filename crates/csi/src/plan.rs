//! The driver's decisions, as pure functions: names to IDs, sizes, which
//! capabilities a volume can serve, StorageClass parameters, list pages.
//! The services call these and then act; nothing here touches the host.

use crate::proto::{
    CapacityRange, VolumeCapability,
    volume_capability::{AccessType, access_mode::Mode},
};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use tonic::Status;

pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;
/// The size of a volume whose request names none.
pub const DEFAULT_VOLUME_SIZE: u64 = GIB;
/// The filesystem a mount volume gets when its capability names none.
pub const DEFAULT_FS_TYPE: &str = "ext4";
/// The filesystems the driver formats, each with the smallest volume its
/// mkfs accepts (xfsprogs refuses filesystems under 300 MiB since 5.19).
pub const FILESYSTEMS: &[(&str, u64)] = &[
    ("ext4", MIB),
    ("ext3", MIB),
    ("ext2", MIB),
    ("xfs", 300 * MIB),
];

/// The parameters external-provisioner adds with --extra-create-metadata;
/// kept in the volume's metadata so a volume on disk names its claim.
pub const PVC_NAME: &str = "csi.storage.k8s.io/pvc/name";
pub const PVC_NAMESPACE: &str = "csi.storage.k8s.io/pvc/namespace";
pub const PV_NAME: &str = "csi.storage.k8s.io/pv/name";
/// The prefix Kubernetes reserves for the StorageClass parameters it
/// interprets itself (csi.storage.k8s.io/fstype, .../provisioner-secret-name).
pub const K8S_RESERVED_PREFIX: &str = "csi.storage.k8s.io/";

/// A volume's ID, derived from its name so that a retried CreateVolume (after
/// a timeout or a crash of either side) can only ever find the same volume.
pub fn volume_id(name: &str) -> String {
    format!("vol-{}", short_hash(name))
}

/// A snapshot's ID, derived from its name as [`volume_id`] is.
pub fn snapshot_id(name: &str) -> String {
    format!("snap-{}", short_hash(name))
}

fn short_hash(name: &str) -> String {
    let digest = Sha256::digest(name.as_bytes());
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `id` has the shape of one of ours: IDs end up in paths, so
/// anything else is refused before it reaches the filesystem.
pub fn valid_id(id: &str, prefix: &str) -> bool {
    id.strip_prefix(prefix)
        .and_then(|h| h.strip_prefix('-'))
        .is_some_and(|h| {
            h.len() == 32
                && h.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        })
}

/// What a volume holds, as its capabilities ask for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccessKind {
    Block,
    /// A filesystem of this type (the capability's, else the default).
    Mount {
        fs_type: String,
    },
}

impl AccessKind {
    pub fn is_block(&self) -> bool {
        matches!(self, AccessKind::Block)
    }
}

/// The access mode's name as the spec spells it, for errors.
fn mode_name(mode: i32) -> String {
    Mode::try_from(mode).map_or_else(
        |_| format!("access mode {mode}"),
        |m| m.as_str_name().to_string(),
    )
}

/// The filesystems a driver can make, with the smallest size of each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filesystems {
    /// Name and smallest size of each filesystem the driver can make.
    pub available: Vec<(&'static str, u64)>,
    /// What a mount volume whose capability names none gets.
    pub default: &'static str,
}

impl Filesystems {
    /// Every filesystem of [`FILESYSTEMS`], ext4 by default (for tests).
    pub fn all() -> Filesystems {
        Filesystems {
            available: FILESYSTEMS.to_vec(),
            default: DEFAULT_FS_TYPE,
        }
    }
}

/// One capability checked: node-local volumes serve the single-node modes
/// only, and mount volumes one of `filesystems` (those of [`FILESYSTEMS`]
/// this node has the tools for).
pub fn access_kind(
    cap: &VolumeCapability,
    filesystems: &Filesystems,
) -> Result<AccessKind, String> {
    let mode = cap
        .access_mode
        .as_ref()
        .ok_or("a volume capability has no access_mode")?
        .mode;
    match Mode::try_from(mode) {
        Ok(
            Mode::SingleNodeWriter
            | Mode::SingleNodeReaderOnly
            | Mode::SingleNodeSingleWriter
            | Mode::SingleNodeMultiWriter,
        ) => {}
        _ => {
            return Err(format!(
                "{} is not supported: a node-local volume is reachable from its own node only (use a SINGLE_NODE_* mode, ReadWriteOnce or ReadWriteOncePod)",
                mode_name(mode)
            ));
        }
    }
    match cap
        .access_type
        .as_ref()
        .ok_or("a volume capability has neither block nor mount access_type")?
    {
        AccessType::Block(_) => Ok(AccessKind::Block),
        AccessType::Mount(mount) => {
            let fs_type = if mount.fs_type.is_empty() {
                filesystems.default
            } else {
                mount.fs_type.as_str()
            };
            if !filesystems
                .available
                .iter()
                .any(|(name, _)| *name == fs_type)
            {
                return Err(format!(
                    "fsType {fs_type:?} is not supported on this node (supported: {})",
                    filesystems
                        .available
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            if !mount.volume_mount_group.is_empty() {
                return Err("volume_mount_group is not supported: the kubelet applies fsGroup (CSIDriver fsGroupPolicy: File)".into());
            }
            Ok(AccessKind::Mount {
                fs_type: fs_type.to_string(),
            })
        }
    }
}

/// Every capability of a request checked; at least one is required.
pub fn access_kinds(
    caps: &[VolumeCapability],
    filesystems: &Filesystems,
) -> Result<Vec<AccessKind>, String> {
    if caps.is_empty() {
        return Err("volume_capabilities is empty".into());
    }
    caps.iter()
        .map(|cap| access_kind(cap, filesystems))
        .collect()
}

/// The smallest size any of `kinds` can be formatted at.
pub fn minimum_size(kinds: &[AccessKind], filesystems: &Filesystems) -> u64 {
    kinds
        .iter()
        .map(|k| match k {
            AccessKind::Block => MIB,
            AccessKind::Mount { fs_type } => filesystems
                .available
                .iter()
                .find(|(n, _)| n == fs_type)
                .map_or(MIB, |(_, min)| *min),
        })
        .max()
        .unwrap_or(MIB)
}

/// The bytes to allocate for a capacity range: the required bytes rounded up
/// to whole MiB (and to `minimum`), never above the limit.
pub fn allocation_size(range: Option<&CapacityRange>, minimum: u64) -> Result<u64, Status> {
    let (required, limit) = range.map_or((0, 0), |r| (r.required_bytes, r.limit_bytes));
    if required < 0 || limit < 0 {
        return Err(Status::out_of_range(format!(
            "capacity_range has a negative size (required_bytes {required}, limit_bytes {limit})"
        )));
    }
    let (required, limit) = (required as u64, limit as u64);
    if limit != 0 && required > limit {
        return Err(Status::out_of_range(format!(
            "capacity_range.required_bytes {required} is above limit_bytes {limit}"
        )));
    }
    let wanted = if required == 0 && limit == 0 {
        DEFAULT_VOLUME_SIZE
    } else if required == 0 {
        limit.min(DEFAULT_VOLUME_SIZE)
    } else {
        required
    };
    let size = wanted.max(minimum).div_ceil(MIB) * MIB;
    if limit != 0 && size > limit {
        // Rounding up to MiB (or to the filesystem's minimum) passed the limit;
        // the limit itself is a size we can give if it is large enough.
        let floor = limit / MIB * MIB;
        if floor >= required && floor >= minimum && floor > 0 {
            return Ok(floor);
        }
        return Err(Status::out_of_range(format!(
            "capacity_range.limit_bytes {limit} is below the smallest volume this driver makes ({} bytes; whole MiB, at least {minimum} bytes for the filesystem asked for)",
            minimum.max(required).div_ceil(MIB) * MIB
        )));
    }
    Ok(size)
}

/// Whether an existing volume's size satisfies a capacity range, for an
/// idempotent CreateVolume.
pub fn size_fits(size: u64, range: Option<&CapacityRange>) -> bool {
    let Some(range) = range else { return true };
    let required = range.required_bytes.max(0) as u64;
    let limit = range.limit_bytes.max(0) as u64;
    size >= required && (limit == 0 || size <= limit)
}

/// StorageClass parameters, each one understood or refused: a parameter the
/// driver would ignore is an error, so nothing a user sets is silently dropped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Parameters {
    /// The claim and volume the provisioner named (with --extra-create-metadata).
    pub owner: BTreeMap<String, String>,
}

pub fn parameters(
    params: &std::collections::HashMap<String, String>,
) -> Result<Parameters, String> {
    let mut parsed = Parameters::default();
    let mut keys: Vec<_> = params.keys().collect();
    keys.sort();
    for key in keys {
        let value = &params[key];
        match key.as_str() {
            PVC_NAME | PVC_NAMESPACE | PV_NAME => {
                parsed.owner.insert(key.clone(), value.clone());
            }
            // Kubernetes' reserved keys (fstype, secret names) are the CO's:
            // the external-provisioner acts on them, and passes them on
            // as they are in GetCapacity.
            _ if key.starts_with(K8S_RESERVED_PREFIX) => {}
            "backend" if value == "image" => {}
            "backend" => {
                return Err(format!(
                    "StorageClass parameter backend: {value:?} is not supported (supported: image)"
                ));
            }
            _ => {
                return Err(format!(
                    "StorageClass parameter {key:?} is not supported (supported: backend)"
                ));
            }
        }
    }
    Ok(parsed)
}

/// One page of a sorted list of IDs: the entries after `token` (the last ID
/// of the previous page), at most `max` of them (0: all), and the next token.
/// A token is an ID rather than an offset so that deletions between pages
/// neither skip nor repeat an entry.
pub fn page<'a>(
    ids: &'a [String],
    token: &str,
    max: i32,
) -> Result<(&'a [String], String), Status> {
    if max < 0 {
        return Err(Status::invalid_argument(format!(
            "max_entries {max} is negative"
        )));
    }
    let start = if token.is_empty() {
        0
    } else if !valid_id(token, "vol") && !valid_id(token, "snap") {
        return Err(Status::aborted(format!(
            "starting_token {token:?} is not a token this driver gave out"
        )));
    } else {
        ids.partition_point(|id| id.as_str() <= token)
    };
    let rest = &ids[start..];
    let len = if max == 0 {
        rest.len()
    } else {
        rest.len().min(max as usize)
    };
    let next = if len < rest.len() {
        rest[len - 1].clone()
    } else {
        String::new()
    };
    Ok((&rest[..len], next))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::volume_capability::{AccessMode, BlockVolume, MountVolume};

    fn cap(mode: Mode, access: AccessType) -> VolumeCapability {
        VolumeCapability {
            access_mode: Some(AccessMode { mode: mode as i32 }),
            access_type: Some(access),
        }
    }
    fn mount(fs: &str) -> AccessType {
        AccessType::Mount(MountVolume {
            fs_type: fs.into(),
            ..Default::default()
        })
    }
    fn range(required: i64, limit: i64) -> CapacityRange {
        CapacityRange {
            required_bytes: required,
            limit_bytes: limit,
        }
    }

    #[test]
    fn ids_are_stable_per_name_and_checked_before_use() {
        assert_eq!(volume_id("pvc-1"), volume_id("pvc-1"));
        assert_ne!(volume_id("pvc-1"), volume_id("pvc-2"));
        assert!(valid_id(&volume_id("pvc-1"), "vol"));
        assert!(valid_id(&snapshot_id("s"), "snap"));
        assert!(!valid_id(&snapshot_id("s"), "vol"));
        assert!(!valid_id("vol-../../etc", "vol"));
        assert!(!valid_id("vol-", "vol"));
    }

    #[test]
    fn multi_node_modes_and_unknown_filesystems_are_refused_by_name() {
        let err = access_kind(
            &cap(Mode::MultiNodeMultiWriter, mount("")),
            &Filesystems::all(),
        )
        .unwrap_err();
        assert!(err.contains("MULTI_NODE_MULTI_WRITER"), "{err}");
        let err = access_kind(
            &cap(Mode::SingleNodeWriter, mount("zfs")),
            &Filesystems::all(),
        )
        .unwrap_err();
        assert!(err.contains("\"zfs\"") && err.contains("ext4"), "{err}");
        assert_eq!(
            access_kind(&cap(Mode::SingleNodeWriter, mount("")), &Filesystems::all()).unwrap(),
            AccessKind::Mount {
                fs_type: "ext4".into()
            }
        );
        assert_eq!(
            access_kind(
                &cap(
                    Mode::SingleNodeReaderOnly,
                    AccessType::Block(BlockVolume {})
                ),
                &Filesystems::all()
            )
            .unwrap(),
            AccessKind::Block
        );
        assert!(access_kinds(&[], &Filesystems::all()).is_err());
    }

    #[test]
    fn sizes_round_up_to_mib_within_the_limit() {
        assert_eq!(allocation_size(None, MIB).unwrap(), GIB);
        assert_eq!(allocation_size(Some(&range(1, 0)), MIB).unwrap(), MIB);
        assert_eq!(
            allocation_size(Some(&range(MIB as i64 + 1, 0)), MIB).unwrap(),
            2 * MIB
        );
        // Only a limit: the default size, if the limit allows.
        assert_eq!(
            allocation_size(Some(&range(0, 10 * MIB as i64)), MIB).unwrap(),
            10 * MIB
        );
        // xfs needs 300 MiB: a smaller request is grown, a smaller limit refused.
        assert_eq!(
            allocation_size(Some(&range(MIB as i64, 0)), 300 * MIB).unwrap(),
            300 * MIB
        );
        let err = allocation_size(Some(&range(MIB as i64, 2 * MIB as i64)), 300 * MIB).unwrap_err();
        assert_eq!(err.code(), tonic::Code::OutOfRange);
        // A limit that is not whole MiB: the whole MiB below it.
        assert_eq!(
            allocation_size(Some(&range(MIB as i64 + 1, 3 * MIB as i64 - 1)), MIB).unwrap(),
            2 * MIB
        );
        assert_eq!(
            allocation_size(Some(&range(5, 3)), MIB).unwrap_err().code(),
            tonic::Code::OutOfRange
        );
        assert_eq!(
            allocation_size(Some(&range(-1, 0)), MIB)
                .unwrap_err()
                .code(),
            tonic::Code::OutOfRange
        );
    }

    #[test]
    fn unknown_parameters_are_refused_and_owner_metadata_kept() {
        let mut params = std::collections::HashMap::new();
        params.insert(PVC_NAME.to_string(), "data".to_string());
        params.insert("backend".to_string(), "image".to_string());
        let parsed = parameters(&params).unwrap();
        assert_eq!(parsed.owner.get(PVC_NAME).map(String::as_str), Some("data"));
        // Kubernetes' own keys reach GetCapacity unfiltered: accepted.
        params.insert("csi.storage.k8s.io/fstype".to_string(), "xfs".to_string());
        assert!(parameters(&params).is_ok());
        params.insert("fstype".to_string(), "xfs".to_string());
        assert!(parameters(&params).unwrap_err().contains("\"fstype\""));
        params.remove("fstype");
        params.insert("backend".to_string(), "lvm".to_string());
        assert!(parameters(&params).unwrap_err().contains("\"lvm\""));
    }

    #[test]
    fn pages_continue_after_the_last_id_and_refuse_foreign_tokens() {
        let ids: Vec<String> = (0..5).map(|i| volume_id(&i.to_string())).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        let (first, next) = page(&sorted, "", 2).unwrap();
        assert_eq!(first, &sorted[..2]);
        assert_eq!(next, sorted[1]);
        let (second, next) = page(&sorted, &next, 0).unwrap();
        assert_eq!(second, &sorted[2..]);
        assert_eq!(next, "");
        // The last ID of a page deleted in between: the next page is unchanged.
        let without: Vec<String> = sorted
            .iter()
            .filter(|id| **id != sorted[1])
            .cloned()
            .collect();
        assert_eq!(page(&without, &sorted[1], 0).unwrap().0, &sorted[2..]);
        assert_eq!(
            page(&sorted, "invalid-token", 0).unwrap_err().code(),
            tonic::Code::Aborted
        );
    }
}
