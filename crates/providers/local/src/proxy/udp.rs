//! UDP listeners: each client address is a flow with its own upstream
//! socket to one backend, kept until it has been idle for the idle timeout.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};

use socket2::Type;
use tokio::net::UdpSocket;
use tokio::sync::watch;

use super::{Counted, Settings, Targets};

/// Large enough for any datagram.
const MAX_DATAGRAM: usize = 65_535;

pub fn bind(address: SocketAddr, freebind: bool) -> std::io::Result<UdpSocket> {
    let socket = super::bound_socket(address, Type::DGRAM, freebind)?;
    UdpSocket::from_std(socket.into())
}

type Flows = Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>>;

pub async fn serve(
    socket: UdpSocket,
    targets: watch::Receiver<Arc<Targets>>,
    settings: watch::Receiver<Settings>,
    connections: Arc<AtomicUsize>,
) {
    let socket = Arc::new(socket);
    let flows: Flows = Arc::default();
    // Flows end with the listener.
    let mut flow_tasks = tokio::task::JoinSet::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (n, client) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!("udp receive failed: {e}");
                continue;
            }
        };
        if !targets.borrow().allows(client.ip()) {
            crate::metrics::REFUSED
                .with_label_values(&["UDP", "source_range"])
                .inc();
            continue;
        }
        let (existing, open) = {
            let flows = flows.lock().expect("flows lock");
            (flows.get(&client).cloned(), flows.len())
        };
        let upstream = match existing {
            Some(u) => u,
            None if open >= settings.borrow().max_udp_flows => {
                // A flood of sources costs no socket or task beyond the bound.
                crate::metrics::REFUSED
                    .with_label_values(&["UDP", "max_udp_flows"])
                    .inc();
                continue;
            }
            None => {
                let Some(backend) = targets.borrow().pick() else {
                    continue;
                };
                let upstream = match open_upstream(backend.address).await {
                    Ok(u) => Arc::new(u),
                    Err(e) => {
                        tracing::debug!(backend = %backend.address, "udp upstream failed: {e}");
                        continue;
                    }
                };
                flows
                    .lock()
                    .expect("flows lock")
                    .insert(client, Arc::clone(&upstream));
                let idle = settings.borrow().udp_idle_timeout;
                let (socket, flows, up) = (
                    Arc::clone(&socket),
                    Arc::clone(&flows),
                    Arc::clone(&upstream),
                );
                let counted = Counted::new(&connections);
                flow_tasks.spawn(async move {
                    let mut buf = vec![0u8; MAX_DATAGRAM];
                    loop {
                        match tokio::time::timeout(idle, up.recv(&mut buf)).await {
                            Ok(Ok(n)) => {
                                if socket.send_to(&buf[..n], client).await.is_err() {
                                    break;
                                }
                            }
                            Ok(Err(_)) => break,
                            Err(_) => {
                                crate::metrics::IDLE_CLOSED
                                    .with_label_values(&["UDP"])
                                    .inc();
                                break;
                            }
                        }
                    }
                    flows.lock().expect("flows lock").remove(&client);
                    drop(counted);
                });
                upstream
            }
        };
        if let Err(e) = upstream.send(&buf[..n]).await {
            tracing::debug!(%client, "udp forward failed: {e}");
        }
        // Reap finished flows without waiting.
        while flow_tasks.try_join_next().is_some() {}
    }
}

async fn open_upstream(backend: SocketAddr) -> std::io::Result<UdpSocket> {
    let local: SocketAddr = if backend.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(backend).await?;
    Ok(socket)
}
