//! The cloud-controller-manager's run: provider, client, serving, leader
//! election (and migration), controllers, shutdown.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use anyhow::{Context as _, bail};
use kube::config::{KubeConfigOptions, Kubeconfig};
use overcast_cloud_provider::names::controllers::*;
use overcast_cloud_provider::{
    CloudError, CloudProvider, ClusterAccess, EventRecorder, ProviderContext, ProviderRegistry,
};
use overcast_controllers::Context;
use overcast_controllers::events::Recorder;
use overcast_controllers::node::{NodeController, NodeControllerConfig};
use overcast_controllers::node_ipam::NodeIpamController;
use overcast_controllers::node_lifecycle::{NodeLifecycleConfig, NodeLifecycleController};
use overcast_controllers::provider_node::ProviderNodeController;
use overcast_controllers::route::{RouteController, RouteControllerConfig};
use overcast_controllers::service::{ServiceController, ServiceControllerConfig};

use crate::client_metrics::ClientMetricsLayer;
use crate::controllers::{KNOWN, short_name};
use crate::delegation::{CacheTtls, Gate, parse_always_allow};
use crate::leader::{LeaseLock, Timings, identity};
use crate::migration::{MigrationConfig, Placement};
use crate::options::Config;
use crate::ratelimit::RateLimitLayer;
use crate::serve::{Health, bind, tls_config};
use crate::shadow;

static RUNNING_CONTROLLERS: LazyLock<prometheus::IntGaugeVec> = LazyLock::new(|| {
    prometheus::IntGaugeVec::new(
        prometheus::Opts::new(
            "running_managed_controllers",
            "Indicates where instances of a controller are currently running",
        ),
        &["name", "manager"],
    )
    .expect("a valid metric")
});

/// The registry /metrics serves, made for this run: upstream's metrics by
/// upstream's names, and `<prefix>_shadow_divergences` under the binary's
/// own prefix. Nothing goes to prometheus' default registry, so a vendor's
/// code may register any name there; a provider registers its own here
/// through its [`ProviderContext`].
fn metrics_registry(
    shadow: Option<&prometheus::IntGaugeVec>,
) -> anyhow::Result<prometheus::Registry> {
    let registry = prometheus::Registry::new();
    overcast_controllers::metrics::register(&registry)?;
    let mut ours = crate::client_metrics::collectors();
    ours.push(Box::new(RUNNING_CONTROLLERS.clone()));
    ours.push(Box::new(crate::leader::MASTER_STATUS.clone()));
    ours.push(Box::new(crate::leader::SLOWPATH.clone()));
    if let Some(gauge) = shadow {
        ours.push(Box::new(gauge.clone()));
    }
    overcast_cloud_provider::metrics::register_all(&registry, ours)?;
    Ok(registry)
}

pub const MANAGER: &str = "cloud-controller-manager";

