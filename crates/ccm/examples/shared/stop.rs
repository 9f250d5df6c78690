//! What both demos do with the overcast-ccm they start.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// Stops the CCM when the demo ends, however it ends: SIGTERM first, so it
/// releases its lease and VIPs as in production, SIGKILL after 10 s.
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
