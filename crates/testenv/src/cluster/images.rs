//! The images every node has, built by `make testenv` (testenv/images.sh) as
//! OCI archives and imported into each node's containerd: nothing is pulled.
//! Their names point at a closed loopback port, so a pull that should never
//! happen fails at once instead of asking a resolver or a registry.

use std::path::{Path, PathBuf};

use crate::Error;

/// The sandbox image (containerd's `sandbox_image`).
pub const PAUSE: &str = "127.0.0.1:1/overcast/pause:1";
/// The workload: answers HTTP and UDP with `pod=… node=… client=…
/// proxy-source=…` (the PROXY v2 source, or `-`). Listens on :8080 unless
/// given `--listen`; `/healthz` answers `ok`. `/echo-server get URL` is an HTTP
/// client; busybox gives `sh` and `nc`.
pub const ECHO_SERVER: &str = "127.0.0.1:1/overcast/echo-server:1";

/// The archives under `bin_dir`, an error naming `make testenv` when one is missing.
pub(crate) fn archives(bin_dir: &Path) -> Result<Vec<PathBuf>, Error> {
    ["pause", "echo-server"]
        .iter()
        .map(|name| {
            let path = bin_dir.join("images").join(format!("{name}.tar"));
            if path.is_file() {
                Ok(path)
            } else {
                Err(Error::BinaryMissing {
                    name: "a node image",
                    path,
                })
            }
        })
        .collect()
}
