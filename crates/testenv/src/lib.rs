//! A real Kubernetes control plane for tests, in the manner of controller-runtime's
//! envtest: etcd and kube-apiserver, built from upstream by `make testenv`, started
//! on free loopback ports in a private temporary directory.
//!
//! ```no_run
//! # async fn example() -> Result<(), overcast_testenv::Error> {
//! let plane = overcast_testenv::shared().await?; // one per test binary
//! let client = plane.client().await?;            // a client for *this* runtime
//! # Ok(()) }
//! ```
//!
//! Processes are torn down when the [`ControlPlane`] is dropped, when the test
//! binary exits (also after a failed test), and by the kernel if the test process
//! is killed (`PR_SET_PDEATHSIG`). A missing binary is an error naming
//! `make testenv`; nothing here ever skips a test.

mod certs;
pub mod cluster;
pub mod crash_proxy;
mod https;
pub use https::https_get;
mod moto;
mod ports;
mod process;
pub use cluster::{Cluster, ClusterOptions};
pub use crash_proxy::CrashProxy;
pub use moto::{MOTO_SERVER_ENV, Moto};
pub use ports::free_port;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, NodeSpec, Service, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::process::Supervised;

/// How long the apiserver may take to become ready. A cold start on a 2-core
/// machine takes 5–15 s; the margin is for a loaded CI machine.
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// Environment variable that overrides where the control plane binaries are.
pub const BIN_DIR_ENV: &str = "OVERCAST_TESTENV_BIN_DIR";
/// Environment variable that, when set to 1, keeps the temporary directory
/// (logs, certificates, kubeconfig) after the control plane stops.
pub const KEEP_ENV: &str = "OVERCAST_TESTENV_KEEP";

/// What can go wrong while starting or talking to the control plane.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "{name} not found at {path}: run `make testenv` to build the pinned control plane \
         (or set {BIN_DIR_ENV} to a directory holding kube-apiserver, etcd and kubectl)"
    )]
    BinaryMissing { name: &'static str, path: PathBuf },
    #[error("testenv: {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("testenv: generating certificates: {0}")]
    Certificates(#[from] rcgen::Error),
    #[error("testenv: {name} exited during start-up ({status}); last lines of {log}:\n{tail}")]
    Exited {
        name: String,
        status: std::process::ExitStatus,
        log: PathBuf,
        tail: String,
    },
    #[error(
        "testenv: kube-apiserver was not ready after {timeout:?} (last answer: {last}); last lines of {log}:\n{tail}"
    )]
    NotReady {
        timeout: Duration,
        last: String,
        log: PathBuf,
        tail: String,
    },
    #[error("testenv: building a client from {path}: {reason}")]
    Client { path: PathBuf, reason: String },
}

impl Error {
    fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }
}

/// Where `make testenv` puts the binaries: `<repo>/testenv/bin`, unless
/// [`BIN_DIR_ENV`] says otherwise.
pub fn bin_dir() -> PathBuf {
    match std::env::var_os(BIN_DIR_ENV) {
        Some(dir) => PathBuf::from(dir),
        None => workspace_root().join("testenv/bin"),
    }
}

/// The checkout this test runs from: found from the running package's
/// directory (cargo sets CARGO_MANIFEST_DIR when it runs tests and
/// examples), else from where this crate was compiled. Paths baked in at
/// compile time alone go stale: cargo shares a test binary between two
/// checkouts that use one target directory.
pub fn workspace_root() -> PathBuf {
    let is_root = |dir: &Path| dir.join("testenv/versions.env").is_file();
    if let Some(dir) = std::env::var_os("CARGO_MANIFEST_DIR")
        && let Some(root) = Path::new(&dir).ancestors().find(|d| is_root(d))
    {
        return root.to_path_buf();
    }
    let compiled = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    compiled.canonicalize().unwrap_or(compiled)
}

pub(crate) fn binary(dir: &Path, name: &'static str) -> Result<PathBuf, Error> {
    let path = dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::BinaryMissing { name, path })
    }
}

