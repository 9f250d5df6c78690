//! Runs overcast-ccm (or another CCM binary) as a process against a real
//! control plane.
#![allow(dead_code)]

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Service};
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};

pub const SOON: Duration = Duration::from_secs(45);

pub fn free_port() -> u16 {
    overcast_testenv::free_port().expect("a free loopback port")
}

/// A control plane and a `--cloud-config` file for one provider, in a
/// scratch directory that the CCM processes started from it share.
pub struct CloudEnv {
    pub plane: overcast_testenv::ControlPlane,
    pub client: Client,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    provider: &'static str,
}

impl CloudEnv {
    pub async fn start(provider: &'static str, file_name: &str, config: &str) -> CloudEnv {
        Self::start_with(provider, file_name, config, &Default::default()).await
    }

    /// As [`CloudEnv::start`], with a control plane started with `options`.
    pub async fn start_with(
        provider: &'static str,
        file_name: &str,
        config: &str,
        options: &overcast_testenv::StartOptions,
    ) -> CloudEnv {
        let plane =
            overcast_testenv::ControlPlane::start_with(&overcast_testenv::bin_dir(), options)
                .await
                .expect("control plane (run `make testenv`)");
        let client = plane.client().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join(file_name);
        std::fs::write(&config_path, config).unwrap();
        CloudEnv {
            plane,
            client,
            dir,
            config: config_path,
            provider,
        }
    }

    /// overcast-ccm with this provider and config file, and `extra` flags.
    pub fn ccm(&self, extra: &[&str]) -> Ccm {
        self.ccm_with_env(extra, &[])
    }

