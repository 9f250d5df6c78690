//! Command-line flags with upstream's names and defaults
//! (k8s.io/cloud-provider options, k8s.io/controller-manager generic options).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use clap::builder::BoolishValueParser;
use overcast_controllers::node_ipam::{MaskFlags, NodeIpamConfig};
use overcast_controllers::route::parse_cluster_cidrs;

use crate::controllers::Selection;
use overcast_cloud_provider::{ControllerFlag, ControllerSpec, FlagKind, FlagValues};

fn go_duration(s: &str) -> Result<Duration, String> {
    overcast_cloud_provider::duration::parse_go_duration(s).map_err(String::from)
}

/// The Cloud controller manager is a daemon that embeds the cloud specific
/// control loops shipped with Kubernetes: node initialisation and lifecycle,
/// LoadBalancer Services, routes and node IPAM.
///
/// Flags are grouped as upstream's cloud-controller-manager prints them
/// (k8s.io/cloud-provider v0.34 named flag sets), sorted within a section.
/// Flags marked "no effect" are accepted so a manifest written for the Go
/// CCM starts; setting one logs a warning saying so.
#[derive(Debug, Clone, Parser)]
#[command(name = "overcast-ccm", version, long_about = None)]
#[command(
    rename_all = "kebab-case",
    disable_help_flag = true,
    disable_version_flag = true
)]
// As with Go's pflag, a flag given twice takes its last value.
#[command(args_override_self = true)]
pub struct Options {
    // --- Debugging flags
    /// Enable block profiling, if profiling is enabled (no effect: overcast-ccm serves no profiles).
    #[arg(long, help_heading = "Debugging flags", default_value = "false", value_parser = BoolishValueParser::new(), num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub contention_profiling: bool,
    /// Enable profiling via web interface host:port/debug/pprof/ (no effect: overcast-ccm serves no /debug/pprof).
    #[arg(long, help_heading = "Debugging flags", default_value = "true", value_parser = BoolishValueParser::new(), num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub profiling: bool,

    // --- Leader-migration flags
    /// Whether to enable controller leader migration (KEP-2436).
    #[arg(long, help_heading = "Leader-migration flags", default_value = "false", value_parser = BoolishValueParser::new(), num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub enable_leader_migration: bool,
    /// Path to the LeaderMigrationConfiguration file (controllermanager.config.k8s.io/v1alpha1), or empty for the default configuration.
    #[arg(long, help_heading = "Leader-migration flags")]
    pub leader_migration_config: Option<PathBuf>,

