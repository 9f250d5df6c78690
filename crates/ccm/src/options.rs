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

fn go_duration(s: &str) -> Result<Duration, String> {
    overcast_cloud_provider::duration::parse_go_duration(s)
}

/// overcast-ccm runs the cloud-specific control loops of Kubernetes: node
/// initialisation and lifecycle, LoadBalancer Services, routes and node IPAM.
#[derive(Debug, Clone, Parser)]
#[command(name = "overcast-ccm", version, about, long_about = None)]
#[command(rename_all = "kebab-case")]
// As with Go's pflag, a flag given twice takes its last value.
#[command(args_override_self = true)]
pub struct Options {
    /// The provider for cloud services (required).
    #[arg(long, default_value = "")]
    pub cloud_provider: String,
    /// The path to the cloud provider configuration file.
    #[arg(long)]
    pub cloud_config: Option<PathBuf>,
    /// Path to kubeconfig file with authorization and master location information.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The address of the Kubernetes API server (overrides any value in kubeconfig).
    #[arg(long)]
    pub master: Option<String>,
    /// The instance prefix for the cluster.
    #[arg(long, default_value = "kubernetes")]
    pub cluster_name: String,
    /// Controllers to enable: '*' for all, 'foo' to enable foo, '-foo' to disable foo.
    #[arg(long, value_delimiter = ',', default_value = "*")]
    pub controllers: Vec<String>,

    /// Start a leader election client and gain leadership before running the controllers.
    #[arg(long, default_value = "true", value_parser = BoolishValueParser::new(), num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub leader_elect: bool,
    #[arg(long, default_value = "15s", value_parser = go_duration)]
    pub leader_elect_lease_duration: Duration,
    #[arg(long, default_value = "10s", value_parser = go_duration)]
    pub leader_elect_renew_deadline: Duration,
    #[arg(long, default_value = "2s", value_parser = go_duration)]
    pub leader_elect_retry_period: Duration,
    /// Only "leases" is supported, as upstream's validation requires.
    #[arg(long, default_value = "leases")]
    pub leader_elect_resource_lock: String,
    #[arg(long, default_value = "cloud-controller-manager")]
    pub leader_elect_resource_name: String,
    #[arg(long, default_value = "kube-system")]
    pub leader_elect_resource_namespace: String,
    /// Enable leader migration (KEP-2436).
    #[arg(long, default_value = "false", value_parser = BoolishValueParser::new(), num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub enable_leader_migration: bool,
    /// Path to the LeaderMigrationConfiguration file; empty: the default configuration.
    #[arg(long)]
    pub leader_migration_config: Option<PathBuf>,

    /// The port on which to serve HTTPS (/healthz, /livez, /readyz, /metrics); 0 disables.
    #[arg(long, default_value_t = 10258)]
    pub secure_port: u16,
    /// The IP address on which to listen for the --secure-port port.
    #[arg(long, default_value = "0.0.0.0")]
    pub bind_address: IpAddr,
    /// Where the self-signed serving certificate is written when none is given.
    #[arg(long)]
    pub cert_dir: Option<PathBuf>,
    #[arg(long)]
    pub tls_cert_file: Option<PathBuf>,
    #[arg(long)]
    pub tls_private_key_file: Option<PathBuf>,
    /// Also serve plain HTTP on this port (0: off). Unauthenticated; for
    /// loopback and tests only.
    #[arg(long, default_value_t = 0)]
    pub insecure_port: u16,

