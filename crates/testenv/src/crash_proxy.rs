//! A crash at the worst moment, on demand: an HTTP/1.1 proxy in front of a
//! cloud emulator (moto) that SIGKILLs a process right after the emulator
//! has carried out a chosen API action, before the answer reaches the
//! caller. The call took effect; the caller never learns it. Tests use it
//! to show that a restart converges with nothing leaked or made twice.
//!
//! Actions are read as the AWS query protocol sends them (`Action=` in a
//! form body) or from `X-Amz-Target` (JSON protocols).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Requests larger than this are refused (the emulator's are small).
const MAX_MESSAGE: usize = 16 << 20;

#[derive(Debug, Default)]
struct State {
    /// (action, pid): kill `pid` after the next `action`.
    armed: Option<(String, u32)>,
    fired: Option<String>,
    seen: Vec<String>,
}

/// See the module documentation.
#[derive(Debug)]
pub struct CrashProxy {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl CrashProxy {
    /// Listens on a free loopback port and forwards to `upstream`
    /// (`http://host:port`).
    pub async fn start(upstream: &str) -> std::io::Result<CrashProxy> {
        let upstream: SocketAddr = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .map_err(|e| std::io::Error::other(format!("upstream {upstream:?}: {e}")))?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State::default()));
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(relay(client, upstream, Arc::clone(&shared)));
            }
        });
        Ok(CrashProxy { addr, state, task })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// SIGKILLs `pid` once the emulator has answered the next `action`.
    pub fn arm(&self, action: &str, pid: u32) {
        let mut state = self.lock();
        state.armed = Some((action.to_string(), pid));
        state.fired = None;
    }

    /// The action after which the kill happened, if it has.
    pub fn fired(&self) -> Option<String> {
        self.lock().fired.clone()
    }

    /// Every action seen so far, in order.
    pub fn actions(&self) -> Vec<String> {
        self.lock().seen.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for CrashProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One client connection: request by request, each on a fresh upstream
/// connection.
async fn relay(mut client: TcpStream, upstream: SocketAddr, state: Arc<Mutex<State>>) {
    let mut buffered = Vec::new();
    loop {
        let Some((head, body)) = read_message(&mut client, &mut buffered).await else {
            return;
        };
        let action = action_of(&head, &body);
        let Ok(mut server) = TcpStream::connect(upstream).await else {
            return;
        };
        let request = [close_connection(&head).as_bytes(), &body].concat();
        if server.write_all(&request).await.is_err() {
            return;
        }
        let mut response = Vec::new();
        if server.read_to_end(&mut response).await.is_err() {
            return;
        }
        let kill = {
            let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(a) = &action {
                s.seen.push(a.clone());
            }
            match (&s.armed, &action) {
                (Some((armed, pid)), Some(a)) if armed == a => {
                    let pid = *pid;
                    s.fired = Some(a.clone());
                    s.armed = None;
                    Some(pid)
                }
                _ => None,
            }
        };
        if let Some(pid) = kill {
            // SAFETY: kill(2) on a pid the test gave us.
            #[allow(unsafe_code)]
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
            return;
        }
        if client.write_all(&response).await.is_err() {
            return;
        }
        // A response that ends only with its connection cannot be followed
        // by another on this one.
        let head_end = find(&response, b"\r\n\r\n").unwrap_or(response.len());
        let head = String::from_utf8_lossy(&response[..head_end]).to_ascii_lowercase();
        if !head.contains("content-length:") && !head.contains("transfer-encoding:") {
            return;
        }
    }
}

/// Reads one request: its head (as text, without the blank line's end) and
/// its body (Content-Length only: what SDK clients send).
async fn read_message(stream: &mut TcpStream, buffered: &mut Vec<u8>) -> Option<(String, Vec<u8>)> {
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = find(buffered, b"\r\n\r\n") {
            break i + 4;
        }
        if buffered.len() > MAX_MESSAGE {
            return None;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffered.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffered[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    if length > MAX_MESSAGE {
        return None;
    }
    while buffered.len() < head_end + length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffered.extend_from_slice(&chunk[..n]);
    }
    let body = buffered[head_end..head_end + length].to_vec();
    buffered.drain(..head_end + length);
    Some((head, body))
}

/// The head with `Connection: close`, so the upstream answer ends with its
/// connection.
fn close_connection(head: &str) -> String {
    let mut out = String::new();
    for line in head.trim_end_matches("\r\n").split("\r\n") {
        let is_connection = line
            .split_once(':')
            .is_some_and(|(n, _)| n.eq_ignore_ascii_case("connection"));
        if !is_connection {
            out += line;
            out += "\r\n";
        }
    }
    out + "Connection: close\r\n\r\n"
}

/// The API action of a request: `Action=` of a query-protocol form body, or
/// the operation of `X-Amz-Target: Service.Operation`.
pub fn action_of(head: &str, body: &[u8]) -> Option<String> {
    let target = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("x-amz-target")
            .then(|| value.trim().rsplit('.').next().map(str::to_string))?
    });
    target.or_else(|| {
        String::from_utf8_lossy(body)
            .split('&')
            .find_map(|pair| pair.strip_prefix("Action=").map(str::to_string))
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_from_query_bodies_and_targets() {
        assert_eq!(
            action_of(
                "POST / HTTP/1.1\r\n",
                b"Action=DeleteLoadBalancer&Version=2015-12-01"
            ),
            Some("DeleteLoadBalancer".into())
        );
        assert_eq!(
            action_of(
                "POST / HTTP/1.1\r\nX-Amz-Target: AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken\r\n",
                b"{}"
            ),
            Some("GetAuthorizationToken".into())
        );
        assert_eq!(action_of("GET / HTTP/1.1\r\n", b""), None);
    }

    #[test]
    fn the_upstream_request_closes_its_connection() {
        let head =
            "POST / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\nContent-Length: 3\r\n\r\n";
        assert_eq!(
            close_connection(head),
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\n"
        );
    }
}
