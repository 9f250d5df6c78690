//! TCP relaying as HAProxy relays with `splice-auto`: a flow starts by
//! copying through one per-thread buffer (a small request costs one recv and
//! one send, no pipe, no per-connection buffer); a read that fills that
//! buffer marks a bulk flow, which moves to splice(2) — socket → pipe →
//! socket inside the kernel, never through this process.

use std::cell::RefCell;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::io::Interest;
use tokio::net::TcpStream;

/// The per-thread copy buffer; a read that fills it makes the flow bulk.
const COPY_BUFFER: usize = 16 * 1024;

thread_local! {
    static COPY: RefCell<Box<[u8]>> = RefCell::new(vec![0; COPY_BUFFER].into_boxed_slice());
}

/// A pipe whose ends are closed when it is dropped, and its capacity.
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    capacity: usize,
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
        // SAFETY: fcntl on a descriptor this function owns; F_GETPIPE_SZ
        // returns the capacity in force. A larger pipe (F_SETPIPE_SZ, 1 MiB)
        // was measured: no more throughput, and more memory a flow can pin.
        #[allow(unsafe_code)]
        let capacity = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ) };
        let capacity = usize::try_from(capacity)
            .ok()
            .filter(|&c| c > 0)
            .unwrap_or(64 * 1024);
        Ok(Self {
            read,
            write,
            capacity,
        })
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

/// One read through the per-thread buffer and as much of it as `to` takes
/// at once.
enum Copied {
    End,
    /// Bytes read; the tail `to` did not take yet (usually empty).
    Read(usize, Vec<u8>),
}

