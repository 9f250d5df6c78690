//! Generates the CSI gRPC types and services from the spec's csi.proto.
//!
//! The proto is not vendored: it comes from the spec's Go module through the
//! Go module proxy (the same module csi-sanity is built against), or from
//! OVERCAST_CSI_PROTO. protox compiles it, so no system protoc is needed.
use std::{path::PathBuf, process::Command};

/// The CSI spec release the driver implements (the one Kubernetes v1.34's kubelet speaks).
const CSI_SPEC_MODULE: &str = "github.com/container-storage-interface/spec@v1.9.0";

fn main() {
    println!("cargo:rerun-if-env-changed=OVERCAST_CSI_PROTO");
    println!("cargo:rerun-if-changed=build.rs");
    let proto = match std::env::var_os("OVERCAST_CSI_PROTO") {
        Some(path) => PathBuf::from(path),
        None => spec_from_go_module().unwrap_or_else(|e| {
            panic!("overcast-csi needs the CSI spec's csi.proto: {e}. Install Go (the module proxy must be reachable, or the module in the Go module cache), or set OVERCAST_CSI_PROTO to a csi.proto of {CSI_SPEC_MODULE}")
        }),
    };
    println!("cargo:rerun-if-changed={}", proto.display());
    let include = proto
        .parent()
        .expect("csi.proto has a directory")
        .to_path_buf();
    let files = protox::compile([&proto], [&include])
        .unwrap_or_else(|e| panic!("compiling {}: {e}", proto.display()));
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(files)
        .unwrap_or_else(|e| panic!("generating the CSI services from {}: {e}", proto.display()));
}

/// `go mod download -json` of the spec module: its directory in the module cache.
fn spec_from_go_module() -> Result<PathBuf, String> {
    let out = Command::new("go")
        .args(["mod", "download", "-json", CSI_SPEC_MODULE])
        .env("GOFLAGS", "-mod=mod")
        .env("GOTOOLCHAIN", "local")
        .output()
        .map_err(|e| format!("running `go mod download {CSI_SPEC_MODULE}`: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "`go mod download {CSI_SPEC_MODULE}` failed: {}{}",
            text.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    // The output is one JSON object; its "Dir" is the unpacked module.
    let dir = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("\"Dir\": \""))
        .and_then(|l| l.strip_suffix("\","))
        .ok_or_else(|| format!("`go mod download {CSI_SPEC_MODULE}` printed no Dir: {text}"))?;
    let proto = PathBuf::from(dir).join("csi.proto");
    if proto.is_file() {
        Ok(proto)
    } else {
        Err(format!("{} is missing", proto.display()))
    }
}