    // --- Generic flags
    /// Should CIDRs for Pods be allocated and set on the cloud provider. Requires --cluster-cidr.
    #[arg(long, help_heading = "Generic flags", default_value = "false", value_parser = BoolishValueParser::new(), num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub allocate_node_cidrs: bool,
    /// Shadow mode: run every enabled controller beside the incumbent, take no Lease, and change nothing (writes go to the apiserver as dry runs, cloud changes become read-only previews); report what would change (overcast-ccm only; docs/migration.md).
    #[arg(long, help_heading = "Generic flags", default_value = "false", value_parser = BoolishValueParser::new(), num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub shadow: bool,
    /// In shadow mode, keep the current divergences in this file as JSON (overcast-ccm only).
    #[arg(long, help_heading = "Generic flags")]
    pub shadow_report: Option<PathBuf>,
    /// Type of CIDR allocator to use (only RangeAllocator is supported).
    #[arg(long, help_heading = "Generic flags", default_value = "RangeAllocator")]
    pub cidr_allocator_type: String,
    /// The path to the cloud provider configuration file. Empty for no configuration file.
    #[arg(long, help_heading = "Generic flags")]
    pub cloud_config: Option<PathBuf>,
    /// The provider for cloud services (required).
    #[arg(long, help_heading = "Generic flags", default_value = "")]
    pub cloud_provider: String,
    /// CIDR range for Pods in the cluster (a dual-stack pair, comma-separated, allowed). Used with --allocate-node-cidrs and by the route controller.
    #[arg(long, help_heading = "Generic flags", default_value = "")]
    pub cluster_cidr: String,
    /// The instance prefix for the cluster.
    #[arg(long, help_heading = "Generic flags", default_value = "kubernetes")]
    pub cluster_name: String,
    /// Should CIDRs allocated by allocate-node-cidrs be configured on the cloud provider.
    #[arg(long, help_heading = "Generic flags", default_value = "true", value_parser = BoolishValueParser::new(), num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub configure_cloud_routes: bool,
    /// Interval between starting controller managers (upstream's jitter is applied).
    #[arg(long, help_heading = "Generic flags", default_value = "0s", value_parser = go_duration)]
    pub controller_start_interval: Duration,
    /// A list of controllers to enable. '*' enables all on-by-default controllers, 'foo' enables the controller named 'foo', '-foo' disables the controller named 'foo'. All controllers: cloud-node-controller, cloud-node-lifecycle-controller, node-ipam-controller, node-route-controller, service-lb-controller.
    #[arg(
        long,
        help_heading = "Generic flags",
        value_delimiter = ',',
        default_value = "*"
    )]
    pub controllers: Vec<String>,
    /// The plugin to use when cloud provider is set to external (no effect: overcast-ccm runs no volume plugins).
    #[arg(long, help_heading = "Generic flags", default_value = "")]
    pub external_cloud_volume_plugin: String,
    /// A set of key=value pairs for alpha/experimental features (no effect: overcast-ccm has no feature gates).
    #[arg(long, help_heading = "Generic flags", default_value = "")]
    pub feature_gates: String,
    /// Burst to use while talking with kubernetes apiserver.
    #[arg(long, help_heading = "Generic flags", default_value_t = 30)]
    pub kube_api_burst: u32,
    /// Content type of requests sent to apiserver (no effect: overcast-ccm speaks JSON).
    #[arg(
        long,
        help_heading = "Generic flags",
        default_value = "application/vnd.kubernetes.protobuf"
    )]
    pub kube_api_content_type: String,
    /// QPS to use while talking with kubernetes apiserver (negative: unlimited).
    #[arg(
        long,
        help_heading = "Generic flags",
        default_value_t = 20.0,
        allow_negative_numbers = true
    )]
    pub kube_api_qps: f32,
    /// Start a leader election client and gain leadership before executing the main loop. Enable this when running replicated components for high availability.
    #[arg(long, help_heading = "Generic flags", default_value = "true", value_parser = BoolishValueParser::new(), num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub leader_elect: bool,
    /// How long non-leader candidates wait after observing a leadership renewal before trying to acquire it: the longest a leader can be stopped before it is replaced.
    #[arg(long, help_heading = "Generic flags", default_value = "15s", value_parser = go_duration)]
    pub leader_elect_lease_duration: Duration,
    /// The interval between attempts by the acting leader to renew its lease before it stops leading. Less than the lease duration.
    #[arg(long, help_heading = "Generic flags", default_value = "10s", value_parser = go_duration)]
    pub leader_elect_renew_deadline: Duration,
    /// The type of resource object that is used for locking during leader election. Supported options are 'leases'.
    #[arg(long, help_heading = "Generic flags", default_value = "leases")]
    pub leader_elect_resource_lock: String,
    /// The name of resource object that is used for locking during leader election.
    #[arg(
        long,
        help_heading = "Generic flags",
        default_value = "cloud-controller-manager"
    )]
    pub leader_elect_resource_name: String,
    /// The namespace of resource object that is used for locking during leader election.
    #[arg(long, help_heading = "Generic flags", default_value = "kube-system")]
    pub leader_elect_resource_namespace: String,
    /// The duration the clients should wait between attempting acquisition and renewal of a leadership.
    #[arg(long, help_heading = "Generic flags", default_value = "2s", value_parser = go_duration)]
    pub leader_elect_retry_period: Duration,
    /// The resync period in reflectors (no effect: the watch caches do not resync).
    #[arg(long, help_heading = "Generic flags", default_value = "12h", value_parser = go_duration)]
    pub min_resync_period: Duration,
    /// The period for syncing NodeStatus in cloud-node-lifecycle-controller.
    #[arg(long, help_heading = "Generic flags", default_value = "5s", value_parser = go_duration)]
    pub node_monitor_period: Duration,
    /// The period for reconciling routes created for Nodes by cloud provider.
    #[arg(long, help_heading = "Generic flags", default_value = "10s", value_parser = go_duration)]
    pub route_reconciliation_period: Duration,
    /// If true, use individual service account credentials for each controller (no effect: every controller uses the process's credentials).
    #[arg(long, help_heading = "Generic flags", default_value = "false", value_parser = BoolishValueParser::new(), num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub use_service_account_credentials: bool,
    /// Start even when the provider has no cluster ID (deprecated upstream).
    #[arg(long, hide = true, default_value = "false", value_parser = BoolishValueParser::new(), num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub allow_untagged_cloud: bool,
    /// Deprecated upstream; a no-op.
    #[arg(long, hide = true, value_parser = go_duration)]
    pub node_sync_period: Option<Duration>,

    // --- Cloud-node-controller flags
    /// Number of workers concurrently synchronizing nodes.
    #[arg(
        long,
        help_heading = "Cloud-node-controller flags",
        default_value_t = 1
    )]
    pub concurrent_node_syncs: usize,
    /// Number of workers concurrently updating node statuses; 0: --concurrent-node-syncs (upstream from v1.36).
    #[arg(
        long,
        help_heading = "Cloud-node-controller flags",
        default_value_t = 0
    )]
    pub concurrent_node_status_updates: usize,

    // --- Service-lb-controller flags
    /// The number of services that are allowed to sync concurrently.
    #[arg(
        long,
        help_heading = "Service-lb-controller flags",
        default_value_t = 1
    )]
    pub concurrent_service_syncs: usize,
    /// Also serve LoadBalancer Services whose spec.loadBalancerClass is this (e.g. overcast.dev/local), so overcast-ccm runs beside another implementation (overcast-ccm only; upstream serves class-less Services only).
    #[arg(long, help_heading = "Service-lb-controller flags")]
    pub load_balancer_class: Option<String>,
    /// Serve LoadBalancer Services without a loadBalancerClass; false leaves them to another implementation (needs --load-balancer-class; overcast-ccm only).
    #[arg(long, help_heading = "Service-lb-controller flags", default_value = "true", value_parser = BoolishValueParser::new(), num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub serve_classless_load_balancers: bool,

    // --- Webhook flags
    /// A list of webhooks to enable: '*' for all on-by-default ones. overcast-ccm has none, so only '*' and '-name' are accepted.
    #[arg(long, help_heading = "Webhook flags", value_delimiter = ',')]
    pub webhooks: Vec<String>,

    // --- Webhook serving flags
    /// The IP address on which to listen for the --webhook-secure-port port (no effect: no webhooks are served).
    #[arg(
        long,
        help_heading = "Webhook serving flags",
        default_value = "0.0.0.0"
    )]
    pub webhook_bind_address: IpAddr,
    /// The directory where the webhook TLS certs are located (no effect: no webhooks are served).
    #[arg(long, help_heading = "Webhook serving flags")]
    pub webhook_cert_dir: Option<PathBuf>,
    /// Secure port to serve cloud provider webhooks; 0: none (no effect: no webhooks are served).
    #[arg(long, help_heading = "Webhook serving flags", default_value_t = 10260)]
    pub webhook_secure_port: u16,
    /// The webhook server's x509 certificate (no effect: no webhooks are served).
    #[arg(long, help_heading = "Webhook serving flags")]
    pub webhook_tls_cert_file: Option<PathBuf>,
    /// The webhook server's x509 private key (no effect: no webhooks are served).
    #[arg(long, help_heading = "Webhook serving flags")]
    pub webhook_tls_private_key_file: Option<PathBuf>,

    // --- Secure serving flags
    /// The IP address on which to listen for the --secure-port port.
    #[arg(long, help_heading = "Secure serving flags", default_value = "0.0.0.0")]
    pub bind_address: IpAddr,
    /// The directory where the self-signed serving certificate is written when --tls-cert-file is not given.
    #[arg(long, help_heading = "Secure serving flags")]
    pub cert_dir: Option<PathBuf>,
    /// If true, HTTP2 serving will be disabled (always: the secure port speaks HTTP/1.1).
    #[arg(long, help_heading = "Secure serving flags", default_value = "false", value_parser = BoolishValueParser::new(), num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub disable_http2_serving: bool,
    /// The HTTP/2 stream limit per connection (no effect: the secure port speaks HTTP/1.1).
    #[arg(long, help_heading = "Secure serving flags", default_value_t = 0)]
    pub http2_max_streams_per_connection: u32,
    /// If true, SO_REUSEADDR will be used when binding the port (always: the listener sets it).
    #[arg(long, help_heading = "Secure serving flags", default_value = "false", value_parser = BoolishValueParser::new(), num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub permit_address_sharing: bool,
    /// If true, SO_REUSEPORT will be used when binding the port, which allows more than one instance to bind on the same address and port.
    #[arg(long, help_heading = "Secure serving flags", default_value = "false", value_parser = BoolishValueParser::new(), num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub permit_port_sharing: bool,
    /// The port on which to serve HTTPS (/healthz, /livez, /readyz, /metrics) with authentication and authorization; 0 disables.
    #[arg(long, help_heading = "Secure serving flags", default_value_t = 10258)]
    pub secure_port: u16,
    /// File containing the x509 certificate for HTTPS (CA certificates, if any, after it); without it a self-signed one is made.
    #[arg(long, help_heading = "Secure serving flags")]
    pub tls_cert_file: Option<PathBuf>,
    /// Comma-separated list of cipher suites for the server (no effect: rustls's safe defaults are used).
    #[arg(long, help_heading = "Secure serving flags")]
    pub tls_cipher_suites: Option<String>,
    /// Minimum TLS version supported: VersionTLS10, VersionTLS11, VersionTLS12 or VersionTLS13 (below 1.2 means 1.2, the lowest overcast-ccm speaks).
    #[arg(long, help_heading = "Secure serving flags")]
    pub tls_min_version: Option<String>,
    /// File containing the x509 private key matching --tls-cert-file.
    #[arg(long, help_heading = "Secure serving flags")]
    pub tls_private_key_file: Option<PathBuf>,
    /// A certificate and key for SNI, optionally with domain patterns (no effect: the --tls-cert-file certificate is served for every name).
    #[arg(long, help_heading = "Secure serving flags", action = clap::ArgAction::Append)]
    pub tls_sni_cert_key: Vec<String>,
    /// Also serve plain HTTP on this port (0: off). Unauthenticated; for loopback and tests only (overcast-ccm only).
    #[arg(long, help_heading = "Secure serving flags", default_value_t = 0)]
    pub insecure_port: u16,

    // --- Authentication flags
    /// kubeconfig for TokenReviews of the secure port's bearer tokens (default: the --kubeconfig or in-cluster credentials).
    #[arg(long, help_heading = "Authentication flags")]
    pub authentication_kubeconfig: Option<PathBuf>,
    /// If false, the authentication-kubeconfig is used to look up missing authentication configuration (no effect: no client-certificate lookup).
    #[arg(long, help_heading = "Authentication flags", default_value = "false", value_parser = BoolishValueParser::new(), num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub authentication_skip_lookup: bool,
    /// How long TokenReview answers are cached.
    #[arg(long, help_heading = "Authentication flags", default_value = "10s", value_parser = go_duration)]
    pub authentication_token_webhook_cache_ttl: Duration,
    /// If true, failures to look up missing authentication configuration are not fatal (no effect: no lookup).
    #[arg(long, help_heading = "Authentication flags", default_value = "false", value_parser = BoolishValueParser::new(), num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub authentication_tolerate_lookup_failure: bool,
    /// Client-certificate authentication against this CA (no effect: only bearer tokens are authenticated; a certificate alone is anonymous).
    #[arg(long, help_heading = "Authentication flags")]
    pub client_ca_file: Option<String>,
    /// Front-proxy client names allowed to set user headers (no effect: request-header authentication is not supported).
    #[arg(long, help_heading = "Authentication flags")]
    pub requestheader_allowed_names: Option<String>,
    /// Front-proxy CA (no effect: request-header authentication is not supported).
    #[arg(long, help_heading = "Authentication flags")]
    pub requestheader_client_ca_file: Option<String>,
    /// Front-proxy extra header prefixes (no effect: request-header authentication is not supported).
    #[arg(long, help_heading = "Authentication flags")]
    pub requestheader_extra_headers_prefix: Option<String>,
    /// Front-proxy group headers (no effect: request-header authentication is not supported).
    #[arg(long, help_heading = "Authentication flags")]
    pub requestheader_group_headers: Option<String>,
    /// Front-proxy UID headers (no effect: request-header authentication is not supported).
    #[arg(long, help_heading = "Authentication flags")]
    pub requestheader_uid_headers: Option<String>,
    /// Front-proxy user headers (no effect: request-header authentication is not supported).
    #[arg(long, help_heading = "Authentication flags")]
    pub requestheader_username_headers: Option<String>,

    // --- Authorization flags
    /// Paths served on the secure port without authentication or authorisation; one ending in `*` is a prefix. Comma-separated; given again, it adds to the list.
    #[arg(
        long,
        help_heading = "Authorization flags",
        default_value = crate::delegation::DEFAULT_ALWAYS_ALLOW,
        action = clap::ArgAction::Append
    )]
    pub authorization_always_allow_paths: Vec<String>,
    /// kubeconfig for SubjectAccessReviews of the secure port's requests (default: the --kubeconfig or in-cluster credentials).
    #[arg(long, help_heading = "Authorization flags")]
    pub authorization_kubeconfig: Option<PathBuf>,
    /// How long allowing SubjectAccessReview answers are cached.
    #[arg(long, help_heading = "Authorization flags", default_value = "10s", value_parser = go_duration)]
    pub authorization_webhook_cache_authorized_ttl: Duration,
    /// How long denying SubjectAccessReview answers are cached.
    #[arg(long, help_heading = "Authorization flags", default_value = "10s", value_parser = go_duration)]
    pub authorization_webhook_cache_unauthorized_ttl: Duration,

    // --- Misc flags
    /// Path to kubeconfig file with authorization and master location information.
    #[arg(long, help_heading = "Misc flags")]
    pub kubeconfig: Option<PathBuf>,
    /// The address of the Kubernetes API server (overrides any value in kubeconfig).
    #[arg(long, help_heading = "Misc flags")]
    pub master: Option<String>,
    /// Specifies how often the controller updates nodes' status.
    #[arg(long, help_heading = "Misc flags", default_value = "5m", value_parser = go_duration)]
    pub node_status_update_frequency: Duration,

    // --- Global flags
    /// help for overcast-ccm
    #[arg(short = 'h', long, help_heading = "Global flags", action = clap::ArgAction::Help)]
    pub help: Option<bool>,
    /// Maximum time between log flushes (no effect: log lines are written at once).
    #[arg(long, help_heading = "Global flags", default_value = "5s", value_parser = go_duration)]
    pub log_flush_frequency: Duration,
    /// In JSON format with split output streams, how many bytes of info messages may be buffered (no effect: no buffering).
    #[arg(long, help_heading = "Global flags")]
    pub log_json_info_buffer_size: Option<String>,
    /// In JSON format, write error messages to stderr and info messages to stdout.
    #[arg(long, help_heading = "Global flags", default_value = "false", value_parser = BoolishValueParser::new(), num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub log_json_split_stream: bool,
    /// In text format with split output streams, how many bytes of info messages may be buffered (no effect: no buffering).
    #[arg(long, help_heading = "Global flags")]
    pub log_text_info_buffer_size: Option<String>,
    /// In text format, write error messages to stderr and info messages to stdout.
    #[arg(long, help_heading = "Global flags", default_value = "false", value_parser = BoolishValueParser::new(), num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub log_text_split_stream: bool,
    /// Sets the log format. Permitted formats: "json", "text".
    #[arg(long, help_heading = "Global flags", default_value = "text")]
    pub logging_format: String,
    /// Log verbosity, as klog's -v (0: info, 2: more, 4: debug, 6+: trace).
    #[arg(
        short = 'v',
        long = "v",
        help_heading = "Global flags",
        default_value_t = 0
    )]
    pub verbosity: u8,
    /// Print version information and quit.
    #[arg(long, help_heading = "Global flags", action = clap::ArgAction::Version)]
    pub version: Option<bool>,
    /// Comma-separated list of pattern=N settings for file-filtered logging (no effect: use RUST_LOG=target=level).
    #[arg(long, help_heading = "Global flags")]
    pub vmodule: Option<String>,

    // --- Node-ipam-controller flags (a provider binary's own set upstream)
    /// Mask size for node CIDRs in the cluster. Default is 24 for IPv4 and 64 for IPv6.
    #[arg(long, help_heading = "Node-ipam-controller flags")]
    pub node_cidr_mask_size: Option<u8>,
    /// Mask size for IPv4 node CIDRs in a dual-stack cluster. Default is 24.
    #[arg(long, help_heading = "Node-ipam-controller flags")]
    pub node_cidr_mask_size_ipv4: Option<u8>,
    /// Mask size for IPv6 node CIDRs in a dual-stack cluster. Default is 64.
    #[arg(long, help_heading = "Node-ipam-controller flags")]
    pub node_cidr_mask_size_ipv6: Option<u8>,
    /// CIDR range for Services, never handed to Nodes by node IPAM.
    #[arg(long, help_heading = "Node-ipam-controller flags", default_value = "")]
    pub service_cluster_ip_range: String,

    /// The provider controllers this binary has, with their flags' values.
    #[arg(skip)]
    pub provider_controllers: Vec<(ControllerSpec, FlagValues)>,
}

