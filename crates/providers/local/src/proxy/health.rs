//! Active health checks of backends, shared by every listener that checks the
//! same thing: a TCP connect to NodeIP:nodePort, or, for
//! externalTrafficPolicy: Local, kube-proxy's HTTP health check on
//! NodeIP:healthCheckNodePort (200 while the node has a ready endpoint), as
//! cloud load balancers do.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::config::HealthCheck;

/// What to check.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Check {
    Tcp(SocketAddr),
    /// GET /healthz, healthy on 200.
    Http(SocketAddr),
}

/// A backend's health, kept up to date by one task while anyone holds it.
#[derive(Debug)]
pub struct Health {
    check: Check,
    healthy: AtomicBool,
    task: tokio::task::AbortHandle,
}

impl Health {
    pub fn check(&self) -> Check {
        self.check
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// A connection to the backend failed: take it out now; the checker
    /// brings it back after enough successes.
    pub fn mark_failed(&self) {
        if self.healthy.swap(false, Ordering::Relaxed) {
            tracing::info!(check = ?self.check, "backend failed a connection; taken out");
        }
    }
}

impl Drop for Health {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Hands out one [`Health`] per check.
#[derive(Debug)]
pub struct HealthChecks {
    settings: watch::Receiver<HealthCheck>,
    running: Mutex<HashMap<Check, Weak<Health>>>,
}

impl HealthChecks {
    pub fn new(settings: watch::Receiver<HealthCheck>) -> Self {
        Self {
            settings,
            running: Mutex::new(HashMap::new()),
        }
    }

    /// The shared health of `check`, starting its checker when new.
    /// A new backend starts healthy, so it takes traffic at once.
    pub fn get(&self, check: Check) -> Arc<Health> {
        let mut running = self.running.lock().expect("health map lock");
        if let Some(health) = running.get(&check).and_then(Weak::upgrade) {
            return health;
        }
        running.retain(|_, w| w.strong_count() > 0);
        let health = Arc::new_cyclic(|weak: &Weak<Health>| {
            let task = tokio::spawn(run_checks(check, weak.clone(), self.settings.clone()));
            Health {
                check,
                healthy: AtomicBool::new(true),
                task: task.abort_handle(),
            }
        });
        running.insert(check, Arc::downgrade(&health));
        health
    }
}

async fn run_checks(check: Check, health: Weak<Health>, settings: watch::Receiver<HealthCheck>) {
    let (mut successes, mut failures) = (0u32, 0u32);
    loop {
        let s = *settings.borrow();
        tokio::time::sleep(s.interval).await;
        let ok = probe(check, s.timeout).await;
        let Some(health) = health.upgrade() else {
            return;
        };
        if ok {
            successes += 1;
            failures = 0;
            if successes >= s.healthy_threshold && !health.healthy.swap(true, Ordering::Relaxed) {
                tracing::info!(?check, "backend passed its health checks; back in");
            }
        } else {
            failures += 1;
            successes = 0;
            if failures >= s.unhealthy_threshold && health.healthy.swap(false, Ordering::Relaxed) {
                tracing::info!(?check, "backend failed its health checks; taken out");
            }
        }
    }
}

/// One probe, within `timeout`.
pub async fn probe(check: Check, timeout: Duration) -> bool {
    let attempt = async {
        match check {
            Check::Tcp(addr) => TcpStream::connect(addr).await.is_ok(),
            Check::Http(addr) => http_ok(addr).await.unwrap_or(false),
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or(false)
}

async fn http_ok(addr: SocketAddr) -> std::io::Result<bool> {
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!(
        "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: overcast-local-lb\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut head = [0u8; 16];
    let mut read = 0;
    while read < 12 {
        let n = stream.read(&mut head[read..]).await?;
        if n == 0 {
            break;
        }
        read += n;
    }
    // "HTTP/1.x 200"
    Ok(read >= 12 && head.starts_with(b"HTTP/1.") && &head[8..12] == b" 200")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn http_check_wants_200_from_healthz() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            for status in ["200 OK", "503 Service Unavailable"] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 256];
                let n = s.read(&mut buf).await.unwrap();
                assert!(buf[..n].starts_with(b"GET /healthz HTTP/1.1\r\n"));
                let reply = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n");
                s.write_all(reply.as_bytes()).await.unwrap();
            }
        });
        let t = Duration::from_secs(2);
        assert!(probe(Check::Http(addr), t).await);
        assert!(!probe(Check::Http(addr), t).await);
        server.await.unwrap();
        // Nobody listening any more.
        assert!(!probe(Check::Tcp(addr), t).await);
    }
}
