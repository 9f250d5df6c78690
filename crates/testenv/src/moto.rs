//! moto_server (the AWS emulator, from the project's .venv) on a free
//! loopback port, for tests of AWS code; killed on drop. It runs through
//! testenv/moto_server.py, which gives moto the one AWS behaviour the tests
//! rely on that it lacks (an idempotent CreateLoadBalancer).

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `MOTO_SERVER` overrides where moto_server is found.
pub const MOTO_SERVER_ENV: &str = "MOTO_SERVER";

#[derive(Debug)]
pub struct Moto {
    child: Child,
    url: String,
}

impl Moto {
    /// Starts moto_server and waits until it listens. Panics with the fix
    /// (`make venv`) when it is not installed: a missing emulator is a
    /// failure, never a skip.
    pub fn start() -> Moto {
        let bin = std::env::var_os(MOTO_SERVER_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| crate::workspace_root().join(".venv/bin/moto_server"));
        assert!(
            bin.is_file(),
            "{} missing: run `make venv` (part of `make test`)",
            bin.display()
        );
        // The venv's interpreter, beside its moto_server.
        let python = bin.with_file_name("python3");
        let launcher = crate::workspace_root().join("testenv/moto_server.py");
        // A second try on another port: a free port can be taken by another
        // process between the check and moto's bind. A try that fails is
        // killed and says what moto printed.
        let mut failures = Vec::new();
        for _ in 0..2 {
            let port = crate::free_port().expect("a free port");
            let log = std::env::temp_dir().join(format!("moto-{}-{port}.log", std::process::id()));
            let out = std::fs::File::create(&log).expect("moto's log file");
            let mut child = Command::new(&python)
                .arg(&launcher)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(out.try_clone().expect("moto's log file"))
                .stderr(out)
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("start {} {}: {e}", python.display(), launcher.display())
                });
            let deadline = Instant::now() + Duration::from_secs(45);
            let listening = loop {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    break true;
                }
                if Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
                    break false;
                }
                std::thread::sleep(Duration::from_millis(100));
            };
            if listening {
                let _ = std::fs::remove_file(&log);
                return Moto {
                    child,
                    url: format!("http://127.0.0.1:{port}"),
                };
            }
            let _ = child.kill();
            let status = child.wait().ok();
            let printed = std::fs::read_to_string(&log).unwrap_or_default();
            let _ = std::fs::remove_file(&log);
            failures.push(format!("port {port} ({status:?}): {printed}"));
        }
        panic!("moto_server did not listen: {}", failures.join("; "));
    }

    /// The endpoint URL (`AWS_ENDPOINT_URL`) for every service.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
