//! TCP listeners: accept, pick a backend, splice both directions.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use socket2::Type;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::{Counted, Settings, Targets, proxy_protocol};

/// Per direction and connection (tokio's default is 8 KiB); see
/// docs/performance.md for the measurement behind it.
const COPY_BUFFER: usize = 32 * 1024;

/// At most this many backends are tried for one connection.
const CONNECT_ATTEMPTS: usize = 3;

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
            tracing::debug!(client = %peer, ?frontend, "refused: outside loadBalancerSourceRanges");
            continue;
        }
        let timeout = settings.borrow().health_check.timeout;
        let counted = Counted::new(&connections);
        tokio::spawn(async move {
            if let Err(e) = proxy(client, peer, &targets, timeout).await {
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
) -> std::io::Result<()> {
    let _ = client.set_nodelay(true);
    let frontend = client.local_addr()?;
    let mut last_err = None;
    for _ in 0..CONNECT_ATTEMPTS.min(targets.backends.len().max(1)) {
        let Some(backend) = targets.pick() else {
            break;
        };
        match tokio::time::timeout(connect_timeout, TcpStream::connect(backend.address)).await {
            Ok(Ok(mut upstream)) => {
                let _ = upstream.set_nodelay(true);
                if targets.proxy_protocol {
                    upstream
                        .write_all(&proxy_protocol::header_v2(peer, frontend))
                        .await?;
                }
                tokio::io::copy_bidirectional_with_sizes(
                    &mut client,
                    &mut upstream,
                    COPY_BUFFER,
                    COPY_BUFFER,
                )
                .await?;
                return Ok(());
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
