//! Zero-copy TCP relaying with splice(2), as HAProxy relays: bytes move from
//! one socket into a pipe and from the pipe into the other socket inside the
//! kernel, never through a user-space buffer.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::Interest;
use tokio::net::TcpStream;

/// The most one splice call moves (the pipe's default capacity).
const CHUNK: usize = 64 * 1024;

/// A pipe whose ends are closed when it is dropped.
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl Pipe {
    fn new() -> std::io::Result<Self> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: pipe2 writes two descriptors into the two-element array
        // it is given and nothing else.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just made by pipe2 and are owned by
        // nothing else.
        #[allow(unsafe_code)]
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        Ok(Self { read, write })
    }
}

/// One splice(2) call between two descriptors, without offsets.
fn splice(from: RawFd, to: RawFd, len: usize) -> std::io::Result<usize> {
    // SAFETY: splice takes two open descriptors and null offsets (the
    // descriptors' own positions); it touches no memory of this process.
    #[allow(unsafe_code)]
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// `from` → `to` until `from` says end-of-stream, then shuts `to` down for
/// writing (as copy_bidirectional does); each read is noted in `activity`
/// (milliseconds since `started`). The bytes moved.
pub async fn one_way(
    from: &TcpStream,
    to: &TcpStream,
    activity: &Arc<AtomicU64>,
    started: tokio::time::Instant,
) -> std::io::Result<u64> {
    let pipe = Pipe::new()?;
    let mut moved = 0u64;
    loop {
        // Empty pipe: fill it from the socket.
        let pending = loop {
            from.readable().await?;
            match from.try_io(Interest::READABLE, || {
                splice(from.as_raw_fd(), pipe.write.as_raw_fd(), CHUNK)
            }) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        };
        if pending == 0 {
            socket2::SockRef::from(to).shutdown(std::net::Shutdown::Write)?;
            return Ok(moved);
        }
        activity.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        // Drain the pipe into the other socket.
        let mut left = pending;
        while left > 0 {
            to.writable().await?;
            match to.try_io(Interest::WRITABLE, || {
                splice(pipe.read.as_raw_fd(), to.as_raw_fd(), left)
            }) {
                Ok(n) => left -= n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        moved += pending as u64;
    }
}

/// Both directions until both have ended (or one fails).
pub async fn both_ways(
    a: &TcpStream,
    b: &TcpStream,
    activity: &Arc<AtomicU64>,
    started: tokio::time::Instant,
) -> std::io::Result<(u64, u64)> {
    tokio::try_join!(
        one_way(a, b, activity, started),
        one_way(b, a, activity, started)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A connected pair of sockets.
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (a, b) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (a.unwrap(), b.unwrap().0)
    }

    #[tokio::test]
    async fn bytes_cross_both_ways_intact_and_end_of_stream_follows() {
        let (mut client, proxy_in) = pair().await;
        let (proxy_out, mut server) = pair().await;
        let activity = Arc::new(AtomicU64::new(0));
        let relay = tokio::spawn(async move {
            both_ways(
                &proxy_in,
                &proxy_out,
                &activity,
                tokio::time::Instant::now(),
            )
            .await
        });
        // More than one pipe's worth, with a pattern to check.
        let sent: Vec<u8> = (0..(3 * CHUNK + 17)).map(|i| (i % 251) as u8).collect();
        let expect = sent.clone();
        let writer = tokio::spawn(async move {
            client.write_all(&sent).await.unwrap();
            client.shutdown().await.unwrap();
            let mut reply = Vec::new();
            client.read_to_end(&mut reply).await.unwrap();
            reply
        });
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, expect);
        server.write_all(b"done").await.unwrap();
        server.shutdown().await.unwrap();
        assert_eq!(writer.await.unwrap(), b"done");
        let (up, down) = relay.await.unwrap().unwrap();
        assert_eq!((up, down), (expect.len() as u64, 4));
    }
}
