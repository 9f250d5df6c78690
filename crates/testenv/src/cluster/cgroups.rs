//! A node's cgroups (v1, one hierarchy per controller as on this machine):
//! the kubelet's `cgroupRoot` made in every hierarchy, and a `runtime` child
//! in which containerd, its shims, the kubelet and kube-proxy run. Everything a
//! node started is then found, and killed, by walking its tree; a test binary
//! killed with -9 leaves nothing a later run cannot find this way.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::Error;
use crate::cluster::sys;

const ROOT: &str = "/sys/fs/cgroup";
/// The hierarchy whose tree is walked to find a node's processes.
const TRACKING: &str = "pids";

/// The v1 hierarchies mounted here (`unified`, the cgroup2 mount, excluded).
fn hierarchies() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(ROOT) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_name() != "unified")
        .map(|e| e.path())
        .filter(|p| p.join("cgroup.procs").is_file())
        .collect();
    out.sort();
    out
}

/// Creates `/<name>` and `/<name>/runtime` in every hierarchy; returns the
/// `cgroup.procs` files of the runtime cgroups, for a child to join.
pub(crate) fn create(name: &str) -> Result<Vec<PathBuf>, Error> {
    let mut procs = Vec::new();
    for hierarchy in hierarchies() {
        for dir in [hierarchy.join(name), hierarchy.join(name).join("runtime")] {
            std::fs::create_dir_all(&dir)
                .map_err(Error::io(format!("creating {}", dir.display())))?;
            // A new cpuset cgroup has no CPUs or memory nodes: copy its parent's.
            if hierarchy.ends_with("cpuset") {
                for file in ["cpuset.cpus", "cpuset.mems"] {
                    let parent = dir.parent().unwrap_or(&hierarchy).join(file);
                    let value = std::fs::read_to_string(&parent)
                        .map_err(Error::io(format!("reading {}", parent.display())))?;
                    std::fs::write(dir.join(file), value.trim())
                        .map_err(Error::io(format!("writing {}", dir.join(file).display())))?;
                }
            }
        }
        procs.push(hierarchy.join(name).join("runtime/cgroup.procs"));
    }
    Ok(procs)
}

/// The top-level cgroups whose names start with `prefix`.
pub(crate) fn roots_with_prefix(prefix: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(Path::new(ROOT).join(TRACKING)) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with(prefix))
        .collect()
}

/// Every cgroup directory under `dir`, children before parents.
fn tree(dir: &Path, out: &mut Vec<PathBuf>) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                tree(&entry.path(), out);
            }
        }
    }
    out.push(dir.to_path_buf());
}

fn pids_in(dirs: &[PathBuf]) -> Vec<i32> {
    dirs.iter()
        .filter_map(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
        .flat_map(|text| {
            text.lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect()
}

/// SIGKILLs every process in `/<name>`'s tree until none is left (bounded),
/// then removes the cgroups from every hierarchy. Quiet: it runs on drop and
/// in the sweep of a dead run's slot.
pub(crate) fn kill_and_remove(name: &str) {
    let tracking = Path::new(ROOT).join(TRACKING).join(name);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut dirs = Vec::new();
        tree(&tracking, &mut dirs);
        let pids = pids_in(&dirs);
        if pids.is_empty() || Instant::now() > deadline {
            break;
        }
        pids.into_iter().for_each(sys::kill);
        std::thread::sleep(Duration::from_millis(20));
    }
    for hierarchy in hierarchies() {
        let mut dirs = Vec::new();
        tree(&hierarchy.join(name), &mut dirs);
        for dir in dirs {
            // A cgroup goes once its last process is reaped: retry briefly.
            let deadline = Instant::now() + Duration::from_secs(2);
            while std::fs::remove_dir(&dir).is_err() && dir.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}
