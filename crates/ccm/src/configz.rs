//! `/configz`: the component configuration, as the Go CCM serves it
//! (k8s.io/cloud-provider v0.34.4, app/controllermanager.go registers
//! `ComponentConfig` under `cloudcontrollermanager.config.k8s.io`; the internal
//! type has no JSON tags, so its keys are the Go field names and durations
//! Go's strings). Read from a running Go CCM's /configz and kept field for
//! field; tests/ccm.rs compares the two.

use overcast_cloud_provider::duration::format_go_duration as go;
use serde_json::{Value, json};

use crate::migration::MigrationConfig;
use crate::options::Options;

/// The name upstream registers the configuration under.
pub const NAME: &str = "cloudcontrollermanager.config.k8s.io";

/// The whole /configz body.
pub fn body(opts: &Options, migration: Option<&MigrationConfig>) -> Value {
    json!({ NAME: component_config(opts, migration) })
}

/// `--controllers` with aliases replaced by canonical names, a `-` kept
/// (upstream's GenericControllerManagerConfigurationOptions.ApplyTo).
fn controllers(list: &[String]) -> Vec<String> {
    list.iter()
        .map(|given| {
            let (off, name) = match given.strip_prefix('-') {
                Some(name) => ("-", name),
                None => ("", given.as_str()),
            };
            let name = crate::controllers::canonical(name).unwrap_or(name);
            format!("{off}{name}")
        })
        .collect()
}

fn component_config(opts: &Options, migration: Option<&MigrationConfig>) -> Value {
    let leader_migration = match migration {
        Some(m) => json!({
            "LeaderName": m.leader_name,
            "ResourceLock": "leases",
            "ControllerLeaders": m.controller_leaders.iter().map(|c| json!({
                "Name": c.name,
                "Component": c.component,
            })).collect::<Vec<_>>(),
        }),
        None => json!({"LeaderName": "", "ResourceLock": "", "ControllerLeaders": null}),
    };
    let path = |p: &Option<std::path::PathBuf>| {
        p.as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    };
    json!({
        "Generic": {
            // The insecure port and address, removed upstream; their defaults.
            "Port": 0,
            "Address": "0.0.0.0",
            "MinResyncPeriod": go(opts.min_resync_period),
            "ClientConnection": {
                "Kubeconfig": path(&opts.kubeconfig),
                "AcceptContentTypes": "",
                "ContentType": opts.kube_api_content_type,
                // float32 as Go writes it: 20, not 20.0.
                "QPS": serde_json::from_str::<Value>(&opts.kube_api_qps.to_string()).unwrap_or(Value::Null),
                "Burst": opts.kube_api_burst,
            },
            "ControllerStartInterval": go(opts.controller_start_interval),
            "LeaderElection": {
                "LeaderElect": opts.leader_elect,
                "LeaseDuration": go(opts.leader_elect_lease_duration),
                "RenewDeadline": go(opts.leader_elect_renew_deadline),
                "RetryPeriod": go(opts.leader_elect_retry_period),
                "ResourceLock": opts.leader_elect_resource_lock,
                "ResourceName": opts.leader_elect_resource_name,
                "ResourceNamespace": opts.leader_elect_resource_namespace,
            },
            "Controllers": controllers(&opts.controllers),
            "Debugging": {
                "EnableProfiling": opts.profiling,
                "EnableContentionProfiling": opts.contention_profiling,
            },
            "LeaderMigrationEnabled": opts.enable_leader_migration,
            "LeaderMigration": leader_migration,
        },
        "KubeCloudShared": {
            "CloudProvider": {
                "Name": opts.cloud_provider,
                "CloudConfigFile": path(&opts.cloud_config),
            },
            "ExternalCloudVolumePlugin": opts.external_cloud_volume_plugin,
            "UseServiceAccountCredentials": opts.use_service_account_credentials,
            "AllowUntaggedCloud": opts.allow_untagged_cloud,
            "RouteReconciliationPeriod": go(opts.route_reconciliation_period),
            "NodeMonitorPeriod": go(opts.node_monitor_period),
            "ClusterName": opts.cluster_name,
            "ClusterCIDR": opts.cluster_cidr,
            "AllocateNodeCIDRs": opts.allocate_node_cidrs,
            "CIDRAllocatorType": opts.cidr_allocator_type,
            "ConfigureCloudRoutes": opts.configure_cloud_routes,
            "NodeSyncPeriod": go(opts.node_sync_period.unwrap_or_default()),
        },
        "NodeController": {"ConcurrentNodeSyncs": opts.concurrent_node_syncs},
        "ServiceController": {"ConcurrentServiceSyncs": opts.concurrent_service_syncs},
        "NodeStatusUpdateFrequency": go(opts.node_status_update_frequency),
        "Webhook": {
            "Webhooks": if opts.webhooks.is_empty() { Value::Null } else { json!(opts.webhooks) },
        },
    })
}