/// Runs until a signal (Ok) or a lost lease / fatal error (Err).
pub async fn run(config: Config, registry: &ProviderRegistry) -> anyhow::Result<()> {
    let opts = &config.options;
    let mut cloud = registry
        .init(&opts.cloud_provider, opts.cloud_config.as_deref())
        .map_err(anyhow::Error::new)?;
    if opts.shadow_report.is_some() && !opts.shadow {
        bail!("--shadow-report needs --shadow");
    }
    let mut shadow_report = None;
    let shadow_gauge = opts
        .shadow
        .then(|| shadow::divergences_gauge(&binary().metrics_prefix));
    let metrics = metrics_registry(shadow_gauge.as_ref())?;
    if let Some(gauge) = shadow_gauge {
        let report = Arc::new(shadow::Report::new(opts.shadow_report.clone(), gauge));
        let _ = SHADOW.set(Arc::clone(&report));
        shadow_report = Some(Arc::clone(&report));
        cloud = Arc::new(shadow::cloud::ShadowCloud::new(cloud, report));
        tracing::warn!(
            "shadow mode: no Lease is taken and nothing is changed; the writes the controllers would make are reported"
        );
    }
    if !cloud.has_cluster_id() {
        if opts.allow_untagged_cloud {
            tracing::warn!(
                "detected a cluster without a ClusterID; a ClusterID will be required in the future"
            );
        } else {
            bail!(
                "no ClusterID found; a ClusterID is required for the cloud provider to function properly (--allow-untagged-cloud to start anyway)"
            );
        }
    }
    if opts.leader_migration_config.is_some() && !opts.enable_leader_migration {
        tracing::warn!("--leader-migration-config is ignored without --enable-leader-migration");
    }
    let migration = if opts.enable_leader_migration && opts.leader_elect && !opts.shadow {
        Some(match &opts.leader_migration_config {
            Some(path) => MigrationConfig::load(path).map_err(anyhow::Error::msg)?,
            None => MigrationConfig::default_config(),
        })
    } else {
        None
    };
    let source = match &opts.leader_migration_config {
        Some(path) => format!("--leader-migration-config={}", path.display()),
        None => "the default leader migration configuration (upstream's)".to_string(),
    };
    for warning in migration.iter().flat_map(MigrationConfig::misnamed) {
        tracing::warn!("{source}: {warning}");
    }
    let route_wanted = config.selection.is_enabled(NODE_ROUTE)
        && opts.configure_cloud_routes
        && cloud.routes().is_some();
    if route_wanted && config.cluster_cidrs.is_empty() {
        bail!(
            "--cluster-cidr must be set: the route controller runs (--configure-cloud-routes=true and the provider has routes); set --configure-cloud-routes=false to run without it"
        );
    }

    if let Some(path) = &opts.cloud_config {
        watch_cloud_config(Arc::clone(&cloud), path.clone());
    }
    // Signals are watched from the start, so one during start-up is not lost.
    let mut shutdown = Shutdown::install()?;
    let client_config = client_config(opts).await?;
    // The shared informers' client.
    let client = limited_client(&client_config, opts, "shared-informers")?;
    // The Leases get a client of their own: renewals never wait behind
    // controller traffic in the rate limiter (as client-go's lock client).
    let lease_client = client_with(client_config.clone(), None, "leader-election")?;
    let health = Arc::new(Health::serving(metrics));
    health.set_configz(&crate::configz::body(opts, migration.as_ref()));
    serve(&config, &health, &client_config).await?;
    if let Some(report) = shadow_report {
        let plain = kube::Client::try_from(client_config.clone())
            .context("building the Kubernetes client")?;
        tokio::spawn(report.recheck_every(plain, SHADOW_RECHECK));
    }

    let identity = identity();
    let timings = Timings {
        lease_duration: opts.leader_elect_lease_duration,
        renew_deadline: opts.leader_elect_renew_deadline,
        retry_period: opts.leader_elect_retry_period,
    };
    let ctx = Context::new(
        client.clone(),
        Arc::clone(&cloud),
        opts.cluster_name.clone(),
    );
    let mut manager = Manager {
        config: config.clone(),
        client_config,
        ctx,
        cloud,
        health: Arc::clone(&health),
        started_informers: false,
        tasks: tokio::task::JoinSet::new(),
    };

    if !opts.leader_elect || opts.shadow {
        manager.start(|_| true).await?;
        health.set_leading();
        shutdown.wait().await;
        manager.stop().await;
        return Ok(());
    }

    let main_lock = Arc::new(LeaseLock::new(
        lease_client.clone(),
        &opts.leader_elect_resource_namespace,
        &opts.leader_elect_resource_name,
        &identity,
        timings,
        "leaderElection",
    ));
    health.add_election(main_lock.state());
    let mut locks = vec![Arc::clone(&main_lock)];
    tokio::select! {
        () = main_lock.acquire() => {}
        () = shutdown.wait() => return Ok(()),
    }
    health.set_leading();
    spawn_holder(&main_lock, &manager.cloud);
    let placement = |name: &str| {
        migration
            .as_ref()
            .map_or(Placement::NonMigrated, |m| m.placement(name))
    };
    manager
        .start(|name| placement(name) == Placement::NonMigrated)
        .await?;

    if let Some(m) = &migration {
        let migration_lock = Arc::new(LeaseLock::new(
            lease_client.clone(),
            &opts.leader_elect_resource_namespace,
            &m.leader_name,
            &identity,
            timings,
            "leaderMigration",
        ));
        health.add_election(migration_lock.state());
        locks.push(Arc::clone(&migration_lock));
        tokio::select! {
            () = migration_lock.acquire() => {}
            () = shutdown.wait() => {
                stop_then_release(&mut manager, &locks).await;
                return Ok(());
            }
        }
        spawn_holder(&migration_lock, &manager.cloud);
        manager
            .start(|name| placement(name) == Placement::Migrated)
            .await?;
    }
    shutdown.wait().await;
    stop_then_release(&mut manager, &locks).await;
    Ok(())
}

