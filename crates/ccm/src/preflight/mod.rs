//! `overcast-ccm migrate check [FLAGS] [-o table|json]`: before overcast-ccm
//! takes over from another cloud controller manager or load-balancer
//! implementation, what it would change. Takes the flags overcast-ccm will
//! run with, reads the cluster and asks the provider read-only questions (no
//! `initialize`, no write anywhere), prints the findings, and exits 1 when
//! any is a hazard. The decisions are in [`plan`].

pub mod plan;

use std::ffi::OsString;
use std::process::ExitCode;

use anyhow::Context as _;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, PersistentVolume, Pod, Service};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::Api;
use kube::api::{ListParams, PostParams};
use overcast_cloud_provider::{CloudError, CloudProvider, ProviderRegistry};

use overcast_controllers::service::plan::{ClassPolicy, has_finalizer, wants_load_balancer};

use crate::migration::{MigrationConfig, Placement};
use crate::options::{Config, Options};
use overcast_cloud_provider::names::controllers::{
    CLOUD_NODE, CLOUD_NODE_LIFECYCLE, NODE_IPAM, NODE_ROUTE, SERVICE_LB,
};
use plan::{Finding, Severity};

/// Runs the check; `args` are what follows `migrate check`.
pub fn main(
    binary: &crate::app::Binary,
    registry: &ProviderRegistry,
    args: Vec<OsString>,
) -> ExitCode {
    let command = format!("{} migrate check", binary.name);
    // As crate::main: ring for the process, whatever a provider's SDK links.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (json, rest) = match output_format(args) {
        Ok(split) => split,
        Err(e) => {
            eprintln!("{command}: {e}");
            return ExitCode::from(2);
        }
    };
    let options = match Options::parse_as(
        &command,
        &binary.version,
        &binary.controllers,
        std::iter::once(OsString::from(&command)).chain(rest),
    ) {
        Ok(o) => o,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let config = match options.validate() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{command}: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{command}: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(check(&config, registry)) {
        Ok(findings) => {
            let findings = plan::sorted(findings);
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&findings).unwrap_or_default()
                );
            } else {
                print!("{}", plan::table(&findings));
            }
            if findings.iter().any(|f| f.severity == Severity::Hazard) {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("{command}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `-o json`, `-o=json`, `--output json`, `--output=json` (or `table`),
/// taken out of the flags that go to overcast-ccm's own parser.
fn output_format(args: Vec<OsString>) -> Result<(bool, Vec<OsString>), String> {
    let mut json = false;
    let mut rest = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let text = arg.to_string_lossy().into_owned();
        let value = match text.as_str() {
            "-o" | "--output" => Some(
                args.next()
                    .map(|v| v.to_string_lossy().into_owned())
                    .ok_or("-o needs a value: table or json")?,
            ),
            t => t
                .strip_prefix("-o=")
                .or_else(|| t.strip_prefix("--output="))
                .map(str::to_string),
        };
        match value.as_deref() {
            None => rest.push(arg),
            Some("json") => json = true,
            Some("table") => json = false,
            Some(other) => return Err(format!("-o {other}: one of table, json")),
        }
    }
    Ok((json, rest))
}

async fn check(config: &Config, registry: &ProviderRegistry) -> anyhow::Result<Vec<Finding>> {
    let opts = &config.options;
    // The provider as overcast-ccm builds it, but never initialised: a
    // provider's data plane (the local provider's listeners) starts there.
    let cloud = registry
        .init(&opts.cloud_provider, opts.cloud_config.as_deref())
        .map_err(anyhow::Error::new)?;
    let client_config = crate::app::client_config(opts).await?;
    let client = kube::Client::try_from(client_config).context("building the Kubernetes client")?;
    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
        .context("listing Nodes")?
        .items;
    let services = Api::<Service>::all(client.clone())
        .list(&ListParams::default())
        .await
        .context("listing Services")?
        .items;
    // Volumes are read for the label checks only; overcast-ccm's own RBAC
    // has no rights on them, so a refusal is a note, not the end.
    let mut findings = Vec::new();
    const LABELS: &str = "the Node label checks did not look at them";
    let pvs: Vec<PersistentVolume> =
        readable(&client, "PersistentVolumes", LABELS, &mut findings).await?;
    let classes: Vec<StorageClass> =
        readable(&client, "StorageClasses", LABELS, &mut findings).await?;

    // Only what the enabled controllers would do (--controllers).
    let enabled = |name| config.selection.is_enabled(name);
    let lifecycle = enabled(CLOUD_NODE_LIFECYCLE);
    let init = enabled(CLOUD_NODE);
    if lifecycle || init {
        let found = node_findings(cloud.as_ref(), &nodes, &pvs, &classes).await;
        findings.extend(found.into_iter().filter(|f| {
            let deletion = f.message.contains("the lifecycle controller would delete");
            if deletion { lifecycle } else { init }
        }));
    }
    if enabled(SERVICE_LB) {
        findings.extend(service_findings(config, cloud.as_ref(), &nodes, &services).await);
        // An incumbent's data plane still running (k3s servicelb).
        let daemonsets: Vec<DaemonSet> = readable(
            &client,
            "DaemonSets",
            "no check for a k3s servicelb still running",
            &mut findings,
        )
        .await?;
        findings.extend(plan::servicelb_daemonsets(&daemonsets));
    }

    let migration = match &opts.leader_migration_config {
        _ if !(opts.enable_leader_migration && opts.leader_elect) => None,
        Some(path) => Some(MigrationConfig::load(path).map_err(anyhow::Error::msg)?),
        None => Some(MigrationConfig::default_config()),
    };
    // A kube-controller-manager that would run what overcast-ccm runs.
    let ours = own_controllers(config, cloud.as_ref(), migration.as_ref());
    match Api::<Pod>::namespaced(client.clone(), "kube-system")
        .list(&ListParams::default())
        .await
    {
        Ok(pods) => findings.extend(plan::controller_managers(&pods.items, &ours)),
        Err(kube::Error::Api(e)) if e.code == 403 => findings.push(Finding {
            severity: Severity::Note,
            object: "pods".into(),
            message: "these credentials may not list Pods in kube-system: no check for a kube-controller-manager running the same controllers".into(),
        }),
        Err(e) => return Err(e).context("listing Pods in kube-system"),
    }

    let namespace = &opts.leader_elect_resource_namespace;
    let mut leases = vec![opts.leader_elect_resource_name.clone()];
    if let Some(migration) = migration {
        leases.push(migration.leader_name);
    }
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    let lease_api: Api<Lease> = Api::namespaced(client.clone(), namespace);
    for name in &leases {
        let lease = lease_api
            .get_opt(name)
            .await
            .with_context(|| format!("reading Lease {namespace}/{name}"))?;
        findings.push(plan::lease(namespace, name, lease.as_ref(), now));
    }

    let names: Vec<&str> = leases.iter().map(String::as_str).collect();
    let mut missing = Vec::new();
    for p in plan::required(namespace, &names) {
        if !allowed(&client, &p).await? {
            missing.push(p);
        }
    }
    findings.extend(plan::rbac(&missing, "these credentials"));
    Ok(findings)
}

/// The controllers a kube-controller-manager may run too that overcast-ccm
/// will run with these flags and this provider, and under which Lease.
fn own_controllers(
    config: &Config,
    cloud: &dyn CloudProvider,
    migration: Option<&MigrationConfig>,
) -> Vec<plan::OwnController> {
    let opts = &config.options;
    let runs = |name: &str| {
        config.selection.is_enabled(name)
            && match name {
                SERVICE_LB => cloud.load_balancer().is_some(),
                CLOUD_NODE_LIFECYCLE => {
                    cloud.instances_v2().is_some() || cloud.instances().is_some()
                }
                NODE_ROUTE => opts.configure_cloud_routes && cloud.routes().is_some(),
                _ => config.ipam.is_some(),
            }
    };
    [CLOUD_NODE_LIFECYCLE, SERVICE_LB, NODE_ROUTE, NODE_IPAM]
        .into_iter()
        .filter(|name| runs(name))
        .filter_map(|name| {
            let placement = migration.map_or(Placement::NonMigrated, |m| m.placement(name));
            (placement != Placement::Unowned).then_some(plan::OwnController {
                name,
                migrated: placement == Placement::Migrated,
            })
        })
        .collect()
}

/// Every object of a kind (in every namespace); a Forbidden answer is a
/// note saying what was not checked (`unchecked`).
async fn readable<K>(
    client: &kube::Client,
    what: &str,
    unchecked: &str,
    findings: &mut Vec<Finding>,
) -> anyhow::Result<Vec<K>>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
{
    match Api::<K>::all(client.clone())
        .list(&ListParams::default())
        .await
    {
        Ok(list) => Ok(list.items),
        Err(kube::Error::Api(e)) if e.code == 403 => {
            findings.push(Finding {
                severity: Severity::Note,
                object: what.to_lowercase(),
                message: format!("these credentials may not list {what}: {unchecked}"),
            });
            Ok(Vec::new())
        }
        Err(e) => Err(e).with_context(|| format!("listing {what}")),
    }
}

async fn node_findings(
    cloud: &dyn CloudProvider,
    nodes: &[Node],
    pvs: &[PersistentVolume],
    classes: &[StorageClass],
) -> Vec<Finding> {
    if cloud.instances_v2().is_none() && cloud.instances().is_none() {
        return vec![Finding {
            severity: Severity::Note,
            object: "nodes".into(),
            message: "the provider has no instances: the node controllers do nothing, and Nodes were not checked".into(),
        }];
    }
    let mut findings = Vec::new();
    for node in nodes {
        // Asked as the node controllers ask (InstancesV2, else legacy).
        let exists = overcast_controllers::instances::exists(cloud, node)
            .await
            .map_err(|e| e.to_string());
        let metadata = match exists {
            Ok(true) => overcast_controllers::instances::metadata(cloud, node)
                .await
                .map_err(|e| e.to_string()),
            _ => Ok(None),
        };
        findings.extend(plan::node(node, &exists, &metadata, pvs, classes));
    }
    findings
}

/// The service controller's own class rule (`--load-balancer-class`,
/// `--serve-classless-load-balancers`).
fn class_policy(config: &Config) -> ClassPolicy {
    ClassPolicy {
        class: config.options.load_balancer_class.clone(),
        skip_classless: !config.options.serve_classless_load_balancers,
    }
}

/// Whether overcast-ccm's service controller would serve the Service (one
/// being deleted is the controller's to clean up, not to judge).
fn served(policy: &ClassPolicy, svc: &Service) -> bool {
    wants_load_balancer(svc, policy) && svc.metadata.deletion_timestamp.is_none()
}

async fn service_findings(
    config: &Config,
    cloud: &dyn CloudProvider,
    nodes: &[Node],
    services: &[Service],
) -> Vec<Finding> {
    let policy = class_policy(config);
    let to_serve: Vec<&Service> = services.iter().filter(|s| served(&policy, s)).collect();
    if to_serve.is_empty() {
        return Vec::new();
    }
    let Some(balancer) = cloud.load_balancer() else {
        return vec![Finding {
            severity: Severity::Hazard,
            object: "services".into(),
            message: format!(
                "the provider has no load balancers: {} LoadBalancer Service(s) would get none",
                to_serve.len()
            ),
        }];
    };
    let cluster = &config.options.cluster_name;
    // What the service controller restores: the Services it serves and
    // those still carrying its finalizer.
    let all: Vec<Service> = services
        .iter()
        .filter(|s| wants_load_balancer(s, &policy) || has_finalizer(s))
        .cloned()
        .collect();
    if let Err(e) = balancer.restore(cluster, &all).await {
        return vec![Finding {
            severity: Severity::Hazard,
            object: "services".into(),
            message: format!("the provider could not read the Services' balancers: {e}"),
        }];
    }
    let node_refs: Vec<&Node> = nodes.iter().collect();
    let mut findings = Vec::new();
    for svc in to_serve {
        let preview = match balancer
            .preview_load_balancer(cluster, svc, &node_refs)
            .await
        {
            Err(CloudError::ImplementedElsewhere) => continue,
            Err(CloudError::NotImplemented) => Err(
                "the provider cannot say what its balancer would be without making it".to_string(),
            ),
            other => other.map_err(|e| e.to_string()),
        };
        findings.extend(plan::service(
            svc,
            &preview,
            &balancer.unhonoured_annotations(svc),
        ));
    }
    findings
}

/// A SelfSubjectAccessReview: may these credentials do it?
async fn allowed(client: &kube::Client, p: &plan::Permission) -> anyhow::Result<bool> {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(p.verb.into()),
                group: Some(p.group.into()),
                resource: Some(p.resource.into()),
                subresource: (!p.subresource.is_empty()).then(|| p.subresource.into()),
                namespace: p.namespace.clone(),
                name: p.name.clone(),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = Api::<SelfSubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .with_context(|| format!("asking whether these credentials may {p}"))?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_output_flag_is_taken_out_of_the_ccm_flags() {
        let args = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        let (json, rest) = output_format(args(&["--cloud-provider=local", "-o", "json"])).unwrap();
        assert!(json);
        assert_eq!(rest, args(&["--cloud-provider=local"]));
        assert!(!output_format(args(&["--output=table"])).unwrap().0);
        assert_eq!(
            output_format(args(&["-o=yaml"])).unwrap_err(),
            "-o yaml: one of table, json"
        );
    }
}
