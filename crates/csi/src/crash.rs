//! Crash points for the crash-safety tests: `OVERCAST_CSI_CRASH_AT=NAME`
//! makes the process abort (no destructors, no flushing: what a kill -9 or
//! a power cut leaves) when it reaches the point NAME. Unset, each point
//! costs one comparison.

use std::sync::OnceLock;

pub const ENV: &str = "OVERCAST_CSI_CRASH_AT";

pub fn point(name: &str) {
    static AT: OnceLock<Option<String>> = OnceLock::new();
    if AT.get_or_init(|| std::env::var(ENV).ok()).as_deref() == Some(name) {
        eprintln!("overcast-csi: crash point {name} reached ({ENV}): aborting");
        std::process::abort();
    }
}
