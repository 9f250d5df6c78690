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
    /// Takes the first free slot and cleans what a dead owner left in it.
    pub(crate) fn take() -> Result<Slot, Error> {
        let base = base();
        std::fs::create_dir_all(&base)
            .map_err(Error::io(format!("creating {}", base.display())))?;
        for k in 0..SLOTS {
            let path = base.join(format!("slot-{k}.lock"));
            let lock = File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(Error::io(format!("opening {}", path.display())))?;
            if sys::try_lock(&lock).map_err(Error::io(format!("locking {}", path.display())))? {
                let slot = Slot {
                    addressing: Addressing { slot: k },
                    dir: base.join(format!("slot-{k}")),
                    _lock: lock,
                };
                slot.clean(false);
                std::fs::create_dir_all(&slot.dir)
                    .map_err(Error::io(format!("creating {}", slot.dir.display())))?;
                return Ok(slot);
            }
        }
        Err(Error::Io {
            what: "taking a cluster slot".into(),
            source: std::io::Error::other(format!(
                "all {SLOTS} slots under {} are in use",
                base.display()
            )),
        })
    }

    /// Removes everything of this slot: processes (by cgroup), mounts under
    /// its directory, namespaces and links, cgroups, the directory, and the
    /// CNI result cache entries containerd wrote for its networks.
    pub(crate) fn clean(&self, keep_dir: bool) {
        let prefix = self.addressing.prefix();
        for cgroup in cgroups::roots_with_prefix(&prefix) {
            cgroups::kill_and_remove(&cgroup);
        }
        unmount_under(&self.dir);
        net::remove_slot(self.addressing);
        if keep_dir {
            eprintln!(
                "testenv: kept the cluster's directory {}",
                self.dir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        // libcni keeps results in /var/lib/cni/results/<network>-<container>-<if>.
        if let Ok(entries) = std::fs::read_dir("/var/lib/cni/results") {
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().starts_with(&prefix) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        // Directories the node software makes at fixed host paths; removed
        // only when empty, so nobody else's are touched.
        for dir in HOST_DIRS {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.clean(std::env::var(crate::KEEP_ENV).as_deref() == Ok("1"));
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

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape_mount_path(p: &str) -> String {
    p.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}
