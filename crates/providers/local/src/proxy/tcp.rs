//! TCP listeners: accept, pick a backend, relay both directions (splice.rs).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use socket2::Type;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::{Counted, Settings, Targets, proxy_protocol};

/// At most this many backends are tried for one connection.
const CONNECT_ATTEMPTS: usize = 3;

/// Both directions until either side closes, or until neither has sent a
/// byte for `idle` (then both are closed, as a cloud balancer does).
async fn copy_until_idle(
    client: &mut TcpStream,
    upstream: &mut TcpStream,
    idle: Duration,
) -> std::io::Result<()> {
    let activity = Arc::new(AtomicU64::new(0));
    let started = tokio::time::Instant::now();
    let copy = super::splice::both_ways(client, upstream, &activity, started);
    tokio::pin!(copy);
    loop {
        let last = Duration::from_millis(activity.load(Ordering::Relaxed));
        let deadline = started + last + idle;
        tokio::select! {
            result = &mut copy => return result.map(|_| ()),
            () = tokio::time::sleep_until(deadline) => {
                let now_idle = started.elapsed().saturating_sub(Duration::from_millis(activity.load(Ordering::Relaxed)));
                if now_idle >= idle {
                    crate::metrics::IDLE_CLOSED.with_label_values(&["TCP"]).inc();
                    return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "idle timeout"));
                }
            }
        }
    }
}

pub fn bind(address: SocketAddr, freebind: bool) -> std::io::Result<TcpListener> {
    let socket = super::bound_socket(address, Type::STREAM, freebind)?;
    socket.listen(4096)?;
    TcpListener::from_std(socket.into())
}

pub async fn serve(
    listener: TcpListener,
    targets: watch::Receiver<Arc<Targets>>,
    settings: watch::Receiver<Settings>,
    connections: Arc<AtomicUsize>,
) {
    let frontend = listener.local_addr().ok();
    // This listener's open connections, against loadBalancer.maxConnections.
    let open = Arc::new(AtomicUsize::new(0));
    let mut refused_logged = None::<std::time::Instant>;
    loop {
        let (client, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: back off, keep serving.
                tracing::warn!(?frontend, "accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let targets = targets.borrow().clone();
        if !targets.allows(peer.ip()) {
            crate::metrics::REFUSED
                .with_label_values(&["TCP", "source_range"])
                .inc();
            tracing::debug!(client = %peer, ?frontend, "refused: outside loadBalancerSourceRanges");
            continue;
        }
        let (timeout, idle, max) = {
            let s = settings.borrow();
            (
                s.health_check.timeout,
                s.tcp_idle_timeout,
                s.max_connections,
            )
        };
        if open.load(Ordering::Relaxed) >= max {
            // Closed at once: a flood costs one descriptor for a moment.
            drop(client);
            crate::metrics::REFUSED
                .with_label_values(&["TCP", "max_connections"])
                .inc();
            if refused_logged.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                tracing::warn!(
                    ?frontend,
                    max,
                    "connection refused: loadBalancer.maxConnections reached"
                );
                refused_logged = Some(std::time::Instant::now());
            }
            continue;
        }
        let counted = (Counted::new(&connections), Counted::new(&open));
        tokio::spawn(async move {
            if let Err(e) = proxy(client, peer, &targets, timeout, idle).await {
                tracing::debug!(client = %peer, ?frontend, "connection ended: {e}");
            }
            drop(counted);
        });
    }
}

async fn proxy(
    mut client: TcpStream,
    peer: SocketAddr,
    targets: &Targets,
    connect_timeout: Duration,
    idle_timeout: Duration,
) -> std::io::Result<()> {
    let _ = client.set_nodelay(true);
    let mut last_err = None;
    for _ in 0..CONNECT_ATTEMPTS.min(targets.backends.len().max(1)) {
        let Some(backend) = targets.pick() else {
            break;
        };
        match tokio::time::timeout(connect_timeout, TcpStream::connect(backend.address)).await {
            Ok(Ok(mut upstream)) => {
                let _ = upstream.set_nodelay(true);
                // The address the client reached is asked for (a syscall)
                // only when the header carries it.
                if targets.proxy_protocol {
                    let frontend = client.local_addr()?;
                    upstream
                        .write_all(&proxy_protocol::header_v2(peer, frontend))
                        .await?;
                }
                return copy_until_idle(&mut client, &mut upstream, idle_timeout).await;
            }
            Ok(Err(e)) => {
                tracing::debug!(backend = %backend.address, "connect failed: {e}");
                last_err = Some(e);
            }
            Err(_) => {
                tracing::debug!(backend = %backend.address, "connect timed out");
                last_err = Some(std::io::ErrorKind::TimedOut.into());
            }
        }
        if let Some(h) = &backend.health {
            h.mark_failed();
        }
    }
    Err(last_err.unwrap_or_else(|| std::io::Error::other("no backends")))
}