impl Options {
    /// Parses `args` (the binary's own name first) as the binary `name` at
    /// `version`, which `--help` and `--version` print, with the flags of
    /// the provider controllers `specs`.
    pub fn parse_as<I, T>(
        name: &str,
        version: &str,
        specs: &[ControllerSpec],
        args: I,
    ) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::{CommandFactory as _, FromArgMatches as _};
        // clap keeps names as &'static str; this runs once per process.
        let name: &'static str = Box::leak(name.to_owned().into_boxed_str());
        let version: &'static str = Box::leak(version.to_owned().into_boxed_str());
        let mut command = Self::command().name(name).bin_name(name).version(version);
        for spec in specs {
            for flag in spec.flags() {
                if command
                    .get_arguments()
                    .any(|a| a.get_long() == Some(flag.name()))
                {
                    return Err(command.error(
                        clap::error::ErrorKind::ArgumentConflict,
                        format!(
                            "controller {}: --{} is a flag of the cloud-controller-manager already",
                            spec.name(),
                            flag.name()
                        ),
                    ));
                }
                command = command.arg(provider_flag(spec.heading(), flag));
            }
        }
        let matches = command.clone().try_get_matches_from(args)?;
        let mut options = Self::from_arg_matches(&matches)?;
        for spec in specs {
            let values = FlagValues::new(
                spec.flags()
                    .iter()
                    .map(|flag| (flag.name().to_string(), flag_values(&matches, flag)))
                    .collect(),
            );
            spec.check(&values)
                .map_err(|e| command.error(clap::error::ErrorKind::ValueValidation, e))?;
            options.provider_controllers.push((spec.clone(), values));
        }
        Ok(options)
    }

    /// The flags set here that overcast-ccm accepts but that change nothing,
    /// each with why: logged as warnings at start-up, so nothing a user sets
    /// is ignored without a word.
    pub fn no_effect_warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let lease = self.leader_elect_lease_duration;
        if self.leader_elect && lease.subsec_nanos() != 0 && lease >= Duration::from_secs(1) {
            out.push(format!(
                "--leader-elect-lease-duration={lease:?} counts as {}s: a Lease records whole \
                 seconds (leaseDurationSeconds) and the other candidates wait that long",
                lease.as_secs()
            ));
        }
        let mut warn = |set: bool, flag: &str, why: &str| {
            if set {
                out.push(format!("{flag} has no effect: {why}"));
            }
        };
        let no_webhooks = "overcast-ccm serves no webhooks";
        let no_request_header = "request-header (front-proxy) authentication is not supported";
        warn(
            self.contention_profiling,
            "--contention-profiling",
            "no profiles are served",
        );
        warn(
            !self.external_cloud_volume_plugin.is_empty(),
            "--external-cloud-volume-plugin",
            "no volume plugins run here",
        );
        warn(
            !self.feature_gates.is_empty(),
            "--feature-gates",
            "overcast-ccm has no feature gates",
        );
        warn(
            !matches!(
                self.kube_api_content_type.as_str(),
                "application/vnd.kubernetes.protobuf" | "application/json"
            ),
            "--kube-api-content-type",
            "overcast-ccm speaks JSON",
        );
        warn(
            self.use_service_account_credentials,
            "--use-service-account-credentials",
            "every controller uses the process's own credentials",
        );
        warn(
            self.node_sync_period.is_some(),
            "--node-sync-period",
            "deprecated upstream, a no-op there too",
        );
        warn(
            self.webhook_cert_dir.is_some(),
            "--webhook-cert-dir",
            no_webhooks,
        );
        warn(
            self.webhook_tls_cert_file.is_some(),
            "--webhook-tls-cert-file",
            no_webhooks,
        );
        warn(
            self.webhook_tls_private_key_file.is_some(),
            "--webhook-tls-private-key-file",
            no_webhooks,
        );
        warn(
            self.http2_max_streams_per_connection != 0,
            "--http2-max-streams-per-connection",
            "the secure port speaks HTTP/1.1",
        );
        warn(
            self.tls_cipher_suites.is_some(),
            "--tls-cipher-suites",
            "rustls's default suites (TLS 1.2 AEAD and TLS 1.3 only) are used",
        );
        warn(
            !self.tls_sni_cert_key.is_empty(),
            "--tls-sni-cert-key",
            "the --tls-cert-file (or self-signed) certificate is served for every name",
        );
        warn(
            self.authentication_skip_lookup,
            "--authentication-skip-lookup",
            "no client-certificate configuration is looked up",
        );
        warn(
            self.authentication_tolerate_lookup_failure,
            "--authentication-tolerate-lookup-failure",
            "no client-certificate configuration is looked up",
        );
        warn(
            self.client_ca_file.is_some(),
            "--client-ca-file",
            "only bearer tokens are authenticated; a request with a client certificate alone is anonymous",
        );
        for (set, flag) in [
            (
                self.requestheader_allowed_names.is_some(),
                "--requestheader-allowed-names",
            ),
            (
                self.requestheader_client_ca_file.is_some(),
                "--requestheader-client-ca-file",
            ),
            (
                self.requestheader_extra_headers_prefix.is_some(),
                "--requestheader-extra-headers-prefix",
            ),
            (
                self.requestheader_group_headers.is_some(),
                "--requestheader-group-headers",
            ),
            (
                self.requestheader_uid_headers.is_some(),
                "--requestheader-uid-headers",
            ),
            (
                self.requestheader_username_headers.is_some(),
                "--requestheader-username-headers",
            ),
        ] {
            warn(set, flag, no_request_header);
        }
        warn(
            self.log_json_info_buffer_size.is_some(),
            "--log-json-info-buffer-size",
            "log lines are not buffered",
        );
        warn(
            self.log_text_info_buffer_size.is_some(),
            "--log-text-info-buffer-size",
            "log lines are not buffered",
        );
        warn(
            self.vmodule.is_some(),
            "--vmodule",
            "use RUST_LOG (e.g. RUST_LOG=info,overcast_controllers::service=debug)",
        );
        warn(
            self.log_json_split_stream && self.logging_format != "json",
            "--log-json-split-stream",
            "the log format is not json",
        );
        warn(
            self.log_text_split_stream && self.logging_format != "text",
            "--log-text-split-stream",
            "the log format is not text",
        );
        out
    }
}