    /// As [`CloudEnv::ccm`], with extra environment variables.
    pub fn ccm_with_env(&self, extra: &[&str], vars: &[(&str, &str)]) -> Ccm {
        let mut args = vec![
            format!("--cloud-provider={}", self.provider),
            format!("--cloud-config={}", self.config.display()),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Ccm::start_with_env(
            env!("CARGO_BIN_EXE_overcast-ccm"),
            self.plane.kubeconfig_path(),
            self.dir.path(),
            &args,
            vars,
        )
    }
}

impl CloudEnv {
    /// The flags that point overcast-ccm at this provider, config and
    /// control plane, in this order.
    pub fn provider_flags(&self) -> Vec<String> {
        vec![
            format!("--cloud-provider={}", self.provider),
            format!("--cloud-config={}", self.config.display()),
            format!("--kubeconfig={}", self.plane.kubeconfig_path().display()),
        ]
    }
}

/// Runs `overcast-ccm migrate check` with `flags` and extra environment
/// variables to its end: (exit code, stdout, stderr).
pub fn migrate_check(flags: &[String], vars: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_overcast-ccm"))
        .args(["migrate", "check"])
        .args(flags)
        .envs(vars.iter().copied())
        .output()
        .expect("run overcast-ccm migrate check");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A CCM process; killed when dropped.
pub struct Ccm {
    pub child: Child,
    pub port: u16,
    pub log: PathBuf,
}

impl Ccm {
    /// Starts `binary` with fast leader-election timings, plain HTTP on a free
    /// port, and `extra` flags.
    pub fn start(binary: &str, kubeconfig: &Path, dir: &Path, extra: &[&str]) -> Ccm {
        Self::start_with_env(binary, kubeconfig, dir, extra, &[])
    }

    /// As [`Ccm::start`], with extra environment variables.
    pub fn start_with_env(
        binary: &str,
        kubeconfig: &Path,
        dir: &Path,
        extra: &[&str],
        envs: &[(&str, &str)],
    ) -> Ccm {
        let port = free_port();
        let log = dir.join(format!("ccm-{port}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(binary)
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .args([
                "--secure-port=0",
                "--bind-address=127.0.0.1",
                &format!("--insecure-port={port}"),
                "--leader-elect-lease-duration=4s",
                "--leader-elect-renew-deadline=3s",
                "--leader-elect-retry-period=500ms",
                "--node-monitor-period=500ms",
                "--configure-cloud-routes=false",
            ])
            .args(extra)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start the CCM binary");
        Ccm { child, port, log }
    }

    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.port, path)
    }

    /// leader_election_master_status for the main lease, from /metrics.
    pub fn is_leader(&self) -> bool {
        self.get("/metrics").is_some_and(|(_, body)| {
            body.lines()
                .any(|l| l == "leader_election_master_status{name=\"cloud-controller-manager\"} 1")
        })
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "CCM did not exit; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Ccm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A bare HTTP/1.0 GET on loopback.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

#[allow(unused_imports)] // Not every test binary serves HTTPS.
pub use overcast_testenv::https_get;

pub use overcast_testenv::eventually;

/// A Node's status addresses as (type, address) pairs.
pub fn node_addresses(node: &Node) -> Vec<(String, String)> {
    node.status
        .iter()
        .flat_map(|s| s.addresses.iter().flatten())
        .map(|a| (a.type_.clone(), a.address.clone()))
        .collect()
}

/// The service controller's cleanup finalizer and `ingress` as the status:
/// a Service as the controller serving it (an incumbent) leaves it.
pub async fn served_as_by_an_incumbent(
    services: &Api<Service>,
    name: &str,
    ingress: serde_json::Value,
) {
    let params = kube::api::PatchParams::default();
    let finalizers = serde_json::json!({"metadata": {"finalizers": ["service.kubernetes.io/load-balancer-cleanup"]}});
    services
        .patch(name, &params, &kube::api::Patch::Merge(finalizers))
        .await
        .unwrap();
    let status = serde_json::json!({"status": {"loadBalancer": {"ingress": [ingress]}}});
    services
        .patch_status(name, &params, &kube::api::Patch::Merge(status))
        .await
        .unwrap();
}

/// Deletes a Service and waits until it is gone, which takes the CCM
/// removing its finalizer once the balancer is gone.
pub async fn delete_service_and_wait(services: &Api<Service>, name: &str) {
    services
        .delete(name, &DeleteParams::default())
        .await
        .unwrap();
    service_gone(services, name).await;
}

/// Waits until the Service `name` is gone (its finalizer removed).
pub async fn service_gone(services: &Api<Service>, name: &str) {
    eventually(
        &format!("Service {name} gone (finalizer removed)"),
        SOON,
        || async {
            services
                .get_opt(name)
                .await
                .unwrap()
                .is_none()
                .then_some(())
        },
    )
    .await;
}

pub async fn create_tainted_node(client: &Client, name: &str) {
    let node = overcast_testenv::uninitialized_node(name);
    Api::<Node>::all(client.clone())
        .create(&PostParams::default(), &node)
        .await
        .expect("create node");
}

pub async fn initialised(client: &Client, name: &str) -> Node {
    let nodes: Api<Node> = Api::all(client.clone());
    eventually(&format!("node {name} initialised"), SOON, || {
        let nodes = nodes.clone();
        async move {
            let n = nodes.get(name).await.ok()?;
            (!overcast_testenv::has_uninitialized_taint(&n)).then_some(n)
        }
    })
    .await
}

pub async fn is_tainted(client: &Client, name: &str) -> bool {
    let n = Api::<Node>::all(client.clone()).get(name).await.unwrap();
    overcast_testenv::has_uninitialized_taint(&n)
}

/// Runs the `helm` that `make testenv` built; its stdout.
pub fn helm(args: &[&str]) -> String {
    let out = helm_output(args);
    assert!(
        out.status.success(),
        "helm {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// helm's output, successful or not.
pub fn helm_output(args: &[&str]) -> std::process::Output {
    let bin = overcast_testenv::bin_dir().join("helm");
    std::process::Command::new(&bin)
        .args(args)
        // No repositories, plugins or caches of the machine's user.
        .env(
            "HELM_CACHE_HOME",
            std::env::temp_dir().join("overcast-helm-cache"),
        )
        .env(
            "HELM_CONFIG_HOME",
            std::env::temp_dir().join("overcast-helm-config"),
        )
        .env(
            "HELM_DATA_HOME",
            std::env::temp_dir().join("overcast-helm-data"),
        )
        .output()
        .unwrap_or_else(|e| panic!("{} (run `make testenv`): {e}", bin.display()))
}

/// Runs kubectl against `plane` and returns its stdout; panics with its
/// stderr when it fails.
pub fn kubectl(plane: &overcast_testenv::ControlPlane, args: &[&str]) -> String {
    let out = plane.kubectl().args(args).output().expect("run kubectl");
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Who holds the Lease `lease` in kube-system (`None`: nobody, or released).
pub async fn holder(client: &Client, lease: &str) -> Option<String> {
    Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(client.clone(), "kube-system")
        .get_opt(lease)
        .await
        .ok()??
        .spec?
        .holder_identity
        .filter(|h| !h.is_empty())
}

/// An upstream Go component (a controller manager) with its output in a log
/// file; SIGKILLed when dropped.
pub struct Upstream {
    pub child: Child,
    pub log: PathBuf,
}

impl Upstream {
    /// Starts `bin` with `args` and `envs`, its output in `dir`/`name`.log;
    /// a missing binary fails naming `fix`.
    pub fn spawn(
        bin: &Path,
        args: &[String],
        envs: &[(&str, &str)],
        dir: &Path,
        name: &str,
        fix: &str,
    ) -> Self {
        assert!(bin.is_file(), "{} missing: run `{fix}`", bin.display());
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(bin)
            .args(args)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
        Upstream { child, log }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