fn copy_once(from: &TcpStream, to: &TcpStream) -> std::io::Result<Copied> {
    use std::io::Read as _;
    COPY.with_borrow_mut(|buffer| {
        let n = (&*socket2::SockRef::from(from)).read(buffer)?;
        if n == 0 {
            return Ok(Copied::End);
        }
        let mut sent = 0;
        while sent < n {
            match to.try_write(&buffer[sent..n]) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(k) => sent += k,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        Ok(Copied::Read(n, buffer[sent..n].to_vec()))
    })
}

/// Waits until `from` is readable, then copies one read to `to`. A read
/// shorter than the buffer drained the socket (recv(2) takes all that is
/// queued, up to its length), so it also ends the readiness tokio holds, as
/// HAProxy stops reading after a short read: the next bytes bring a new
/// edge, and the read that would only have said EAGAIN is saved. tokio keeps
/// a readiness that arrived during the read, and never clears end-of-stream.
/// (Splicing does not do this: a splice into a pipe can stop short on the
/// pipe's slots with bytes still queued.) One exception, shared with
/// HAProxy: recv also stops short before TCP urgent data with bytes behind
/// it, which then wait for the peer's next bytes or the idle timeout.
async fn copy_when_readable(from: &TcpStream, to: &TcpStream) -> std::io::Result<Copied> {
    loop {
        from.readable().await?;
        let mut done = None;
        let tried = from.try_io(Interest::READABLE, || {
            let copied = copy_once(from, to)?;
            let drained = !matches!(copied, Copied::Read(n, _) if n == COPY_BUFFER);
            done = Some(copied);
            if drained {
                Err(std::io::ErrorKind::WouldBlock.into())
            } else {
                Ok(())
            }
        });
        match (done, tried) {
            (Some(copied), _) => return Ok(copied),
            (None, Err(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            (None, Err(e)) => return Err(e),
            (None, Ok(())) => unreachable!("a read that succeeded left its result"),
        }
    }
}

/// Writes what `to` did not take of a copied read: `None` at end-of-stream,
/// else the bytes read.
async fn forward(to: &TcpStream, copied: Copied) -> std::io::Result<Option<usize>> {
    match copied {
        Copied::End => Ok(None),
        Copied::Read(n, rest) => {
            write_all(to, &rest).await?;
            Ok(Some(n))
        }
    }
}

async fn write_all(to: &TcpStream, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        to.writable().await?;
        match to.try_write(bytes) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(k) => bytes = &bytes[k..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `from` → `to` until `from` says end-of-stream, then shuts `to` down for
/// writing (as copy_bidirectional does); each read is noted in `activity`
/// (milliseconds since `started`). The bytes moved.
///
/// `ended` is shared with the other direction. The direction that ends
/// last skips its shutdown: both sockets are closed right after, and with
/// nothing left unread on either, close(2) sends the same FIN (one syscall
/// less per connection, as HAProxy closes).
async fn one_way(
    from: &TcpStream,
    to: &TcpStream,
    activity: &Arc<AtomicU64>,
    started: tokio::time::Instant,
    ended: &AtomicBool,
) -> std::io::Result<u64> {
    let note = || activity.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
    let end = || {
        if ended.swap(true, Ordering::Relaxed) {
            return Ok(());
        }
        socket2::SockRef::from(to).shutdown(std::net::Shutdown::Write)
    };
    let mut moved = 0u64;
    // Copying until a read fills the buffer.
    let pipe = loop {
        let Some(n) = forward(to, copy_when_readable(from, to).await?).await? else {
            end()?;
            return Ok(moved);
        };
        note();
        moved += n as u64;
        if n == COPY_BUFFER {
            // Out of descriptors, a bulk flow keeps copying.
            match Pipe::new() {
                Ok(pipe) => break pipe,
                Err(e) => tracing::debug!("no pipe for a bulk flow, copying on: {e}"),
            }
        }
    };
    // A bulk flow: splicing from here on.
    // The last wake-up found nothing to splice.
    let mut dry = false;
    // A recv just moved bytes past tokio's cleared readiness: more may be
    // queued with no edge to come, so splice once before waiting.
    let mut unsignalled = false;
    loop {
        // Empty pipe: fill it from the socket.
        let spliced = if std::mem::take(&mut unsignalled) {
            splice(from.as_raw_fd(), pipe.write.as_raw_fd(), pipe.capacity)
        } else {
            from.readable().await?;
            from.try_io(Interest::READABLE, || {
                splice(from.as_raw_fd(), pipe.write.as_raw_fd(), pipe.capacity)
            })
        };
        let would_block = |e: &std::io::Error| e.kind() == std::io::ErrorKind::WouldBlock;
        let pending = match spliced {
            Ok(n) if n > 0 => {
                dry = false;
                n
            }
            Err(e) if would_block(&e) && !dry => {
                dry = true;
                continue;
            }
            Err(e) if !would_block(&e) => return Err(e),
            // End-of-stream, or a second wake-up with nothing to splice.
            // splice(2) stops at TCP urgent data and never passes it (recv
            // skips the urgent byte): without this, the bytes after it
            // would be cut off at end-of-stream, or wait for the idle
            // timeout. One recv through the copy buffer tells.
            _ => {
                dry = false;
                // Outside tokio's readiness: splice's EAGAIN cleared it.
                let copied = match copy_once(from, to) {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Some(0),
                    copied => forward(to, copied?).await?,
                };
                match copied {
                    None => {
                        end()?;
                        return Ok(moved);
                    }
                    Some(0) => continue,
                    Some(n) => {
                        note();
                        moved += n as u64;
                        unsignalled = true;
                        continue;
                    }
                }
            }
        };
        note();
        // Drain the pipe into the other socket.
        let mut left = pending;
        while left > 0 {
            to.writable().await?;
            match to.try_io(Interest::WRITABLE, || {
                splice(pipe.read.as_raw_fd(), to.as_raw_fd(), left)
            }) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => left -= n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        moved += pending as u64;
    }
}

/// Both directions until both have ended (or one fails). The caller closes
/// both sockets when this returns: the last FIN is sent by that close.
pub async fn both_ways(
    a: &TcpStream,
    b: &TcpStream,
    activity: &Arc<AtomicU64>,
    started: tokio::time::Instant,
) -> std::io::Result<(u64, u64)> {
    let ended = AtomicBool::new(false);
    tokio::try_join!(
        one_way(a, b, activity, started, &ended),
        one_way(b, a, activity, started, &ended)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// Both directions between `a` and `b`, in a task.
    fn relay(a: TcpStream, b: TcpStream) -> tokio::task::JoinHandle<std::io::Result<(u64, u64)>> {
        tokio::spawn(async move {
            let activity = Arc::new(AtomicU64::new(0));
            both_ways(&a, &b, &activity, tokio::time::Instant::now()).await
        })
    }

    /// All `stream` sends until its end-of-stream; panics with `what` after 10 s.
    async fn read_to_end_within(stream: &mut TcpStream, what: &str) -> Vec<u8> {
        let mut got = Vec::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            stream.read_to_end(&mut got),
        )
        .await
        .expect(what)
        .unwrap();
        got
    }

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
        let relay = relay(proxy_in, proxy_out);
        // Copied, then (once a read fills the buffer) spliced through more
        // than one pipe's worth; with a pattern to check.
        let sent: Vec<u8> = (0..(3 * 64 * 1024 + 17)).map(|i| (i % 251) as u8).collect();
        let expect = sent.clone();
        let writer = tokio::spawn(async move {
            client.write_all(&sent).await.unwrap();
            client.shutdown().await.unwrap();
            let mut reply = Vec::new();
            client.read_to_end(&mut reply).await.unwrap();
            reply
        });
        let got = read_to_end_within(
            &mut server,
            "the bytes did not all arrive: the relay stalled",
        )
        .await;
        assert_eq!(got, expect);
        server.write_all(b"done").await.unwrap();
        server.shutdown().await.unwrap();
        assert_eq!(writer.await.unwrap(), b"done");
        let (up, down) = relay.await.unwrap().unwrap();
        assert_eq!((up, down), (expect.len() as u64, 4));
    }

    /// The server ends first and the client writes on after: the client's
    /// later bytes and its end-of-stream still reach the server, though the
    /// relay leaves the last FIN to close(2).
    #[tokio::test]
    async fn the_direction_ending_last_still_delivers_its_bytes_and_end_of_stream() {
        let (mut client, proxy_in) = pair().await;
        let (proxy_out, mut server) = pair().await;
        let relay = relay(proxy_in, proxy_out);
        server.write_all(b"bye").await.unwrap();
        server.shutdown().await.unwrap();
        let mut first = Vec::new();
        client.read_to_end(&mut first).await.unwrap();
        assert_eq!(first, b"bye");
        client.write_all(b"late words").await.unwrap();
        client.shutdown().await.unwrap();
        let late = read_to_end_within(
            &mut server,
            "the client's end-of-stream did not reach the server",
        )
        .await;
        assert_eq!(late, b"late words");
        assert_eq!(relay.await.unwrap().unwrap(), (10, 3));
    }

    /// splice(2) stops at TCP urgent data: the bytes after it must still
    /// cross, and end-of-stream must not cut them off.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bytes_after_urgent_data_in_a_bulk_flow_are_not_cut_off() {
        let (mut client, proxy_in) = pair().await;
        let (proxy_out, mut server) = pair().await;
        let relay = relay(proxy_in, proxy_out);
        // Bulk first, so the flow is spliced.
        let bulk = vec![b'b'; 4 * COPY_BUFFER];
        client.write_all(&bulk).await.unwrap();
        let mut got = vec![0u8; bulk.len()];
        server.read_exact(&mut got).await.unwrap();
        socket2::SockRef::from(&client)
            .send_out_of_band(b"!")
            .unwrap();
        client.write_all(b"after the mark").await.unwrap();
        client.shutdown().await.unwrap();
        let tail = read_to_end_within(
            &mut server,
            "the bytes after the urgent byte did not arrive",
        )
        .await;
        // The urgent byte itself is out of band: recv does not return it.
        assert_eq!(String::from_utf8_lossy(&tail), "after the mark");
        drop(server);
        let _ = relay.await.unwrap();
    }

    /// A relay between a client and an echoing server, and the client.
    async fn echo_relay() -> (
        TcpStream,
        tokio::task::JoinHandle<std::io::Result<(u64, u64)>>,
    ) {
        let (client, proxy_in) = pair().await;
        let (proxy_out, mut server) = pair().await;
        tokio::spawn(async move {
            let mut buffer = vec![0u8; 256 * 1024];
            loop {
                match server.read(&mut buffer).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => server.write_all(&buffer[..n]).await.unwrap(),
                }
            }
        });
        let relay = relay(proxy_in, proxy_out);
        (client, relay)
    }

    async fn round_trip(client: &mut TcpStream, message: &[u8]) {
        client.write_all(message).await.unwrap();
        let mut back = vec![0u8; message.len()];
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            client.read_exact(&mut back),
        )
        .await
        .expect("the answer did not come back: the relay stalled")
        .unwrap();
        assert_eq!(back, message);
    }

    /// Each short read ends the readiness it was woken by: the next request
    /// must still wake the relay, every time.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn small_requests_one_after_another_never_stall() {
        let (mut client, relay) = echo_relay().await;
        for i in 0..2000u32 {
            round_trip(&mut client, format!("request {i:>55}\n").as_bytes()).await;
        }
        client.shutdown().await.unwrap();
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        let (up, down) = relay.await.unwrap().unwrap();
        assert_eq!((up, down), (2000 * 64, 2000 * 64));
    }

    /// A flow that turned bulk (spliced) still answers small requests.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flow_turned_bulk_still_carries_small_requests() {
        let (mut client, relay) = echo_relay().await;
        let bulk: Vec<u8> = (0..(4 * COPY_BUFFER + 5))
            .map(|i| (i % 253) as u8)
            .collect();
        round_trip(&mut client, &bulk).await;
        for i in 0..200u32 {
            round_trip(&mut client, format!("after bulk {i}\n").as_bytes()).await;
        }
        drop(client);
        relay.await.unwrap().unwrap();
    }
}
