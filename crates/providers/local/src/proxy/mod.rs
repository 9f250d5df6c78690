//! The built-in L4 load balancer: for every port of every LoadBalancer
//! Service a listener on VIP:port (TCP or UDP) that spreads connections over
//! the healthy backends (NodeIP:nodePort).
//!
//! A listener's backends are swapped atomically; a connection keeps the
//! backend it started with, so changing the node set drops nothing, and a
//! removed backend (or a removed port) drains: its open connections run on
//! until either side closes.

pub mod health;
pub mod proxy_protocol;
mod splice;
mod tcp;
mod udp;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use crate::config::HealthCheck;
use crate::vip::Vips;
use health::{Check, Health, HealthChecks};

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        })
    }
}

/// A non-blocking socket bound to `address`. With `freebind` (VIPs managed
/// on an interface) the address need not be on the host yet: it may be
/// moving here from another replica.
fn bound_socket(
    address: SocketAddr,
    kind: socket2::Type,
    freebind: bool,
) -> std::io::Result<socket2::Socket> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(address), kind, None)?;
    socket.set_reuse_address(true)?;
    if freebind {
        if address.is_ipv4() {
            socket.set_freebind_v4(true)?;
        } else {
            socket.set_freebind_v6(true)?;
        }
    }
    if address.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    Ok(socket)
}

/// One listener's wanted state.
#[derive(Clone, Debug, PartialEq)]
pub struct Frontend {
    pub address: SocketAddr,
    pub protocol: Protocol,
    pub backends: Vec<BackendSpec>,
    /// Send a PROXY protocol v2 header to backends (TCP only).
    pub proxy_protocol: bool,
    /// Clients allowed (loadBalancerSourceRanges); empty: everyone.
    pub allowed_sources: Vec<crate::pool::AddressRange>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct BackendSpec {
    pub address: SocketAddr,
    /// `None`: no active check (UDP with externalTrafficPolicy: Cluster).
    pub check: Option<Check>,
}

#[derive(Debug)]
pub struct Backend {
    pub address: SocketAddr,
    pub health: Option<Arc<Health>>,
}

impl Backend {
    fn is_healthy(&self) -> bool {
        self.health.as_ref().is_none_or(|h| h.is_healthy())
    }
}

/// Counts an open connection or flow while alive (also when its task is
/// aborted).
struct Counted(Arc<AtomicUsize>);

impl Counted {
    fn new(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(counter))
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A listener's current backends.
#[derive(Debug, Default)]
pub struct Targets {
    pub backends: Vec<Arc<Backend>>,
    pub proxy_protocol: bool,
    /// Empty: every client.
    pub allowed_sources: Vec<crate::pool::AddressRange>,
    next: AtomicUsize,
}

impl Targets {
    /// loadBalancerSourceRanges, as kube-proxy enforces it for a VIP it
    /// captures: a client outside every range is not served.
    pub fn allows(&self, client: IpAddr) -> bool {
        // An IPv4 client on a dual-stack socket shows as ::ffff:a.b.c.d.
        let client = match client {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(client, IpAddr::V4),
            v4 => v4,
        };
        self.allowed_sources.is_empty() || self.allowed_sources.iter().any(|r| r.contains(client))
    }