/// A provider controller's flag as a clap argument (pflag's shapes).
fn provider_flag(heading: &str, flag: &ControllerFlag) -> clap::Arg {
    // clap keeps names as &'static str; this runs once per flag and process.
    let leak = |s: &str| -> &'static str { Box::leak(s.to_owned().into_boxed_str()) };
    let mut arg = clap::Arg::new(leak(flag.name()))
        .long(leak(flag.name()))
        .help(leak(flag.help()))
        .help_heading(leak(heading));
    arg = match flag.kind() {
        FlagKind::Switch => arg
            .value_parser(BoolishValueParser::new())
            .num_args(0..=1)
            .require_equals(true)
            .default_missing_value("true")
            .action(clap::ArgAction::Set),
        // Value and Repeated keep every occurrence; FlagValues::get reads
        // the last, as pflag's "a flag given twice takes its last value".
        _ => arg.action(clap::ArgAction::Append),
    };
    match flag.default() {
        Some(d) => arg.default_value(leak(d)),
        None => arg,
    }
}

/// The values given for `flag` (or its default), as written.
fn flag_values(matches: &clap::ArgMatches, flag: &ControllerFlag) -> Vec<String> {
    match flag.kind() {
        FlagKind::Switch => matches
            .get_one::<bool>(flag.name())
            .map(|b| vec![b.to_string()])
            .unwrap_or_default(),
        _ => matches
            .get_many::<String>(flag.name())
            .map(|v| v.cloned().collect())
            .unwrap_or_default(),
    }
}

