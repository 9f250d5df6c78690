//! Cluster slots: each running cluster owns a slot number `k`, which names
//! everything it creates outside its process (links and namespaces `ovc<k>-…`,
//! cgroups `/ovc<k>-…`, the directory `…/slot-<k>`, the subnet 10.250.k.0/24).
//! Ownership is an flock on the slot's lock file, which the kernel releases
//! when the owner dies, however it dies. Whoever takes a slot first removes
//! what a dead owner left in it, so a kill -9 at any step is cleaned up by the
//! next cluster started on the machine.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::Error;
use crate::cluster::net::{self, Addressing};
use crate::cluster::{cgroups, sys};

/// Fixed paths outside the slot that containerd, libcni, the kubelet and
/// `ip netns` create, children first.
const HOST_DIRS: [&str; 9] = [
    "/var/lib/cni/results",
    "/var/lib/cni",
    "/var/lib/kubelet/device-plugins",
    "/var/lib/kubelet",
    "/run/netns",
    "/run/containerd/s",
    "/run/containerd/runc/k8s.io",
    "/run/containerd/runc",
    "/run/containerd",
];

/// How many clusters may run at once on one machine.
const SLOTS: u8 = 16;

#[derive(Debug)]
pub(crate) struct Slot {
    pub addressing: Addressing,
    pub dir: PathBuf,
    // Held for the cluster's life; closing it releases the slot.
    _lock: File,
}

fn base() -> PathBuf {
    std::env::temp_dir().join("overcast-testenv-cluster")
}

impl Slot {
    /// Takes the first free slot, after cleaning what dead owners left in
    /// every free slot: with clusters of several processes at once, the
    /// next cluster may not take the very slot a killed one held.
    pub(crate) fn take() -> Result<Slot, Error> {
        let base = base();
        std::fs::create_dir_all(&base)
            .map_err(Error::io(format!("creating {}", base.display())))?;
        let mut taken = None;
        for k in 0..SLOTS {
            let path = base.join(format!("slot-{k}.lock"));
            let lock = File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(Error::io(format!("opening {}", path.display())))?;
            if !sys::try_lock(&lock).map_err(Error::io(format!("locking {}", path.display())))? {
                continue;
            }
            let addressing = Addressing { slot: k };
            let dir = base.join(format!("slot-{k}"));
            if has_leftovers(addressing, &dir) {
                clean(addressing, &dir, false);
            }
            if taken.is_none() {
                std::fs::create_dir_all(&dir)
                    .map_err(Error::io(format!("creating {}", dir.display())))?;
                taken = Some(Slot {
                    addressing,
                    dir,
                    _lock: lock,
                });
            }
            // A slot only swept is released here, with its lock.
        }
        taken.ok_or_else(|| Error::Io {
            what: "taking a cluster slot".into(),
            source: std::io::Error::other(format!(
                "all {SLOTS} slots under {} are in use",
                base.display()
            )),
        })
    }

    /// Removes everything of this slot (see [`clean`]).
    pub(crate) fn clean(&self, keep_dir: bool) {
        clean(self.addressing, &self.dir, keep_dir);
    }
}

/// Whether a slot other than `a`'s is held (by any process, this one included).
fn others_in_use(a: Addressing) -> bool {
    (0..SLOTS).filter(|&k| k != a.slot).any(|k| {
        File::open(base().join(format!("slot-{k}.lock")))
            .is_ok_and(|f| sys::try_lock(&f).is_ok_and(|locked| !locked))
    })
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.clean(std::env::var(crate::KEEP_ENV).as_deref() == Ok("1"));
    }
}