/// Controllers stop before the Leases go, so a standby never runs them while
/// this process still does.
async fn stop_then_release(manager: &mut Manager, locks: &[Arc<LeaseLock>]) {
    manager.stop().await;
    for lock in locks.iter().rev() {
        lock.release().await;
    }
}

/// A lost lease ends the process at once, as upstream's controller managers
/// do: another instance is, or soon will be, running the same controllers.
/// The provider gets a moment to let go of what only the leader holds (an
/// address it serves), so the new leader need not fight over it.
fn spawn_holder(lock: &Arc<LeaseLock>, cloud: &Arc<dyn CloudProvider>) {
    let lock = Arc::clone(lock);
    let cloud = Arc::clone(cloud);
    tokio::spawn(async move {
        lock.hold().await;
        tracing::error!(lease = %lock.name(), "leaderelection lost");
        let _ = tokio::time::timeout(Duration::from_secs(2), cloud.shutdown()).await;
        std::process::exit(1);
    });
}

/// Polls `--cloud-config` and hands each new version to the provider, which
/// applies it whole or keeps the last good one. Polling (every second) keeps
/// working when the file is a ConfigMap mount, whose symlinks are swapped
/// rather than the file written.
fn watch_cloud_config(cloud: Arc<dyn CloudProvider>, path: PathBuf) {
    tokio::spawn(async move {
        let mut last = tokio::fs::read(&path).await.ok();
        loop {
            tokio::time::sleep(CLOUD_CONFIG_POLL).await;
            let current = match tokio::fs::read(&path).await {
                Ok(bytes) => bytes,
                Err(e) => {
                    if last.is_some() {
                        tracing::error!(
                            "--cloud-config={}: cannot read the file, keeping the last good config: {e}",
                            path.display()
                        );
                        last = None;
                    }
                    continue;
                }
            };
            if last.as_deref() == Some(current.as_slice()) {
                continue;
            }
            last = Some(current.clone());
            // In a task of its own: a provider that panics on some input
            // must not end the watch, or no later edit would ever apply.
            let reload = {
                let cloud = Arc::clone(&cloud);
                tokio::spawn(async move { cloud.reload_config(&current).await })
            };
            let result = reload.await.unwrap_or_else(|panic| {
                Err(CloudError::other(format!(
                    "the provider panicked reloading it: {panic}"
                )))
            });
            match result {
                Ok(()) => tracing::info!(file = %path.display(), "cloud config reloaded"),
                Err(CloudError::NotImplemented) => {
                    tracing::warn!(
                        file = %path.display(),
                        "the cloud config changed, but provider {} does not reload it; restart to apply",
                        cloud.provider_name()
                    );
                    return;
                }
                Err(e) => tracing::error!(
                    "--cloud-config={}: the edited file is rejected and the last good config stays in force: {e}",
                    path.display()
                ),
            }
        }
    });
}

const CLOUD_CONFIG_POLL: Duration = Duration::from_secs(1);

/// SIGTERM or SIGINT, watched from start-up on.
struct Shutdown {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Shutdown {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
        })
    }

    async fn wait(&mut self) {
        tokio::select! {
            _ = self.term.recv() => tracing::info!("received SIGTERM; shutting down"),
            _ = self.int.recv() => tracing::info!("received SIGINT; shutting down"),
        }
    }
}

/// The client configuration for --kubeconfig (or in-cluster) and --master.
pub(crate) async fn client_config(opts: &crate::options::Options) -> anyhow::Result<kube::Config> {
    let mut config = match &opts.kubeconfig {
        Some(path) => config_from_kubeconfig(path, "--kubeconfig").await?,
        // In a Pod: the in-cluster service account (KUBECONFIG, then
        // ~/.kube/config, are tried first, as kube-rs infers).
        None => kube::Config::infer()
            .await
            .context("no --kubeconfig given and no in-cluster configuration found")?,
    };
    if let Some(master) = &opts.master {
        config.cluster_url = master
            .parse()
            .with_context(|| format!("--master={master}: not a URL"))?;
    }
    Ok(config)
}

/// Who the running binary is, as the vendor's builder named it.
#[derive(Debug, Clone)]
pub(crate) struct Binary {
    pub name: String,
    /// Without a leading `v`.
    pub version: String,
    /// Of the metrics that are the binary's own, not upstream's.
    pub metrics_prefix: String,
    /// The controllers its providers add (flags, `--controllers` names).
    pub controllers: Vec<overcast_cloud_provider::ControllerSpec>,
}

