//! Loopback ports for the processes tests start (etcd, kube-apiserver, moto,
//! overcast-ccm's secure port).
//!
//! "Bind port 0, read it, close it" races as soon as test binaries run side
//! by side: the kernel hands the same just-closed port to the next bind(0) of
//! another process before the child that was meant to take it has bound it
//! (seen: etcd's "bind: address already in use" with two e2e tests starting at
//! once). So a port is claimed instead: taken from below the kernel's
//! ephemeral range (outgoing connections never land there), and held by an
//! flock on `<tmp>/overcast-testenv-ports/<port>.lock` for the life of the
//! process, which the kernel drops however the process ends.

use std::fs::File;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Mutex;

use crate::Error;
use crate::cluster::sys;

/// Claims kept open for the life of the process (a few hundred at most).
static CLAIMED: Mutex<Vec<File>> = Mutex::new(Vec::new());

/// The lowest port handed out; the highest is just below the ephemeral range.
const LOWEST: u16 = 15000;

fn lock_dir() -> PathBuf {
    std::env::temp_dir().join("overcast-testenv-ports")
}

/// The kernel's ephemeral range (`ip_local_port_range`), where bind(0) and
/// outgoing connections take their ports.
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768)
}

/// A loopback port no other test process of this machine holds and that
/// nothing listens on now; this process keeps it until it exits.
pub fn free_port() -> Result<u16, Error> {
    let dir = lock_dir();
    std::fs::create_dir_all(&dir).map_err(Error::io(format!("creating {}", dir.display())))?;
    let high = ephemeral_low().max(LOWEST + 1000);
    let span = u32::from(high - LOWEST);
    // Start at a point that differs per process so concurrent processes
    // rarely contend for the same lock files.
    let start = (std::process::id().wrapping_mul(2654435761) ^ nanos()) % span;
    let mut claimed = CLAIMED.lock().unwrap_or_else(|p| p.into_inner());
    for i in 0..span {
        let port = LOWEST + ((start + i) % span) as u16;
        let path = dir.join(format!("{port}.lock"));
        let Ok(file) = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
        else {
            continue;
        };
        if !sys::try_lock(&file).unwrap_or(false) {
            continue;
        }
        // Held by no test process; is anything else listening there?
        if TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        claimed.push(file);
        return Ok(port);
    }
    Err(Error::Io {
        what: "finding a free loopback port".into(),
        source: std::io::Error::other(format!(
            "every port in {LOWEST}..{high} is claimed or in use (locks under {})",
            dir.display()
        )),
    })
}

fn nanos() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_claimed_in_one_process_never_repeat() {
        let ports: Vec<u16> = (0..50).map(|_| free_port().unwrap()).collect();
        let unique: std::collections::BTreeSet<_> = ports.iter().collect();
        assert_eq!(unique.len(), ports.len(), "{ports:?}");
        assert!(
            ports
                .iter()
                .all(|&p| p >= LOWEST && p < ephemeral_low().max(LOWEST + 1000))
        );
    }
}