/// Everything the app needs, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub options: Options,
    pub selection: Selection,
    pub ipam: Option<NodeIpamConfig>,
    pub cluster_cidrs: Vec<overcast_controllers::cidr::IpNet>,
}

impl Options {
    /// Checks every flag; the message names the flag and the reason.
    pub fn validate(self) -> Result<Config, String> {
        if self.cloud_provider.is_empty() {
            return Err("--cloud-provider cannot be empty".into());
        }
        let extra: Vec<_> = self
            .provider_controllers
            .iter()
            .map(|(spec, _)| (spec.name(), spec.enabled_by_default()))
            .collect();
        let selection = Selection::parse(&self.controllers, &extra)?;
        if self.leader_elect_resource_lock != "leases" {
            return Err(format!(
                "--leader-elect-resource-lock={}: only \"leases\" is supported",
                self.leader_elect_resource_lock
            ));
        }
        if self.leader_elect {
            // client-go's NewLeaderElector checks, in its order.
            if self.leader_elect_lease_duration <= self.leader_elect_renew_deadline {
                return Err("--leader-elect-lease-duration must be greater than --leader-elect-renew-deadline".into());
            }
            if self.leader_elect_renew_deadline.as_secs_f64()
                <= self.leader_elect_retry_period.as_secs_f64() * crate::leader::JITTER_FACTOR
            {
                return Err(format!(
                    "--leader-elect-renew-deadline must be greater than --leader-elect-retry-period \
                     times the retry jitter ({}), so the last retry lands before the deadline",
                    crate::leader::JITTER_FACTOR
                ));
            }
            for (flag, value) in [
                (
                    "--leader-elect-lease-duration",
                    self.leader_elect_lease_duration,
                ),
                (
                    "--leader-elect-renew-deadline",
                    self.leader_elect_renew_deadline,
                ),
                (
                    "--leader-elect-retry-period",
                    self.leader_elect_retry_period,
                ),
            ] {
                if value.is_zero() {
                    return Err(format!("{flag} must be greater than zero"));
                }
            }
            // The Lease carries whole seconds (leaseDurationSeconds, as
            // client-go writes it), and the other candidates go by the Lease:
            // below a second it would say 0, valid for no time at all.
            if self.leader_elect_lease_duration < Duration::from_secs(1) {
                return Err(format!(
                    "--leader-elect-lease-duration={:?}: a Lease records its duration in whole \
                     seconds (leaseDurationSeconds), so it must be at least 1s",
                    self.leader_elect_lease_duration
                ));
            }
        }
        // Periods of loops: zero would spin (upstream's wait.Until does).
        for (flag, value) in [
            ("--node-monitor-period", self.node_monitor_period),
            (
                "--node-status-update-frequency",
                self.node_status_update_frequency,
            ),
            (
                "--route-reconciliation-period",
                self.route_reconciliation_period,
            ),
        ] {
            if value.is_zero() {
                return Err(format!("{flag} must be greater than zero"));
            }
        }
        if let Some(class) = &self.load_balancer_class {
            // As the apiserver validates spec.loadBalancerClass: a
            // domain-prefixed name.
            let valid = class.split_once('/').is_some_and(|(domain, name)| {
                domain.contains('.')
                    && !name.is_empty()
                    && name.len() <= 63
                    && class
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-._/".contains(c))
            });
            if !valid {
                return Err(format!(
                    "--load-balancer-class={class}: not a domain-prefixed name such as overcast.dev/local (as spec.loadBalancerClass must be)"
                ));
            }
        }
        if !self.serve_classless_load_balancers && self.load_balancer_class.is_none() {
            return Err(
                "--serve-classless-load-balancers=false needs --load-balancer-class (otherwise no Service is served)".into(),
            );
        }
        // Upstream checks names against the provider's webhooks; there are none.
        if let Some(w) = self.webhooks.iter().find(|w| w.as_str() != "*") {
            return Err(format!(
                "--webhooks: {w:?} is not a known webhook (overcast-ccm has none; only \"*\" is accepted)"
            ));
        }
        if let Some(v) = &self.tls_min_version
            && !matches!(
                v.as_str(),
                "VersionTLS10" | "VersionTLS11" | "VersionTLS12" | "VersionTLS13"
            )
        {
            return Err(format!(
                "--tls-min-version={v}: unknown; one of VersionTLS10, VersionTLS11, VersionTLS12, VersionTLS13"
            ));
        }
        if !self.kube_api_qps.is_finite() {
            return Err(format!(
                "--kube-api-qps={}: must be a number",
                self.kube_api_qps
            ));
        }
        if self.leader_migration_config.is_some() && !self.enable_leader_migration {
            return Err(
                "--leader-migration-config is set but --enable-leader-migration is not".into(),
            );
        }
        if self.concurrent_node_syncs == 0 {
            return Err("--concurrent-node-syncs must be greater than 0".into());
        }
        if self.concurrent_service_syncs == 0 {
            return Err("--concurrent-service-syncs must be greater than 0".into());
        }
        if self.cidr_allocator_type != "RangeAllocator" {
            return Err(format!(
                "--cidr-allocator-type={}: only RangeAllocator is supported",
                self.cidr_allocator_type
            ));
        }
        if self.tls_cert_file.is_some() != self.tls_private_key_file.is_some() {
            return Err("--tls-cert-file and --tls-private-key-file must be given together".into());
        }
        let cluster_cidrs = if self.cluster_cidr.is_empty() {
            Vec::new()
        } else {
            parse_cluster_cidrs(&self.cluster_cidr).map_err(|e| e.to_string())?
        };
        let ipam = if self.allocate_node_cidrs {
            Some(
                NodeIpamConfig::from_flags(
                    &self.cluster_cidr,
                    MaskFlags {
                        node_cidr_mask_size: self.node_cidr_mask_size,
                        node_cidr_mask_size_ipv4: self.node_cidr_mask_size_ipv4,
                        node_cidr_mask_size_ipv6: self.node_cidr_mask_size_ipv6,
                    },
                    &self.service_cluster_ip_range,
                )
                .map_err(|e| e.to_string())?,
            )
        } else {
            None
        };
        Ok(Config {
            options: self,
            selection,
            ipam,
            cluster_cidrs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let mut argv = vec!["overcast-ccm"];
        argv.extend_from_slice(args);
        Options::try_parse_from(argv)
            .map_err(|e| e.to_string())?
            .validate()
    }

    #[test]
    fn upstream_defaults() {
        let c = parse(&["--cloud-provider=fake"]).unwrap().options;
        assert!(c.leader_elect && c.configure_cloud_routes && !c.allocate_node_cidrs);
        assert_eq!(c.secure_port, 10258);
        assert_eq!(c.leader_elect_lease_duration, Duration::from_secs(15));
        assert_eq!(c.leader_elect_resource_name, "cloud-controller-manager");
        assert_eq!(c.node_status_update_frequency, Duration::from_secs(300));
        assert_eq!(c.route_reconciliation_period, Duration::from_secs(10));
        assert_eq!((c.kube_api_qps, c.kube_api_burst), (20.0, 30));
        assert_eq!(c.cluster_name, "kubernetes");
        assert_eq!(
            c.authorization_always_allow_paths,
            ["/healthz,/readyz,/livez"]
        );
    }

    #[test]
    fn a_lease_counts_in_whole_seconds_as_the_lease_object_records_it() {
        let err = parse(&[
            "--cloud-provider=fake",
            "--leader-elect-lease-duration=900ms",
            "--leader-elect-renew-deadline=500ms",
            "--leader-elect-retry-period=100ms",
        ])
        .unwrap_err();
        assert!(err.contains("must be at least 1s"), "{err}");
        let c = parse(&[
            "--cloud-provider=fake",
            "--leader-elect-lease-duration=1500ms",
            "--leader-elect-renew-deadline=1s",
            "--leader-elect-retry-period=200ms",
        ])
        .unwrap();
        let warnings = c.options.no_effect_warnings().join("\n");
        assert!(warnings.contains("=1.5s counts as 1s"), "{warnings}");
        // Whole seconds, or no election at all: nothing to say.
        let c = parse(&[
            "--cloud-provider=fake",
            "--leader-elect-lease-duration=1s",
            "--leader-elect-renew-deadline=800ms",
            "--leader-elect-retry-period=200ms",
        ])
        .unwrap();
        assert!(c.options.no_effect_warnings().is_empty());
    }

    #[test]
    fn always_allow_paths_given_twice_add_up_and_replace_the_default() {
        let c = parse(&[
            "--cloud-provider=fake",
            "--authorization-always-allow-paths=/healthz",
            "--authorization-always-allow-paths=/metrics",
        ])
        .unwrap()
        .options;
        assert_eq!(c.authorization_always_allow_paths, ["/healthz", "/metrics"]);
    }

    #[test]
    fn go_style_flags() {
        let c = parse(&[
            "--cloud-provider",
            "fake",
            "--leader-elect=false",
            "--node-monitor-period=500ms",
            "--controllers=*,-route",
            "-v=4",
            "--allocate-node-cidrs",
            "--cluster-cidr=10.244.0.0/16",
        ])
        .unwrap();
        assert!(!c.options.leader_elect);
        assert_eq!(c.options.node_monitor_period, Duration::from_millis(500));
        assert_eq!(c.options.verbosity, 4);
        assert!(!c.selection.is_enabled("node-route-controller"));
        assert_eq!(c.ipam.unwrap().cluster_cidrs.len(), 1);
    }

    #[test]
    fn a_repeated_flag_takes_its_last_value_as_pflag_does() {
        let c = parse(&[
            "--cloud-provider=fake",
            "--cluster-name=a",
            "--cluster-name=b",
        ])
        .unwrap();
        assert_eq!(c.options.cluster_name, "b");
    }

    #[test]
    fn bad_values_name_their_flag() {
        let err = |args: &[&str]| parse(args).unwrap_err();
        assert!(err(&[]).contains("--cloud-provider"));
        assert!(
            err(&["--cloud-provider=fake", "--node-monitor-period=5"])
                .contains("--node-monitor-period")
        );
        assert!(err(&["--cloud-provider=fake", "--secure-port=99999"]).contains("--secure-port"));
        assert!(err(&["--cloud-provider=fake", "--controllers=nope"]).contains("--controllers"));
        assert!(
            err(&["--cloud-provider=fake", "--allocate-node-cidrs"]).contains("--cluster-cidr")
        );
        assert!(
            err(&[
                "--cloud-provider=fake",
                "--leader-elect-resource-lock=endpoints"
            ])
            .contains("leases")
        );
        assert!(err(&["--cloud-provider=fake", "--no-such-flag"]).contains("--no-such-flag"));
        assert!(
            err(&["--cloud-provider=fake", "--leader-elect-renew-deadline=20s"])
                .contains("--leader-elect-lease-duration")
        );
    }

    /// Values a user can type that once panicked a task or spun a loop.
    #[test]
    fn out_of_range_and_zero_values_are_refused_by_name() {
        let err = |flag: &str| {
            parse(&["--cloud-provider=fake", flag])
                .err()
                .unwrap_or_else(|| panic!("{flag} accepted"))
        };
        for (flag, names) in [
            (
                "--node-monitor-period=99999999999999999999h",
                "--node-monitor-period",
            ),
            ("--node-monitor-period=0s", "--node-monitor-period"),
            (
                "--node-status-update-frequency=0s",
                "--node-status-update-frequency",
            ),
            (
                "--route-reconciliation-period=0",
                "--route-reconciliation-period",
            ),
            (
                "--leader-elect-retry-period=0s",
                "--leader-elect-retry-period",
            ),
            // client-go: renewDeadline > retryPeriod × 1.2.
            (
                "--leader-elect-retry-period=9s",
                "--leader-elect-renew-deadline",
            ),
            ("--kube-api-qps=NaN", "--kube-api-qps"),
        ] {
            let e = err(flag);
            assert!(e.contains(names), "{flag}: {e}");
        }
        // The smallest and largest values are fine (no panic downstream).
        parse(&["--cloud-provider=fake", "--kube-api-qps=1e-30"]).unwrap();
        parse(&["--cloud-provider=fake", "--node-monitor-period=2562047h"]).unwrap();
    }

    /// Flags a Go CCM's manifest carries (cloud-provider-aws's, the k/k
    /// example's, kubeadm-style serving flags) start overcast-ccm; those
    /// that change nothing are named in a warning.
    #[test]
    fn a_go_ccm_manifests_flags_are_accepted_and_the_inert_ones_named() {
        let c = parse(&[
            "--cloud-provider=fake",
            "--v=2",
            "--use-service-account-credentials=true",
            "--configure-cloud-routes=false",
            "--webhooks=*",
            "--webhook-secure-port=0",
            "--permit-address-sharing",
            "--permit-port-sharing=true",
            "--tls-sni-cert-key=/etc/a.crt,/etc/a.key:*.example.com",
            "--tls-min-version=VersionTLS12",
            "--tls-cipher-suites=TLS_AES_128_GCM_SHA256",
            "--http2-max-streams-per-connection=1000",
            "--disable-http2-serving",
            "--client-ca-file=/etc/ca.crt",
            "--requestheader-client-ca-file=/etc/front.crt",
            "--authentication-skip-lookup",
            "--feature-gates=CloudControllerManagerWebhook=true",
            "--logging-format=text",
            "--log-text-split-stream",
            "--vmodule=service*=4",
            "--profiling=false",
            "--contention-profiling",
        ])
        .unwrap();
        let warnings = c.options.no_effect_warnings().join("\n");
        for flag in [
            "--use-service-account-credentials",
            "--tls-sni-cert-key",
            "--tls-cipher-suites",
            "--http2-max-streams-per-connection",
            "--client-ca-file",
            "--requestheader-client-ca-file",
            "--authentication-skip-lookup",
            "--feature-gates",
            "--vmodule",
            "--contention-profiling",
        ] {
            assert!(
                warnings.contains(&format!("{flag} has no effect: ")),
                "{flag} in:\n{warnings}"
            );
        }
        // Those with an effect (or upstream's own meaning) are not warned about.
        for flag in [
            "--permit-port-sharing",
            "--tls-min-version",
            "--log-text-split-stream",
            "--webhooks",
        ] {
            assert!(!warnings.contains(flag), "{flag} in:\n{warnings}");
        }
        assert!(
            parse(&["--cloud-provider=fake"])
                .unwrap()
                .options
                .no_effect_warnings()
                .is_empty()
        );
        let err = parse(&["--cloud-provider=fake", "--webhooks=foo"]).unwrap_err();
        assert!(
            err.contains("--webhooks: \"foo\" is not a known webhook"),
            "{err}"
        );
        let err = parse(&["--cloud-provider=fake", "--tls-min-version=TLS1.3"]).unwrap_err();
        assert!(err.contains("--tls-min-version=TLS1.3: unknown"), "{err}");
    }

    /// --help shows upstream's sections in upstream's order
    /// (k8s.io/cloud-provider v0.34 options.Flags and the global set), then
    /// the node IPAM section as the k/k example binary adds it, with help
    /// text on every flag.
    #[test]
    fn help_is_grouped_in_upstreams_sections() {
        use clap::CommandFactory as _;
        let help = Options::command().render_long_help().to_string();
        let sections: Vec<&str> = help.lines().filter(|l| l.ends_with(" flags:")).collect();
        assert_eq!(
            sections,
            [
                "Debugging flags:",
                "Leader-migration flags:",
                "Generic flags:",
                "Cloud-node-controller flags:",
                "Service-lb-controller flags:",
                "Webhook flags:",
                "Webhook serving flags:",
                "Secure serving flags:",
                "Authentication flags:",
                "Authorization flags:",
                "Misc flags:",
                "Global flags:",
                "Node-ipam-controller flags:",
            ]
        );
        for arg in Options::command().get_arguments() {
            assert!(
                arg.is_hide_set() || arg.get_help().is_some(),
                "--{} has no help text",
                arg.get_id()
            );
        }
    }

    fn spec() -> ControllerSpec {
        ControllerSpec::new("tagging", "Tagging controller flags")
            .disabled_by_default()
            .flag(ControllerFlag::new("tags", FlagKind::Repeated, "Tags."))
            .flag(ControllerFlag::new("workers", FlagKind::Value, "Workers.").default_value("1"))
            .flag(ControllerFlag::new("batch", FlagKind::Switch, "Batch.").default_value("false"))
            .check_flags(|v| match v.all("tags").iter().find(|t| !t.contains('=')) {
                Some(t) => Err(format!("{t} must be formatted as key=value")),
                None => Ok(()),
            })
    }

    fn parse_with_spec(args: &[&str]) -> Result<Options, clap::Error> {
        let mut argv = vec!["overcast-ccm", "--cloud-provider=aws"];
        argv.extend_from_slice(args);
        Options::parse_as("overcast-ccm", "0.1.0", &[spec()], argv)
    }

    #[test]
    fn a_provider_controllers_flags_are_parsed_as_written_with_defaults() {
        let options =
            parse_with_spec(&["--tags=a=1", "--tags", "b=2", "--workers=3", "--batch"]).unwrap();
        let (_, values) = &options.provider_controllers[0];
        assert_eq!(values.all("tags"), ["a=1", "b=2"]);
        assert_eq!(
            (values.get("workers"), values.get("batch")),
            (Some("3"), Some("true"))
        );
        let options = parse_with_spec(&[]).unwrap();
        let (_, values) = &options.provider_controllers[0];
        assert!(values.all("tags").is_empty());
        assert_eq!(
            (values.get("workers"), values.get("batch")),
            (Some("1"), Some("false"))
        );
        let config = options.validate().unwrap();
        assert!(!config.selection.is_enabled("tagging"), "off by default");
        let config = parse_with_spec(&["--controllers=*,tagging"])
            .unwrap()
            .validate()
            .unwrap();
        assert!(config.selection.is_enabled("tagging"));
    }

    #[test]
    fn a_provider_controllers_bad_flag_is_a_usage_error_naming_it() {
        let err = parse_with_spec(&["--tags=novalue"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
        assert!(
            err.to_string()
                .contains("novalue must be formatted as key=value"),
            "{err}"
        );
        let clash = ControllerSpec::new("x", "X flags").flag(ControllerFlag::new(
            "cluster-name",
            FlagKind::Value,
            "Clash.",
        ));
        let err =
            Options::parse_as("overcast-ccm", "0.1.0", &[clash], ["overcast-ccm"]).unwrap_err();
        assert!(
            err.to_string()
                .contains("--cluster-name is a flag of the cloud-controller-manager already"),
            "{err}"
        );
    }

    #[test]
    fn help_lists_a_provider_controllers_flags_under_its_heading() {
        let err = parse_with_spec(&["--help"]).unwrap_err();
        let help = err.to_string();
        let section = help.split("Tagging controller flags:").nth(1).expect(&help);
        assert!(
            section.contains("--tags")
                && section.contains("--workers")
                && section.contains("[default: 1]"),
            "{section}"
        );
    }
}