static BINARY: std::sync::OnceLock<Binary> = std::sync::OnceLock::new();

pub(crate) fn set_binary(binary: Binary) {
    let _ = BINARY.set(binary);
}

/// The binary's name and version unless a vendor's builder sets its own.
pub(crate) const DEFAULT_NAME: &str = "overcast-ccm";
pub(crate) const DEFAULT_VERSION: &str = env!("CARGO_PKG_VERSION");

fn binary() -> &'static Binary {
    static DEFAULT: LazyLock<Binary> = LazyLock::new(|| Binary {
        name: DEFAULT_NAME.into(),
        version: DEFAULT_VERSION.into(),
        metrics_prefix: metrics_prefix_of(DEFAULT_NAME),
        controllers: Vec::new(),
    });
    BINARY.get().unwrap_or(&DEFAULT)
}

/// A binary's metrics prefix unless its builder sets one: its name up to
/// the first `-`, in the characters a metric name allows
/// (`overcast-ccm` → `overcast`, `acme-cloud-ccm` → `acme`).
pub(crate) fn metrics_prefix_of(name: &str) -> String {
    let head = name.split('-').next().unwrap_or_default();
    let mut prefix: String = head
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if !prefix.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        prefix.insert(0, '_');
    }
    prefix
}

/// Whether `prefix` can start a Prometheus metric name.
pub(crate) fn valid_metrics_prefix(prefix: &str) -> bool {
    prefix.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// upstream's rest.DefaultKubernetesUserAgent plus the client's name, as
/// the Go ClientBuilder gives each controller:
/// `overcast-ccm/v0.1.0 (linux/amd64) overcast/service-controller`. The
/// apiserver names the field manager of an update without one after the
/// part before the first `/`.
pub fn user_agent(client: &str) -> String {
    let Binary { name, version, .. } = binary();
    let binary = std::env::args()
        .next()
        .and_then(|a| {
            Path::new(&a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| name.to_string());
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    format!(
        "{binary}/v{version} ({}/{arch}) overcast/{client}",
        std::env::consts::OS
    )
}

/// A client of `config` named `name` (its User-Agent) with `limit` (a token
/// bucket of its own) in front.
fn client_with(
    mut config: kube::Config,
    limit: Option<RateLimitLayer>,
    name: &str,
) -> anyhow::Result<kube::Client> {
    let agent = http::HeaderValue::from_str(&user_agent(name))
        .context("the User-Agent is not a valid header")?;
    config.headers.push((http::header::USER_AGENT, agent));
    // Shadow mode: the controllers' and informers' writes become dry runs
    // (the Leases' and reviews' clients are never used in it).
    let shadow = match SHADOW.get() {
        Some(report) if !matches!(name, "leader-election" | "delegated-auth") => {
            let plain =
                kube::Client::try_from(config.clone()).context("building the Kubernetes client")?;
            Some(shadow::ShadowLayer::new(plain, Arc::clone(report), name))
        }
        _ => None,
    };
    // Innermost: rest_client_* counts what reaches the apiserver, the rate
    // limiter's wait left out, as client-go's.
    let measured = ClientMetricsLayer::new(&config.cluster_url);
    let builder = kube::client::ClientBuilder::try_from(config)
        .context("building the Kubernetes client")?
        .with_layer(&measured);
    Ok(match (limit, shadow) {
        (Some(limit), Some(shadow)) => builder.with_layer(&shadow).with_layer(&limit).build(),
        (Some(limit), None) => builder.with_layer(&limit).build(),
        (None, Some(shadow)) => builder.with_layer(&shadow).build(),
        (None, None) => builder.build(),
    })
}

/// How often shadow mode tries its divergences' writes again.
const SHADOW_RECHECK: Duration = Duration::from_secs(30);

/// Set once in shadow mode: where every client reports.
static SHADOW: std::sync::OnceLock<Arc<shadow::Report>> = std::sync::OnceLock::new();

/// A client with its own --kube-api-qps/--kube-api-burst bucket. Upstream
/// builds one per controller (and one for the shared informers), so a busy
/// controller does not hold back the others.
fn limited_client(
    config: &kube::Config,
    opts: &crate::options::Options,
    name: &str,
) -> anyhow::Result<kube::Client> {
    client_with(
        config.clone(),
        RateLimitLayer::new(opts.kube_api_qps, opts.kube_api_burst),
        name,
    )
}

async fn config_from_kubeconfig(path: &Path, flag: &str) -> anyhow::Result<kube::Config> {
    let kubeconfig =
        Kubeconfig::read_from(path).with_context(|| format!("{flag}={}", path.display()))?;
    kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .with_context(|| format!("{flag}={}", path.display()))
}

/// The reviews' own client limit, upstream's for delegation clients (200 QPS,
/// burst 400): a flood of requests to the secure port cannot starve the
/// controllers' or the Lease's clients.
fn delegation_limit() -> RateLimitLayer {
    RateLimitLayer::new(200.0, 400).expect("a positive limit")
}

/// A review client for a kubeconfig given by `flag`.
async fn client_from_kubeconfig(path: &Path, flag: &str) -> anyhow::Result<kube::Client> {
    client_with(
        config_from_kubeconfig(path, flag).await?,
        Some(delegation_limit()),
        "delegated-auth",
    )
    .with_context(|| format!("{flag}={}", path.display()))
}

/// The secure port asks the apiserver about its requests through clients of
/// its own: --authentication-kubeconfig / --authorization-kubeconfig, or the
/// main credentials.
async fn serve(
    config: &Config,
    health: &Arc<Health>,
    client_config: &kube::Config,
) -> anyhow::Result<()> {
    let opts = &config.options;
    if opts.secure_port != 0 {
        let tls = tls_config(
            opts.tls_cert_file.as_deref(),
            opts.tls_private_key_file.as_deref(),
            opts.cert_dir.as_deref(),
            opts.tls_min_version.as_deref() == Some("VersionTLS13"),
        )
        .map_err(anyhow::Error::msg)?;
        let always_allow = parse_always_allow(&opts.authorization_always_allow_paths.join(","))
            .map_err(anyhow::Error::msg)?;
        let delegate = |path: &Option<PathBuf>, flag: &'static str| {
            let path = path.clone();
            async move {
                match path {
                    None => client_with(
                        client_config.clone(),
                        Some(delegation_limit()),
                        "delegated-auth",
                    ),
                    Some(path) => client_from_kubeconfig(&path, flag).await,
                }
            }
        };
        let gate = Gate::new(
            delegate(
                &opts.authentication_kubeconfig,
                "--authentication-kubeconfig",
            )
            .await?,
            delegate(&opts.authorization_kubeconfig, "--authorization-kubeconfig").await?,
            always_allow,
            CacheTtls {
                token: opts.authentication_token_webhook_cache_ttl,
                allowed: opts.authorization_webhook_cache_authorized_ttl,
                denied: opts.authorization_webhook_cache_unauthorized_ttl,
            },
        );
        let addr = SocketAddr::new(opts.bind_address, opts.secure_port);
        let server = bind(
            addr,
            Some(tls),
            Arc::clone(health),
            Some(Arc::new(gate)),
            opts.permit_port_sharing,
        )
        .await
        .map_err(|e| anyhow::anyhow!("--secure-port={}: {e}", opts.secure_port))?;
        tokio::spawn(server);
    }
    if opts.insecure_port != 0 {
        let addr = SocketAddr::new(opts.bind_address, opts.insecure_port);
        let server = bind(
            addr,
            None,
            Arc::clone(health),
            None,
            opts.permit_port_sharing,
        )
        .await
        .map_err(|e| anyhow::anyhow!("--insecure-port={}: {e}", opts.insecure_port))?;
        tokio::spawn(server);
    }
    Ok(())
}

/// The client name upstream's controller init contexts give each controller
/// (k8s.io/cloud-provider app: DefaultInitFuncConstructors).
fn client_name(controller: &str) -> &'static str {
    match controller {
        CLOUD_NODE | CLOUD_NODE_LIFECYCLE | NODE_IPAM => "node-controller",
        SERVICE_LB => "service-controller",
        NODE_ROUTE => "route-controller",
        _ => "controller",
    }
}

/// Runs a controller; if its task ends (it should not while we lead) or
/// panics, logs it and fails its health check. A stop by the manager drops
/// the future instead, and reports nothing.
async fn report_end(
    name: &'static str,
    run: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    check: crate::serve::ControllerCheck,
) {
    use futures::FutureExt as _;
    let reason = match std::panic::AssertUnwindSafe(run).catch_unwind().await {
        Ok(()) => "the controller's task ended".to_string(),
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a non-text panic".to_string());
            format!("the controller panicked: {message}")
        }
    };
    tracing::error!(controller = name, "{reason}; /healthz reports it failed");
    RUNNING_CONTROLLERS
        .with_label_values(&[short_name(name), MANAGER])
        .set(0);
    check.fail(reason);
}