    #[arg(long, default_value_t = 1)]
    pub concurrent_service_syncs: usize,
    #[arg(long, default_value_t = 1)]
    pub concurrent_node_syncs: usize,
    #[arg(long, default_value_t = 0)]
    pub concurrent_node_status_updates: usize,
    #[arg(long, default_value = "5m", value_parser = go_duration)]
    pub node_status_update_frequency: Duration,
    #[arg(long, default_value = "5s", value_parser = go_duration)]
    pub node_monitor_period: Duration,
    #[arg(long, default_value = "10s", value_parser = go_duration)]
    pub route_reconciliation_period: Duration,
    /// Should CIDRs for Pods be allocated and set on the cloud provider.
    #[arg(long, default_value = "false", value_parser = BoolishValueParser::new(), num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub allocate_node_cidrs: bool,
    /// Should CIDRs allocated by allocate-node-cidrs be configured on the cloud provider.
    #[arg(long, default_value = "true", value_parser = BoolishValueParser::new(), num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub configure_cloud_routes: bool,
    /// CIDR range for Pods in the cluster (a dual-stack pair, comma-separated, allowed).
    #[arg(long, default_value = "")]
    pub cluster_cidr: String,
    /// CIDR range for Services, never handed to Nodes by node IPAM.
    #[arg(long, default_value = "")]
    pub service_cluster_ip_range: String,
    #[arg(long)]
    pub node_cidr_mask_size: Option<u8>,
    #[arg(long)]
    pub node_cidr_mask_size_ipv4: Option<u8>,
    #[arg(long)]
    pub node_cidr_mask_size_ipv6: Option<u8>,
    /// Only RangeAllocator is supported.
    #[arg(long, default_value = "RangeAllocator")]
    pub cidr_allocator_type: String,

    /// QPS to use while talking with the apiserver (negative: unlimited).
    #[arg(long, default_value_t = 20.0, allow_negative_numbers = true)]
    pub kube_api_qps: f32,
    #[arg(long, default_value_t = 30)]
    pub kube_api_burst: u32,
    /// Accepted for compatibility; overcast-ccm speaks JSON to the apiserver.
    #[arg(long, default_value = "application/vnd.kubernetes.protobuf")]
    pub kube_api_content_type: String,
    /// Start even when the provider has no cluster ID (deprecated upstream).
    #[arg(long, default_value = "false", value_parser = BoolishValueParser::new(), num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub allow_untagged_cloud: bool,
    /// Accepted for compatibility: per-controller credentials are not used.
    #[arg(long, default_value = "false", value_parser = BoolishValueParser::new(), num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub use_service_account_credentials: bool,
    /// Accepted for compatibility (the watch caches do not resync).
    #[arg(long, default_value = "12h", value_parser = go_duration)]
    pub min_resync_period: Duration,
    /// Accepted for compatibility.
    #[arg(long, default_value = "true", value_parser = BoolishValueParser::new(), num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub profiling: bool,
    /// Delay between starting controllers (upstream's jitter is applied).
    #[arg(long, default_value = "0s", value_parser = go_duration)]
    pub controller_start_interval: Duration,
    /// Accepted for compatibility.
    #[arg(long, default_value = "")]
    pub external_cloud_volume_plugin: String,
    /// Deprecated upstream; a no-op.
    #[arg(long, value_parser = go_duration)]
    pub node_sync_period: Option<Duration>,
    /// Accepted for compatibility; Overcast has no feature gates yet.
    #[arg(long, default_value = "")]
    pub feature_gates: String,