/// What [`ControlPlane::start_with`] adds to a default control plane.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// More cluster-admin users, each with a kubeconfig of its own
    /// ([`ControlPlane::user_kubeconfig_path`]); an audit log can then tell
    /// their requests apart.
    pub extra_users: Vec<String>,
    /// Extra kube-apiserver flags (e.g. an audit policy).
    pub apiserver_args: Vec<String>,
    /// Where the apiserver listens and what it advertises (the `kubernetes`
    /// Service's endpoint); loopback when unset. A [`Cluster`] sets its
    /// bridge's address, which its nodes' network namespaces can reach.
    pub bind_address: Option<std::net::Ipv4Addr>,
    /// Admit Pods with service-account tokens (the ServiceAccount admission
    /// plugin). Only where a controller-manager creates the accounts.
    pub service_accounts: bool,
}

/// A running etcd + kube-apiserver pair.
#[derive(Debug)]
pub struct ControlPlane {
    server: String,
    kubeconfig_path: PathBuf,
    kubectl_bin: PathBuf,
    dir_path: PathBuf,
    running: Mutex<Option<Running>>,
}

#[derive(Debug)]
struct Running {
    // Field order is drop order: the apiserver goes before its etcd, and the
    // directory goes last.
    apiserver: Supervised,
    etcd: Supervised,
    dir: tempfile::TempDir,
}

impl ControlPlane {
    /// Starts a fresh control plane of its own from [`bin_dir`]; it stops when dropped.
    pub async fn start() -> Result<ControlPlane, Error> {
        Self::start_from(&bin_dir()).await
    }

    /// Starts a fresh control plane from the binaries in `bin_dir`.
    pub async fn start_from(bin_dir: &Path) -> Result<ControlPlane, Error> {
        Self::start_with(bin_dir, &StartOptions::default()).await
    }

    /// Starts a fresh control plane with extra users and apiserver flags.
    pub async fn start_with(bin_dir: &Path, options: &StartOptions) -> Result<ControlPlane, Error> {
        let apiserver_bin = binary(bin_dir, "kube-apiserver")?;
        let etcd_bin = binary(bin_dir, "etcd")?;
        let kubectl_bin = binary(bin_dir, "kubectl")?;
        process::remove_stale_dirs(&scratch_root());
        let dir = tempfile::Builder::new()
            .prefix(&process::dir_prefix())
            .tempdir_in(scratch_root())
            .map_err(Error::io(
                "creating the control plane's temporary directory",
            ))?;
        let root = dir.path().to_path_buf();

        let address = options
            .bind_address
            .unwrap_or(std::net::Ipv4Addr::LOCALHOST);
        let pki = certs::generate(&root, &options.extra_users, address)?;
        let etcd_client_port = free_port()?;
        let etcd_peer_port = free_port()?;
        let secure_port = free_port()?;
        let etcd_url = format!("http://127.0.0.1:{etcd_client_port}");
        let peer_url = format!("http://127.0.0.1:{etcd_peer_port}");

        let mut etcd = Command::new(&etcd_bin);
        etcd.args([
            "--name=testenv".to_string(),
            format!("--data-dir={}", root.join("etcd").display()),
            format!("--listen-client-urls={etcd_url}"),
            format!("--advertise-client-urls={etcd_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=testenv={peer_url}"),
            // Test data is disposable: skip fsync, as envtest does.
            "--unsafe-no-fsync=true".to_string(),
            "--log-level=warn".to_string(),
        ]);
        let etcd = Supervised::spawn("etcd", etcd, &root.join("etcd.log"))?;

        let mut apiserver = Command::new(&apiserver_bin);
        apiserver.args([
            format!("--etcd-servers={etcd_url}"),
            format!("--bind-address={address}"),
            format!("--advertise-address={address}"),
            format!("--secure-port={secure_port}"),
            format!("--cert-dir={}", root.join("apiserver").display()),
            format!("--tls-cert-file={}", pki.serving_cert.display()),
            format!("--tls-private-key-file={}", pki.serving_key.display()),
            format!("--token-auth-file={}", pki.token_file.display()),
            "--authorization-mode=RBAC".to_string(),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".to_string(),
            format!(
                "--service-account-key-file={}",
                pki.service_account_public.display()
            ),
            format!(
                "--service-account-signing-key-file={}",
                pki.service_account_key.display()
            ),
            // Big enough for the scale benchmarks' thousands of Services.
            "--service-cluster-ip-range=10.96.0.0/12".to_string(),
            "--allow-privileged=true".to_string(),
            // `kubectl logs/exec` reach a kubelet by its InternalIP, never by a
            // hostname the machine's resolver would be asked for.
            "--kubelet-preferred-address-types=InternalIP".to_string(),
        ]);
        if !options.service_accounts {
            // No controller-manager runs, so no default ServiceAccount is ever created.
            apiserver.arg("--disable-admission-plugins=ServiceAccount");
        }
        apiserver.args(&options.apiserver_args);
        let apiserver = Supervised::spawn(
            "kube-apiserver",
            apiserver,
            &root.join("kube-apiserver.log"),
        )?;

        let server = format!("https://{address}:{secure_port}");
        let kubeconfig_path = root.join("kubeconfig");
        std::fs::write(
            &kubeconfig_path,
            kubeconfig(&server, &pki.ca_pem, &pki.token),
        )
        .map_err(Error::io(format!("writing {}", kubeconfig_path.display())))?;
        for (user, token) in &pki.extra_tokens {
            let path = root.join(format!("{user}.kubeconfig"));
            std::fs::write(&path, kubeconfig(&server, &pki.ca_pem, token))
                .map_err(Error::io(format!("writing {}", path.display())))?;
        }

        let plane = ControlPlane {
            server,
            kubeconfig_path,
            kubectl_bin,
            dir_path: root,
            running: Mutex::new(Some(Running {
                apiserver,
                etcd,
                dir,
            })),
        };
        plane.wait_ready().await?;
        Ok(plane)
    }