/// Runs a built controller: counted as running, checked by /healthz,
/// reported if its task ends.
fn launch(
    health: &Health,
    tasks: &mut tokio::task::JoinSet<()>,
    name: &'static str,
    run: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
) {
    tracing::info!(controller = name, "started controller");
    RUNNING_CONTROLLERS
        .with_label_values(&[short_name(name), MANAGER])
        .set(1);
    let check = health.add_controller(short_name(name));
    tasks.spawn(report_end(name, run, check));
}

/// How a provider reaches the cluster: clients like the controllers' (own
/// User-Agent, own rate-limit bucket), Events through the same recorder.
struct ProviderAccess {
    client_config: kube::Config,
    options: crate::options::Options,
    /// Every recorder the provider makes writes with this one client.
    events: kube::Client,
}

impl ClusterAccess for ProviderAccess {
    fn event_recorder(&self, component: &str) -> Arc<dyn EventRecorder> {
        Arc::new(Recorder::new(self.events.clone(), component))
    }

    fn client(&self, name: &str) -> overcast_cloud_provider::Result<kube::Client> {
        limited_client(&self.client_config, &self.options, name)
            .map_err(|e| CloudError::other(format!("a Kubernetes client for {name}: {e:#}")))
    }
}

struct Manager {
    config: Config,
    /// Each controller gets a client (and rate limit) of its own from this.
    client_config: kube::Config,
    ctx: Context,
    cloud: Arc<dyn CloudProvider>,
    health: Arc<Health>,
    started_informers: bool,
    tasks: tokio::task::JoinSet<()>,
}