/// Removes everything of slot `a`: processes (by cgroup), mounts under
/// its directory, namespaces and links, cgroups, the directory, and the
/// CNI result cache entries containerd wrote for its networks.
fn clean(a: Addressing, dir: &Path, keep_dir: bool) {
    let prefix = a.prefix();
    for cgroup in cgroups::roots_with_prefix(&prefix) {
        cgroups::kill_and_remove(&cgroup);
    }
    remove_host_files_of(dir);
    unmount_under(dir);
    detach_loop_devices_under(dir);
    net::remove_slot(a);
    if keep_dir {
        eprintln!("testenv: kept the cluster's directory {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(dir);
    }
    if !others_in_use(a) {
        remove_host_dirs();
    }
}

/// Whether a dead owner left anything of slot `a`: its directory, a link or
/// namespace, a cgroup.
fn has_leftovers(a: Addressing, dir: &Path) -> bool {
    let prefix = a.prefix();
    let named = |parent: &str| {
        std::fs::read_dir(parent).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        })
    };
    dir.exists()
        || named("/sys/class/net")
        || named("/run/netns")
        || !cgroups::roots_with_prefix(&prefix).is_empty()
}

/// The files containerd's shims and libcni leave at fixed host paths for the
/// sandboxes and containers of the nodes under `slot_dir`, when they are
/// killed rather than stopped. They are named after the container IDs, which
/// the nodes' containerd state still lists.
fn remove_host_files_of(slot_dir: &Path) {
    use sha2::Digest as _;
    let Ok(nodes) = std::fs::read_dir(slot_dir) else {
        return;
    };
    let mut ids = Vec::new();
    for node in nodes.flatten() {
        let containerd = node.path().join("containerd");
        let socket = containerd.join("containerd.sock");
        let tasks = containerd.join("state/io.containerd.runtime.v2.task/k8s.io");
        let Ok(entries) = std::fs::read_dir(&tasks) else {
            continue;
        };
        for id in entries.flatten() {
            let id = id.file_name().to_string_lossy().to_string();
            // containerd 1.6 runtime/v2/shim: /run/containerd/s/<sha256 of
            // "<containerd address>/<namespace>/<id>">.
            let digest = sha2::Sha256::digest(format!("{}/k8s.io/{id}", socket.display()));
            let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
            let _ = std::fs::remove_file(Path::new("/run/containerd/s").join(hex));
            ids.push(format!("-{id}-"));
        }
    }
    // libcni: /var/lib/cni/results/<network>-<id>-<interface>.
    if let Ok(results) = std::fs::read_dir("/var/lib/cni/results") {
        for result in results.flatten() {
            let name = result.file_name().to_string_lossy().to_string();
            if ids.iter().any(|id| name.contains(id.as_str())) {
                let _ = std::fs::remove_file(result.path());
            }
        }
    }
}

/// What the node software makes at fixed host paths, once no cluster runs:
/// the kubelets' shared device-plugin socket, `ip netns`'s mount, and the
/// directories, each only when empty.
fn remove_host_dirs() {
    let _ = std::fs::remove_file("/var/lib/kubelet/device-plugins/kubelet.sock");
    let netns_empty = std::fs::read_dir("/run/netns").is_ok_and(|mut d| d.next().is_none());
    if netns_empty {
        let _ = sys::unmount(Path::new("/run/netns"));
    }
    for dir in HOST_DIRS {
        let _ = std::fs::remove_dir(dir);
    }
}

/// Detaches every mount at or below `dir`, deepest first.
fn unmount_under(dir: &Path) {
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut mounts: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mount_path(p)))
        .filter(|p| p.starts_with(dir))
        .collect();
    mounts.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    mounts.dedup();
    for mount in mounts {
        let _ = sys::unmount(&mount);
    }
}

/// Detaches the loop devices whose backing files are at or below `dir`:
/// what a CSI driver on the nodes attached for volumes still staged when the
/// run was killed (unmounting leaves a loop device attached).
fn detach_loop_devices_under(dir: &Path) {
    let Ok(devices) = std::fs::read_dir("/sys/block") else {
        return;
    };
    for device in devices.flatten() {
        let name = device.file_name().to_string_lossy().to_string();
        let Ok(backing) = std::fs::read_to_string(device.path().join("loop/backing_file")) else {
            continue;
        };
        let backing = backing.trim_end();
        let backing = backing.strip_suffix(" (deleted)").unwrap_or(backing);
        if Path::new(backing).starts_with(dir) {
            let _ = std::process::Command::new("losetup")
                .arg("-d")
                .arg(format!("/dev/{name}"))
                .status();
        }
    }
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape_mount_path(p: &str) -> String {
    p.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}