    async fn wait_ready(&self) -> Result<(), Error> {
        let client = self.client().await?;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            self.check_alive()?;
            let readyz = http::Request::get("/readyz")
                .body(Vec::new())
                .expect("static request");
            let last = match client.request_text(readyz).await {
                Ok(_) => {
                    // /readyz can pass a moment before the system namespaces exist.
                    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> =
                        kube::Api::all(client.clone());
                    match namespaces.get_opt("default").await {
                        Ok(Some(_)) => return Ok(()),
                        Ok(None) => "namespace default not created yet".to_string(),
                        Err(e) => e.to_string(),
                    }
                }
                Err(e) => e.to_string(),
            };
            if Instant::now() > deadline {
                let log = self.dir_path.join("kube-apiserver.log");
                return Err(Error::NotReady {
                    timeout: READY_TIMEOUT,
                    last,
                    tail: process::tail(&log),
                    log,
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Fails with the process's log when etcd or the apiserver has exited.
    fn check_alive(&self) -> Result<(), Error> {
        let mut guard = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(running) = guard.as_mut() {
            running.etcd.check_running()?;
            running.apiserver.check_running()?;
        }
        Ok(())
    }

    /// A client that talks to this control plane as cluster-admin
    /// (group system:masters). It belongs to the calling tokio runtime, so
    /// each test asks for its own.
    pub async fn client(&self) -> Result<kube::Client, Error> {
        let config = self.config().await?;
        kube::Client::try_from(config).map_err(|e| Error::Client {
            path: self.kubeconfig_path.clone(),
            reason: e.to_string(),
        })
    }

    /// The client configuration, for callers that tune it (timeouts, QPS).
    pub async fn config(&self) -> Result<kube::Config, Error> {
        install_crypto_provider();
        let client_err = |reason: String| Error::Client {
            path: self.kubeconfig_path.clone(),
            reason,
        };
        let kubeconfig =
            Kubeconfig::read_from(&self.kubeconfig_path).map_err(|e| client_err(e.to_string()))?;
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|e| client_err(e.to_string()))
    }

    /// Path of the kubeconfig of an extra user named in [`StartOptions`].
    pub fn user_kubeconfig_path(&self, user: &str) -> PathBuf {
        self.dir_path.join(format!("{user}.kubeconfig"))
    }

    /// Path of an admin kubeconfig for this control plane.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
    }

    /// The apiserver's URL, `https://127.0.0.1:<port>` (a [`Cluster`]'s: its bridge address).
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Process IDs of the apiserver and etcd while they run, for
    /// benchmarks that measure their CPU time.
    pub fn process_ids(&self) -> Option<(u32, u32)> {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running.as_ref().map(|r| (r.apiserver.id(), r.etcd.id()))
    }

    /// The cluster CA's certificate (PEM): it signed the apiserver's serving
    /// certificate.
    pub fn ca_path(&self) -> PathBuf {
        self.dir_path.join(certs::CA_FILE)
    }

    /// The service-account signing key (PEM), for a controller-manager's
    /// `--service-account-private-key-file`.
    pub fn service_account_key_path(&self) -> PathBuf {
        self.dir_path.join(certs::SERVICE_ACCOUNT_KEY_FILE)
    }

    /// The directory holding logs, certificates and the kubeconfig.
    pub fn dir(&self) -> &Path {
        &self.dir_path
    }

    /// A kubeconfig (in this control plane's directory) that authenticates
    /// as the ServiceAccount `namespace/name`, made here unless it exists:
    /// what a Pod running as it gets, for processes a test runs with exactly
    /// a manifest's rights.
    pub async fn service_account_kubeconfig(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<PathBuf, Error> {
        use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
        use k8s_openapi::api::core::v1::ServiceAccount;
        let what = || format!("a token for ServiceAccount {namespace}/{name}");
        let client = self.client().await?;
        let accounts: kube::Api<ServiceAccount> = kube::Api::namespaced(client, namespace);
        let failed = |e: kube::Error| Error::Io {
            what: what(),
            source: std::io::Error::other(e),
        };
        if accounts.get_opt(name).await.map_err(failed)?.is_none() {
            let account = ServiceAccount {
                metadata: kube::api::ObjectMeta {
                    name: Some(name.to_string()),
                    ..Default::default()
                },
                ..Default::default()
            };
            accounts
                .create(&kube::api::PostParams::default(), &account)
                .await
                .map_err(failed)?;
        }
        let request = TokenRequest {
            spec: TokenRequestSpec::default(),
            ..Default::default()
        };
        let token = accounts
            .create_token_request(name, &kube::api::PostParams::default(), &request)
            .await
            .map_err(failed)?
            .status
            .map(|s| s.token)
            .unwrap_or_default();
        let path = self
            .dir_path
            .join(format!("sa-{namespace}-{name}.kubeconfig"));
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: {}, certificate-authority: {}}}\nusers:\n- name: u\n  user: {{token: {token}}}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n",
                self.server(),
                self.ca_path().display()
            ),
        )
        .map_err(Error::io(format!("writing {}", path.display())))?;
        Ok(path)
    }

    /// A `kubectl` command already pointed at this control plane.
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new(&self.kubectl_bin);
        cmd.arg(format!("--kubeconfig={}", self.kubeconfig_path.display()));
        cmd
    }

    /// `kubectl apply -f -` of `manifest` (kubectl's output goes to this
    /// process's); an error names kubectl's exit status.
    pub fn kubectl_apply(&self, manifest: &str) -> Result<(), Error> {
        use std::io::Write as _;
        let what = || "kubectl apply -f -".to_string();
        let mut apply = self
            .kubectl()
            .args(["apply", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .map_err(Error::io(what()))?;
        let written = apply
            .stdin
            .take()
            .expect("stdin is piped")
            .write_all(manifest.as_bytes());
        let status = apply.wait().map_err(Error::io(what()))?;
        written.map_err(Error::io(what()))?;
        if status.success() {
            Ok(())
        } else {
            Err(Error::Io {
                what: what(),
                source: std::io::Error::other(format!("kubectl exited with {status}")),
            })
        }
    }

    /// Stops both processes and removes the directory (unless [`KEEP_ENV`] is
    /// set). Idempotent; also called on drop.
    pub fn stop(&self) {
        let running = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(Running {
            apiserver,
            etcd,
            dir,
        }) = running
        {
            drop(apiserver);
            drop(etcd);
            if std::env::var(KEEP_ENV).as_deref() == Ok("1") {
                let kept = dir.keep();
                // The marker keeps a later run's sweep of dead runs' directories off it.
                let _ = std::fs::write(kept.join(process::KEPT_MARKER), "");
                eprintln!("testenv: kept {}", kept.display());
            }
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The machine's busy and total CPU time since boot, in clock ticks, from
/// /proc/stat's `cpu` line: what the benchmarks take before and after a
/// phase to say how busy the machine was.
#[derive(Debug, Clone, Copy)]
pub struct MachineCpu {
    busy: u64,
    total: u64,
}

impl MachineCpu {
    pub fn now() -> Self {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let fields: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .filter_map(|f| f.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal.
        let total: u64 = fields.iter().take(8).sum();
        let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
        Self {
            busy: total - idle,
            total,
        }
    }

    /// The share of the machine's CPU time busy since `earlier` (0 to 1).
    pub fn busy_since(&self, earlier: &Self) -> f64 {
        (self.busy - earlier.busy) as f64 / (self.total - earlier.total).max(1) as f64
    }
}

/// Chooses rustls's ring provider for the process. When a build also links
/// aws-lc-rs (the AWS SDK does), rustls cannot choose by itself and every TLS
/// client would panic. Idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

static SHARED: tokio::sync::OnceCell<ControlPlane> = tokio::sync::OnceCell::const_new();

/// One control plane shared by every test in this test binary, started on
/// first use and stopped when the binary exits, whether its tests passed or not.
/// Tests that share it should use their own namespaces or object names.
pub async fn shared() -> Result<&'static ControlPlane, Error> {
    SHARED
        .get_or_try_init(|| async {
            let plane = ControlPlane::start().await?;
            process::stop_at_exit(stop_shared);
            Ok(plane)
        })
        .await
}

extern "C" fn stop_shared() {
    if let Some(plane) = SHARED.get() {
        plane.stop();
    }
}

/// Where temporary directories go: tmpfs (/dev/shm) when it is there and
/// writable, so etcd never touches a disk; the system temp dir otherwise.
fn scratch_root() -> PathBuf {
    let shm = Path::new("/dev/shm");
    let writable = shm.is_dir()
        && tempfile::Builder::new()
            .prefix(".overcast-probe-")
            .tempfile_in(shm)
            .is_ok();
    if writable {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

fn kubeconfig(server: &str, ca_pem: &str, token: &str) -> String {
    use base64::Engine as _;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let mut out = String::new();
    let _ = write!(
        out,
        "apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: testenv\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\n\
         users:\n\
         - name: admin\n  user:\n    token: {token}\n\
         contexts:\n\
         - name: testenv\n  context:\n    cluster: testenv\n    user: admin\n\
         current-context: testenv\n"
    );
    out
}

/// Polls `check` until it returns `Some`, and panics naming `what` after
/// `timeout`. For tests: bounds are generous, since a loaded 2-core CI machine
/// must not make them flake; timing goals belong in benchmarks.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    wait_until(what, timeout, check)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// What [`wait_until`] returns when `check` never answered.
#[derive(Debug, thiserror::Error)]
#[error("timed out after {timeout:?} waiting for: {what}")]
pub struct TimedOut {
    pub what: String,
    pub timeout: Duration,
}

/// Polls `check` every 100 ms until it returns `Some`; an error naming `what`
/// after `timeout`. For the demo and benchmarks, which report rather than panic.
pub async fn wait_until<T, F, Fut>(
    what: &str,
    timeout: Duration,
    mut check: F,
) -> Result<T, TimedOut>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            return Err(TimedOut {
                what: what.to_string(),
                timeout,
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the Service `name` has a load-balancer ingress IP; returns it.
pub async fn load_balancer_ip(
    services: &kube::Api<Service>,
    name: &str,
    timeout: Duration,
) -> Result<String, TimedOut> {
    wait_until(
        &format!("an ingress IP for Service {name}"),
        timeout,
        || async {
            services
                .get(name)
                .await
                .ok()?
                .status?
                .load_balancer?
                .ingress?
                .first()?
                .ip
                .clone()
        },
    )
    .await
}

/// Whether `node` still waits for a CCM (carries the uninitialized taint).
pub fn has_uninitialized_taint(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|t| {
            t.iter()
                .any(|t| t.key == overcast_cloud_provider::names::TAINT_UNINITIALIZED)
        })
}

/// A Node as a kubelet started with `--cloud-provider=external` registers
/// it: named, carrying the uninitialized taint, waiting for a CCM.
pub fn uninitialized_node(name: &str) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            taints: Some(vec![Taint {
                key: overcast_cloud_provider::names::TAINT_UNINITIALIZED.into(),
                value: Some("true".into()),
                effect: "NoSchedule".into(),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}
