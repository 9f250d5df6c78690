//! The few system calls the cluster needs that std does not offer.
// flock(2), kill(2) and umount2(2) have no safe std equivalent.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::fs::File;
use std::os::fd::AsRawFd as _;
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;

/// Takes an exclusive lock on `file` without waiting; false when another
/// process holds it. The kernel drops the lock when the holder dies, however
/// it dies, which is what makes a slot's owner knowable after a kill -9.
pub(crate) fn try_lock(file: &File) -> std::io::Result<bool> {
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(err)
    }
}

/// SIGKILL to `pid`; an already gone process is not an error.
pub(crate) fn kill(pid: i32) {
    // SAFETY: kill(2) has no memory effects on this process.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

/// Detaches the mount at `path` (lazily: busy mounts go when released).
pub(crate) fn unmount(path: &Path) -> std::io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: a valid NUL-terminated path.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
