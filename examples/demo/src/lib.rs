//! What both demos (`make demo`, `make demo-lite`) do with the overcast-ccm they start.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// Stops the CCM when the demo ends, however it ends: SIGTERM first, so it
/// releases its lease and VIPs as in production, SIGKILL after 10 s.
#[derive(Debug)]
pub struct Stop(pub Child);

impl Drop for Stop {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// overcast-ccm with the local provider and `config`, against the cluster of
/// `kubeconfig`, its output in `log`; stopped when the returned value drops.
pub fn start(
    bin: &str,
    kubeconfig: &std::path::Path,
    config: &std::path::Path,
    log: &std::path::Path,
) -> std::io::Result<Stop> {
    let out = std::fs::File::create(log)?;
    let child = Command::new(bin)
        .args([
            format!("--kubeconfig={}", kubeconfig.display()),
            "--cloud-provider=local".into(),
            format!("--cloud-config={}", config.display()),
            "--configure-cloud-routes=false".into(),
            "--secure-port=0".into(),
        ])
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()?;
    Ok(Stop(child))
}