    /// kubeconfig for TokenReviews of the secure port's bearer tokens
    /// (default: the --kubeconfig or in-cluster credentials).
    #[arg(long)]
    pub authentication_kubeconfig: Option<PathBuf>,
    /// kubeconfig for SubjectAccessReviews of the secure port's requests
    /// (default: the --kubeconfig or in-cluster credentials).
    #[arg(long)]
    pub authorization_kubeconfig: Option<PathBuf>,
    /// Paths served on the secure port without authentication or
    /// authorisation; one ending in `*` is a prefix. Comma-separated; given
    /// again, it adds to the list (a string slice, as upstream's).
    #[arg(
        long,
        default_value = crate::delegation::DEFAULT_ALWAYS_ALLOW,
        action = clap::ArgAction::Append
    )]
    pub authorization_always_allow_paths: Vec<String>,
    /// How long TokenReview answers are cached.
    #[arg(long, default_value = "10s", value_parser = go_duration)]
    pub authentication_token_webhook_cache_ttl: Duration,
    /// How long allowing SubjectAccessReview answers are cached.
    #[arg(long, default_value = "10s", value_parser = go_duration)]
    pub authorization_webhook_cache_authorized_ttl: Duration,
    /// How long denying SubjectAccessReview answers are cached.
    #[arg(long, default_value = "10s", value_parser = go_duration)]
    pub authorization_webhook_cache_unauthorized_ttl: Duration,
    /// Upstream's client-CA lookup, TLS tuning and logging flags: accepted
    /// so a manifest written for the Go CCM starts, and ignored
    /// (docs/running.md says what that means).
    #[arg(long, hide = true, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub authentication_skip_lookup: Option<String>,
    #[arg(long, hide = true, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub authentication_tolerate_lookup_failure: Option<String>,
    #[arg(long, hide = true)]
    pub requestheader_uid_headers: Option<String>,
    #[arg(long, hide = true)]
    pub client_ca_file: Option<String>,
    #[arg(long, hide = true)]
    pub requestheader_client_ca_file: Option<String>,
    #[arg(long, hide = true)]
    pub requestheader_allowed_names: Option<String>,
    #[arg(long, hide = true)]
    pub requestheader_extra_headers_prefix: Option<String>,
    #[arg(long, hide = true)]
    pub requestheader_group_headers: Option<String>,
    #[arg(long, hide = true)]
    pub requestheader_username_headers: Option<String>,
    #[arg(long, hide = true)]
    pub tls_cipher_suites: Option<String>,
    #[arg(long, hide = true)]
    pub tls_min_version: Option<String>,
    #[arg(long, hide = true, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub contention_profiling: Option<String>,
    #[arg(long, hide = true)]
    pub vmodule: Option<String>,
    #[arg(long, hide = true)]
    pub logging_format: Option<String>,
    #[arg(long, hide = true)]
    pub log_flush_frequency: Option<String>,

    /// Log verbosity, as klog's -v (0: info, 2: more, 4: debug, 6+: trace).
    #[arg(short = 'v', long = "v", default_value_t = 0)]
    pub verbosity: u8,
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
        let selection = Selection::parse(&self.controllers)?;
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
                ("--leader-elect-lease-duration", self.leader_elect_lease_duration),
                ("--leader-elect-renew-deadline", self.leader_elect_renew_deadline),
                ("--leader-elect-retry-period", self.leader_elect_retry_period),
            ] {
                if value.is_zero() {
                    return Err(format!("{flag} must be greater than zero"));
                }
            }
        }
        // Periods of loops: zero would spin (upstream's wait.Until does).
        for (flag, value) in [
            ("--node-monitor-period", self.node_monitor_period),
            ("--node-status-update-frequency", self.node_status_update_frequency),
            ("--route-reconciliation-period", self.route_reconciliation_period),
        ] {
            if value.is_zero() {
                return Err(format!("{flag} must be greater than zero"));
            }
        }
        if !self.kube_api_qps.is_finite() {
            return Err(format!("--kube-api-qps={}: must be a number", self.kube_api_qps));
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
            ("--node-monitor-period=99999999999999999999h", "--node-monitor-period"),
            ("--node-monitor-period=0s", "--node-monitor-period"),
            ("--node-status-update-frequency=0s", "--node-status-update-frequency"),
            ("--route-reconciliation-period=0", "--route-reconciliation-period"),
            ("--leader-elect-retry-period=0s", "--leader-elect-retry-period"),
            // client-go: renewDeadline > retryPeriod × 1.2.
            ("--leader-elect-retry-period=9s", "--leader-elect-renew-deadline"),
            ("--kube-api-qps=NaN", "--kube-api-qps"),
        ] {
            let e = err(flag);
            assert!(e.contains(names), "{flag}: {e}");
        }
        // The smallest and largest values are fine (no panic downstream).
        parse(&["--cloud-provider=fake", "--kube-api-qps=1e-30"]).unwrap();
        parse(&["--cloud-provider=fake", "--node-monitor-period=2562047h"]).unwrap();
    }
}