impl Manager {
    /// Stops every controller and the watches, and waits until they have;
    /// then the provider lets go of what only the leader holds.
    async fn stop(&mut self) {
        self.tasks.shutdown().await;
        if self.started_informers {
            self.cloud.shutdown().await;
        }
    }

    /// Builds and starts every enabled controller that `select` admits.
    async fn start(&mut self, select: impl Fn(&str) -> bool) -> anyhow::Result<()> {
        if !self.started_informers {
            let access = ProviderAccess {
                client_config: self.client_config.clone(),
                options: self.config.options.clone(),
                events: limited_client(
                    &self.client_config,
                    &self.config.options,
                    "cloud-provider",
                )?,
            };
            let provider_context = ProviderContext::new(
                self.ctx.cluster_name.clone(),
                self.ctx.nodes.store(),
                self.ctx.services.store(),
                Arc::new(access),
                self.health.metrics().clone(),
            );
            self.cloud
                .initialize(&provider_context)
                .await
                .context("initializing the cloud provider")?;
        }
        let opts = &self.config.options;
        let mut started = Vec::new();
        for name in KNOWN {
            if !self.config.selection.is_enabled(name) {
                tracing::warn!(controller = name, "controller is disabled by --controllers");
                continue;
            }
            if !select(name) {
                continue;
            }
            if !started.is_empty() && !opts.controller_start_interval.is_zero() {
                let jitter = 1.0 + f64::from(std::process::id() % 1000) / 1000.0;
                tokio::time::sleep(opts.controller_start_interval.mul_f64(jitter)).await;
            }
            let ctx = &Context {
                client: limited_client(&self.client_config, opts, client_name(name))?,
                ..self.ctx.clone()
            };
            let run: Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>> =
                match name {
                    CLOUD_NODE => NodeController::new(
                        ctx,
                        NodeControllerConfig {
                            concurrent_node_syncs: opts.concurrent_node_syncs,
                            node_status_update_frequency: opts.node_status_update_frequency,
                            concurrent_node_status_updates: opts.concurrent_node_status_updates,
                        },
                    )
                    .map(|c| Box::pin(c.run()) as _),
                    CLOUD_NODE_LIFECYCLE => NodeLifecycleController::new(
                        ctx,
                        NodeLifecycleConfig {
                            node_monitor_period: opts.node_monitor_period,
                            workers: opts.concurrent_node_syncs,
                        },
                    )
                    .map(|c| Box::pin(c.run()) as _),
                    SERVICE_LB => ServiceController::new(
                        ctx,
                        ServiceControllerConfig {
                            concurrent_service_syncs: opts.concurrent_service_syncs,
                            classes: overcast_controllers::service::plan::ClassPolicy {
                                class: opts.load_balancer_class.clone(),
                                skip_classless: !opts.serve_classless_load_balancers,
                            },
                            ..Default::default()
                        },
                    )
                    .map(|c| Box::pin(c.run()) as _),
                    NODE_ROUTE if !opts.configure_cloud_routes => {
                        tracing::info!(
                            "will not configure cloud provider routes, --configure-cloud-routes=false"
                        );
                        None
                    }
                    NODE_ROUTE => RouteController::new(
                        ctx,
                        RouteControllerConfig {
                            cluster_cidrs: self.config.cluster_cidrs.clone(),
                            reconciliation_period: opts.route_reconciliation_period,
                        },
                    )
                    .map(|c| Box::pin(c.run()) as _),
                    NODE_IPAM => match &self.config.ipam {
                        None => {
                            tracing::info!("node IPAM is off (--allocate-node-cidrs=false)");
                            None
                        }
                        Some(ipam) => Some(Box::pin(
                            NodeIpamController::new(ctx, ipam.clone())
                                .map_err(|e| anyhow::anyhow!("node-ipam: {e}"))?
                                .run(),
                        ) as _),
                    },
                    _ => None,
                };
            match run {
                Some(fut) => {
                    launch(&self.health, &mut self.tasks, name, fut);
                    started.push(name);
                }
                None => tracing::warn!(
                    controller = name,
                    "skipping controller: the provider does not support it or it is switched off"
                ),
            }
        }
        for (spec, flags) in &self.config.options.provider_controllers {
            let name: &'static str = Box::leak(spec.name().to_owned().into_boxed_str());
            if !self.config.selection.is_enabled(name) {
                tracing::warn!(controller = name, "controller is disabled by --controllers");
                continue;
            }
            if !select(name) {
                continue;
            }
            if self.config.options.shadow {
                // Its cloud calls are the provider's own, past the shadow
                // cloud's reach: it cannot run without acting.
                tracing::warn!(
                    controller = name,
                    "shadow mode does not run this controller: a provider's own controller cannot preview its cloud calls"
                );
                continue;
            }
            let controller = match Arc::clone(&self.cloud).node_controller(name, flags) {
                None => {
                    tracing::warn!(
                        controller = name,
                        "skipping controller: {name} controller does not support {} provider",
                        self.cloud.provider_name()
                    );
                    continue;
                }
                Some(built) => built.map_err(|e| anyhow::anyhow!("{name} controller: {e}"))?,
            };
            let run = ProviderNodeController::new(&self.ctx, name, controller).run();
            launch(&self.health, &mut self.tasks, name, Box::pin(run));
        }
        if !self.started_informers {
            self.started_informers = true;
            let ctx = self.ctx.clone();
            self.tasks.spawn(async move { ctx.run_informers().await });
            let ctx = self.ctx.clone();
            let health = Arc::clone(&self.health);
            self.tasks.spawn(async move {
                ctx.caches_synced().await;
                tracing::info!("caches synced");
                health.set_caches_synced();
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_agents_have_upstreams_shape_with_the_clients_name() {
        let agent = user_agent("service-controller");
        let (binary, rest) = agent.split_once('/').unwrap();
        assert!(!binary.is_empty() && !binary.contains(' '), "{agent}");
        assert!(
            rest.starts_with(&format!("v{} (", env!("CARGO_PKG_VERSION"))),
            "{agent}"
        );
        assert!(
            agent.contains(&format!("({}/", std::env::consts::OS)),
            "{agent}"
        );
        assert!(agent.ends_with(") overcast/service-controller"), "{agent}");
        assert_eq!(client_name(SERVICE_LB), "service-controller");
        assert_eq!(client_name(CLOUD_NODE_LIFECYCLE), "node-controller");
    }

    #[tokio::test]
    async fn a_panicking_controller_is_reported_with_its_message() {
        let health = Health::default();
        let check = health.add_controller("route");
        report_end("route", Box::pin(async { panic!("period is zero") }), check).await;
        let failed = health.controller_failure("route");
        assert_eq!(
            failed.as_deref(),
            Some("the controller panicked: period is zero")
        );
    }
}
