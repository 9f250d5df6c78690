//! Child processes that cannot outlive the test binary.
// PR_SET_PDEATHSIG and atexit(3) have no safe std equivalent.
#![allow(unsafe_code)]

use std::fs::File;
use std::os::fd::AsRawFd as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::Error;

/// A running child whose output goes to a log file. Dropping it kills the child
/// (SIGTERM, then SIGKILL after a grace period) and reaps it.
#[derive(Debug)]
pub(crate) struct Supervised {
    name: String,
    child: Child,
    log: PathBuf,
}

/// Where a child runs: a network namespace (a path under /run/netns) and the
/// `cgroup.procs` files of the cgroups it joins.
#[derive(Debug, Default, Clone)]
pub(crate) struct Placement {
    pub netns: Option<PathBuf>,
    pub cgroup_procs: Vec<PathBuf>,
}

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

/// PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, not the
/// process. Test threads and tokio's blocking threads come and go, so every child
/// is forked from one thread that lives as long as the test binary.
fn spawner() -> &'static mpsc::Sender<SpawnRequest> {
    static SPAWNER: OnceLock<mpsc::Sender<SpawnRequest>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("testenv-spawner".into())
            .spawn(move || {
                for (mut command, reply) in rx {
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("starting the testenv spawner thread");
        tx
    })
}

impl Supervised {
    pub(crate) fn spawn(name: &str, command: Command, log: &Path) -> Result<Self, Error> {
        Self::spawn_placed(name, command, log, &Placement::default())
    }

    /// Spawns `command` inside `placement`: the child joins the network
    /// namespace and cgroups before it execs, so nothing it starts escapes them.
    pub(crate) fn spawn_placed(
        name: &str,
        mut command: Command,
        log: &Path,
        placement: &Placement,
    ) -> Result<Self, Error> {
        let out = File::create(log).map_err(Error::io(format!("creating {}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(Error::io(format!("opening {}", log.display())))?;
        command.stdin(Stdio::null()).stdout(out).stderr(err);
        // Opened here, used in the child: pre_exec may not allocate.
        let netns = match &placement.netns {
            Some(path) => {
                Some(File::open(path).map_err(Error::io(format!("opening {}", path.display())))?)
            }
            None => None,
        };
        let netns_fd = netns.as_ref().map(|f| f.as_raw_fd());
        let cgroups = placement
            .cgroup_procs
            .iter()
            .map(|path| {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(Error::io(format!("opening {}", path.display())))
            })
            .collect::<Result<Vec<File>, Error>>()?;
        let cgroup_fds: Vec<i32> = cgroups.iter().map(|f| f.as_raw_fd()).collect();
        // SAFETY: prctl, setns and write are async-signal-safe syscalls on
        // descriptors the parent keeps open until spawn returns; nothing here
        // allocates or touches the parent's memory.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some(fd) = netns_fd
                    && libc::setns(fd, libc::CLONE_NEWNET) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                // "0" written to a v1 cgroup.procs moves the writing process.
                for &fd in &cgroup_fds {
                    if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let (tx, rx) = mpsc::channel();
        spawner()
            .send((command, tx))
            .expect("the testenv spawner thread never exits");
        let child = rx
            .recv()
            .expect("the testenv spawner thread always replies")
            .map_err(Error::io(format!("starting {name}")))?;
        drop((netns, cgroups));
        Ok(Supervised {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
        })
    }

    pub(crate) fn id(&self) -> u32 {
        self.child.id()
    }

    /// Fails with the tail of the log when the process has exited.
    pub(crate) fn check_running(&mut self) -> Result<(), Error> {
        match self.child.try_wait() {
            Ok(Some(status)) => Err(Error::Exited {
                name: self.name.clone(),
                status,
                log: self.log.clone(),
                tail: tail(&self.log),
            }),
            Ok(None) => Ok(()),
            Err(e) => Err(Error::Io {
                what: format!("checking on {}", self.name),
                source: e,
            }),
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill(2) on our own, not yet reaped, child.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last lines of a log file, for error messages.
pub(crate) fn tail(path: &Path) -> String {
    const LINES: usize = 40;
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(LINES)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

const DIR_PREFIX: &str = "overcast-testenv-";

/// A file in a directory kept on purpose ([`crate::KEEP_ENV`]): the sweep
/// leaves it alone.
pub(crate) const KEPT_MARKER: &str = "KEPT";

/// Temporary directories carry the owning pid, so a later run can remove the
/// ones a killed test binary left behind.
pub(crate) fn dir_prefix() -> String {
    format!("{DIR_PREFIX}{}-", std::process::id())
}

pub(crate) fn remove_stale_dirs(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(DIR_PREFIX)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() && !entry.path().join(KEPT_MARKER).exists()
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Runs `f` when the process exits normally, which the test harness does
/// after failed tests too.
pub(crate) fn stop_at_exit(f: extern "C" fn()) {
    // SAFETY: registering a plain function pointer.
    unsafe {
        libc::atexit(f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sweep_removes_dead_runs_directories_but_not_kept_ones() {
        let root = tempfile::tempdir().unwrap();
        // No process has pid 2^31-1 (above pid_max's ceiling of 2^22).
        let dead = root.path().join(format!("{DIR_PREFIX}2147483647-abc"));
        let kept = root.path().join(format!("{DIR_PREFIX}2147483647-def"));
        let live = root.path().join(format!("{}xyz", dir_prefix()));
        for dir in [&dead, &kept, &live] {
            std::fs::create_dir(dir).unwrap();
        }
        std::fs::write(kept.join(KEPT_MARKER), "").unwrap();
        remove_stale_dirs(root.path());
        assert!(!dead.exists());
        assert!(kept.exists());
        assert!(live.exists());
    }
}
