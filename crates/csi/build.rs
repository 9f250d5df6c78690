//! Generates the gRPC types and services of the CSI spec (csi.proto) and of
//! the kubelet's plugin registration (pluginregistration/v1/api.proto).
//!
//! The protos are not vendored: each comes from its Go module through the Go
//! module proxy (or the module cache), or from the file an environment
//! variable names. protox compiles them, so no system protoc is needed.
use std::{path::PathBuf, process::Command};

/// (module@version, file in it, variable that overrides it)
type Proto = (&'static str, &'static str, &'static str);

/// The CSI spec release the driver implements (the one Kubernetes v1.34's kubelet speaks).
const CSI_SPEC: Proto = (
    "github.com/container-storage-interface/spec@v1.9.0",
    "csi.proto",
    "OVERCAST_CSI_PROTO",
);
/// The kubelet's plugin registration API, of the pinned Kubernetes release.
const PLUGIN_REGISTRATION: Proto = (
    "k8s.io/kubelet@v0.34.4",
    "pkg/apis/pluginregistration/v1/api.proto",
    "OVERCAST_PLUGINREGISTRATION_PROTO",
);

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    for (module, file, env) in [CSI_SPEC, PLUGIN_REGISTRATION] {
        println!("cargo:rerun-if-env-changed={env}");
        let proto = match std::env::var_os(env) {
            Some(path) => PathBuf::from(path),
            None => from_go_module(module, file).unwrap_or_else(|e| {
                panic!(
                    "overcast-csi needs {file} of {module}: {e}. Install Go (the module proxy must be reachable, or the module in the Go module cache), or set {env} to that file"
                )
            }),
        };
        println!("cargo:rerun-if-changed={}", proto.display());
        let include = proto
            .parent()
            .expect("a proto has a directory")
            .to_path_buf();
        let files = protox::compile([&proto], [&include])
            .unwrap_or_else(|e| panic!("compiling {}: {e}", proto.display()));
        tonic_prost_build::configure()
            .build_client(true)
            .build_server(true)
            .compile_fds(files)
            .unwrap_or_else(|e| panic!("generating the services of {}: {e}", proto.display()));
    }
}

/// `go mod download -json` of a module: `file` in its directory in the module cache.
fn from_go_module(module: &str, file: &str) -> Result<PathBuf, String> {
    let out = Command::new("go")
        .args(["mod", "download", "-json", module])
        .env("GOFLAGS", "-mod=mod")
        .env("GOTOOLCHAIN", "local")
        .output()
        .map_err(|e| format!("running `go mod download {module}`: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "`go mod download {module}` failed: {}{}",
            text.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    // The output is one JSON object; its "Dir" is the unpacked module.
    let dir = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("\"Dir\": \""))
        .and_then(|l| l.strip_suffix("\","))
        .ok_or_else(|| format!("`go mod download {module}` printed no Dir: {text}"))?;
    let proto = PathBuf::from(dir).join(file);
    if proto.is_file() {
        Ok(proto)
    } else {
        Err(format!("{} is missing", proto.display()))
    }
}