    /// Round robin over the healthy backends; over all of them when none is
    /// healthy (failing open, as cloud load balancers do).
    pub fn pick(&self) -> Option<Arc<Backend>> {
        let n = self.backends.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| &self.backends[(start + i) % n])
            .find(|b| b.is_healthy())
            .or_else(|| self.backends.get(start % n))
            .cloned()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("cannot listen on {address}/{protocol}: {source}{hint}")]
    Bind {
        address: SocketAddr,
        protocol: Protocol,
        hint: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{address}/{protocol} is served for Service {owner}")]
    Taken {
        address: SocketAddr,
        protocol: Protocol,
        owner: String,
    },
    #[error(transparent)]
    Vip(#[from] crate::vip::VipError),
}

type ListenerKey = (SocketAddr, Protocol);

struct Listener {
    owner: String,
    targets: watch::Sender<Arc<Targets>>,
    /// Stops accepting when dropped; open connections carry on (drain).
    accept: tokio::task::AbortHandle,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Runtime settings a reload may change.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Settings {
    pub health_check: HealthCheck,
    pub udp_idle_timeout: Duration,
    /// How long an added VIP outlives a killed process (crate::vip).
    pub vip_lifetime: Duration,
    /// How often held VIPs are announced again; zero: only when added.
    pub garp_interval: Duration,
    pub tcp_idle_timeout: Duration,
    /// Per listener; new connections beyond it are closed at once.
    pub max_connections: usize,
    /// Per listener; datagrams of new flows beyond it are dropped.
    pub max_udp_flows: usize,
}

/// Every listener of this process.
pub struct DataPlane {
    listeners: tokio::sync::Mutex<HashMap<ListenerKey, Listener>>,
    health: HealthChecks,
    settings: watch::Sender<Settings>,
    health_settings: watch::Sender<HealthCheck>,
    vips: Vips,
    connections: Arc<AtomicUsize>,
}

impl std::fmt::Debug for DataPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataPlane").finish_non_exhaustive()
    }
}

impl DataPlane {
    pub fn new(settings: Settings, interface: &str) -> Self {
        let (health_settings, health_rx) = watch::channel(settings.health_check);
        Self {
            listeners: tokio::sync::Mutex::new(HashMap::new()),
            health: HealthChecks::new(health_rx),
            settings: watch::channel(settings).0,
            health_settings,
            vips: Vips::new(interface, settings.vip_lifetime, settings.garp_interval),
            connections: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Applies settings from a reloaded config: health checks pick them up
    /// on their next round, new UDP flows get the new idle timeout; a new
    /// interface takes over every VIP; a new VIP lifetime applies from the
    /// next renewal.
    pub async fn reconfigure(&self, settings: Settings, interface: &str) -> Result<(), ProxyError> {
        self.health_settings.send_replace(settings.health_check);
        self.settings.send_replace(settings);
        self.vips
            .reconfigure(interface, settings.vip_lifetime, settings.garp_interval)
            .await?;
        Ok(())
    }

    /// Open connections and UDP flows, for tests and metrics.
    pub fn open_connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Makes `owner`'s listeners exactly `frontends`: new ones bound, kept
    /// ones given their new backends, others closed (their connections drain).
    pub async fn apply(&self, owner: &str, frontends: &[Frontend]) -> Result<(), ProxyError> {
        let mut listeners = self.listeners.lock().await;
        for f in frontends {
            if let Some(l) = listeners.get(&(f.address, f.protocol))
                && l.owner != owner
            {
                return Err(ProxyError::Taken {
                    address: f.address,
                    protocol: f.protocol,
                    owner: l.owner.clone(),
                });
            }
        }
        let wanted: Vec<ListenerKey> = frontends.iter().map(|f| (f.address, f.protocol)).collect();
        let stale: Vec<ListenerKey> = listeners
            .iter()
            .filter(|(k, l)| l.owner == owner && !wanted.contains(k))
            .map(|(k, _)| *k)
            .collect();
        for key in stale {
            listeners.remove(&key);
            tracing::info!(service = owner, frontend = %key.0, protocol = %key.1, "closed listener; open connections drain");
            self.vips.release(key.0.ip()).await;
        }
        for f in frontends {
            let key = (f.address, f.protocol);
            let targets = Arc::new(self.targets(f, listeners.get(&key)));
            if let Some(l) = listeners.get(&key) {
                l.targets.send_replace(targets);
                continue;
            }
            self.vips.acquire(f.address.ip()).await?;
            match self.listen(owner, f, targets).await {
                Ok(listener) => {
                    tracing::info!(service = owner, frontend = %f.address, protocol = %f.protocol, backends = f.backends.len(), "listening");
                    listeners.insert(key, listener);
                }
                Err(e) => {
                    self.vips.release(f.address.ip()).await;
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Closes every listener of `owner`.
    pub async fn remove(&self, owner: &str) {
        self.apply(owner, &[])
            .await
            .expect("closing listeners cannot fail");
    }

    /// Closes every listener and gives up every VIP.
    pub async fn shutdown(&self) {
        let mut listeners = self.listeners.lock().await;
        for ((address, _), _) in listeners.drain() {
            self.vips.release(address.ip()).await;
        }
        self.vips.release_all().await;
    }

    /// The frontend's backends, reusing the health of those it already had.
    fn targets(&self, f: &Frontend, current: Option<&Listener>) -> Targets {
        let current = current.map(|l| l.targets.borrow().clone());
        let backends = f
            .backends
            .iter()
            .map(|spec| {
                let reuse = current.as_ref().and_then(|t| {
                    t.backends.iter().find(|b| {
                        b.address == spec.address
                            && b.health.as_ref().map(|h| h.check()) == spec.check
                    })
                });
                match reuse {
                    Some(b) => Arc::clone(b),
                    None => Arc::new(Backend {
                        address: spec.address,
                        health: spec.check.map(|c| self.health.get(c)),
                    }),
                }
            })
            .collect();
        Targets {
            backends,
            proxy_protocol: f.proxy_protocol && f.protocol == Protocol::Tcp,
            allowed_sources: f.allowed_sources.clone(),
            next: AtomicUsize::new(0),
        }
    }

    async fn listen(
        &self,
        owner: &str,
        f: &Frontend,
        targets: Arc<Targets>,
    ) -> Result<Listener, ProxyError> {
        let (tx, rx) = watch::channel(targets);
        let freebind = self.vips.managed();
        let bind_err = |source: std::io::Error| ProxyError::Bind {
            address: f.address,
            protocol: f.protocol,
            hint: if source.kind() == std::io::ErrorKind::AddrNotAvailable && !freebind {
                " (the address is not on this host: add it, or set loadBalancer.interface)"
            } else {
                ""
            },
            source,
        };
        let accept = match f.protocol {
            Protocol::Tcp => {
                let listener = tcp::bind(f.address, freebind).map_err(bind_err)?;
                tokio::spawn(tcp::serve(
                    listener,
                    rx,
                    self.settings.subscribe(),
                    Arc::clone(&self.connections),
                ))
            }
            Protocol::Udp => {
                let socket = udp::bind(f.address, freebind).map_err(bind_err)?;
                tokio::spawn(udp::serve(
                    socket,
                    rx,
                    self.settings.subscribe(),
                    Arc::clone(&self.connections),
                ))
            }
        };
        Ok(Listener {
            owner: owner.to_string(),
            targets: tx,
            accept: accept.abort_handle(),
        })
    }
}
