//! The preflight's decisions: from what the cluster holds and what the
//! provider answers (read-only), the findings a user must see before
//! overcast-ccm takes over. Pure functions; the wiring is in `mod.rs`.

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{LoadBalancerStatus, Node, PersistentVolume, Pod, Service};
use k8s_openapi::api::storage::v1::StorageClass;
use overcast_cloud_provider::names::{
    LABEL_INSTANCE_TYPE, LABEL_INSTANCE_TYPE_BETA, LABEL_REGION, LABEL_REGION_BETA, LABEL_ZONE,
    LABEL_ZONE_BETA,
};
use overcast_cloud_provider::{InstanceMetadata, LoadBalancerPreview};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Something a user would lose or see change: the check fails.
    Hazard,
    /// Worth knowing; nothing is lost.
    Note,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub severity: Severity,
    /// `node/<name>`, `service/<ns>/<name>`, `lease/<ns>/<name>`, `rbac`.
    pub object: String,
    pub message: String,
}

fn hazard(object: &str, message: String) -> Finding {
    Finding {
        severity: Severity::Hazard,
        object: object.to_string(),
        message,
    }
}

fn note(object: &str, message: String) -> Finding {
    Finding {
        severity: Severity::Note,
        object: object.to_string(),
        message,
    }
}

fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// The PersistentVolumes whose required node affinity asks for `key` = `value`.
fn pinned_volumes(pvs: &[PersistentVolume], key: &str, value: &str) -> Vec<String> {
    pvs.iter()
        .filter(|pv| {
            let terms = pv
                .spec
                .as_ref()
                .and_then(|s| s.node_affinity.as_ref())
                .and_then(|a| a.required.as_ref())
                .map(|r| r.node_selector_terms.as_slice())
                .unwrap_or_default();
            terms.iter().any(|t| {
                t.match_expressions.iter().flatten().any(|e| {
                    e.key == key
                        && e.operator == "In"
                        && e.values.iter().flatten().any(|v| v == value)
                })
            })
        })
        .filter_map(|pv| pv.metadata.name.clone())
        .collect()
}

/// The StorageClasses whose allowedTopologies admit `key` = `current` and
/// not `wanted`: volumes they provision fit Nodes labelled as now, and not
/// Nodes labelled as the provider would label them.
fn confining_classes(
    classes: &[StorageClass],
    key: &str,
    current: &str,
    wanted: &str,
) -> Vec<String> {
    classes
        .iter()
        .filter(|c| {
            let allowed: Vec<&String> = c
                .allowed_topologies
                .iter()
                .flatten()
                .flat_map(|t| t.match_label_expressions.iter().flatten())
                .filter(|e| e.key == key)
                .flat_map(|e| e.values.iter())
                .collect();
            allowed.iter().any(|v| *v == current) && !allowed.iter().any(|v| *v == wanted)
        })
        .filter_map(|c| c.metadata.name.clone())
        .collect()
}

/// What the provider says of a Node's machine, against the Node.
pub fn node(
    node: &Node,
    exists: &Result<bool, String>,
    metadata: &Result<Option<InstanceMetadata>, String>,
    pvs: &[PersistentVolume],
    classes: &[StorageClass],
) -> Vec<Finding> {
    let name = node.metadata.name.as_deref().unwrap_or_default();
    let object = format!("node/{name}");
    let provider_id = node
        .spec
        .as_ref()
        .and_then(|s| s.provider_id.as_deref())
        .unwrap_or_default();
    match exists {
        Err(e) => {
            return vec![hazard(
                &object,
                format!("the provider cannot tell whether its machine exists: {e}"),
            )];
        }
        Ok(false) => {
            let when = if is_ready(node) {
                "once it is NotReady"
            } else {
                "now: it is NotReady"
            };
            let id = if provider_id.is_empty() {
                "no spec.providerID".to_string()
            } else {
                format!("spec.providerID {provider_id:?}")
            };
            return vec![hazard(
                &object,
                format!(
                    "the provider finds no machine for it ({id}): the lifecycle controller would delete the Node {when}"
                ),
            )];
        }
        Ok(true) => {}
    }
    let metadata = match metadata {
        Err(e) => return vec![hazard(&object, format!("instance metadata: {e}"))],
        Ok(None) => {
            return vec![note(
                &object,
                "the provider has no metadata for its machine yet: a Node registering for it would stay uninitialised".into(),
            )];
        }
        Ok(Some(m)) => m,
    };
    let mut found = Vec::new();
    if !metadata.provider_id.is_empty() && metadata.provider_id != provider_id {
        found.push(if provider_id.is_empty() {
            note(
                &object,
                format!(
                    "no spec.providerID; the provider's is {:?}",
                    metadata.provider_id
                ),
            )
        } else {
            hazard(
                &object,
                format!(
                    "spec.providerID is {provider_id:?}, the provider's is {:?}: the Node keeps its own (it cannot change), and lookups by it may fail",
                    metadata.provider_id
                ),
            )
        });
    }
    let labels = node.metadata.labels.clone().unwrap_or_default();
    // The beta keys too: volumes of older in-tree provisioners are pinned
    // by them.
    for (key, wanted) in [
        (LABEL_ZONE, &metadata.zone),
        (LABEL_ZONE_BETA, &metadata.zone),
        (LABEL_REGION, &metadata.region),
        (LABEL_REGION_BETA, &metadata.region),
        (LABEL_INSTANCE_TYPE, &metadata.instance_type),
        (LABEL_INSTANCE_TYPE_BETA, &metadata.instance_type),
    ] {
        let Some(current) = labels.get(key) else {
            continue;
        };
        if wanted.is_empty() || current == wanted {
            continue;
        }
        let pinned = pinned_volumes(pvs, key, current);
        let confining = confining_classes(classes, key, current, wanted);
        let mut message = format!(
            "label {key} is {current:?}, the provider says {wanted:?}: Nodes registering for such machines would get {wanted:?}"
        );
        if !pinned.is_empty() {
            message += &format!(
                ", and PersistentVolume(s) {} require {key}={current}",
                pinned.join(", ")
            );
        }
        if !confining.is_empty() {
            message += &format!(
                ", and StorageClass(es) {} allow {key}={current} but not {wanted}",
                confining.join(", ")
            );
        }
        found.push(if pinned.is_empty() && confining.is_empty() {
            note(&object, message)
        } else {
            hazard(&object, message)
        });
    }
    found
}

/// The addresses in a balancer status, IPs and hostnames, in order.
pub(crate) fn ingress_addresses(status: Option<&LoadBalancerStatus>) -> Vec<String> {
    status
        .and_then(|s| s.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.clone().or_else(|| i.hostname.clone()))
        .collect()
}

/// The same, as a set: a Service keeps its addresses in any order.
fn addresses(status: Option<&LoadBalancerStatus>) -> BTreeSet<String> {
    ingress_addresses(status).into_iter().collect()
}

fn listed(set: &BTreeSet<String>) -> String {
    set.iter().cloned().collect::<Vec<_>>().join(", ")
}

/// A Service overcast-ccm would serve: what its balancer would be, against
/// what the Service has now.
pub fn service(
    svc: &Service,
    preview: &Result<LoadBalancerPreview, String>,
    unhonoured: &[String],
) -> Vec<Finding> {
    let object = format!(
        "service/{}/{}",
        svc.metadata.namespace.as_deref().unwrap_or("default"),
        svc.metadata.name.as_deref().unwrap_or_default()
    );
    let current = addresses(svc.status.as_ref().and_then(|s| s.load_balancer.as_ref()));
    let mut found = Vec::new();
    let preview = preview
        .as_ref()
        .map(|p| (p.status.as_ref(), p.changes.as_slice()));
    match preview {
        Err(e) => found.push(hazard(
            &object,
            format!("overcast-ccm could not serve it: {e}"),
        )),
        Ok((None, _)) if current.is_empty() => {
            found.push(note(
                &object,
                "a new load balancer would be made for it".into(),
            ));
        }
        Ok((None, _)) => found.push(hazard(
            &object,
            format!(
                "a new load balancer would be made for it, its address replacing {}",
                listed(&current)
            ),
        )),
        Ok((Some(status), changes)) => {
            if !changes.is_empty() {
                found.push(hazard(
                    &object,
                    format!("its load balancer would change: {}", changes.join("; ")),
                ));
            }
            let next = addresses(Some(status));
            if current.is_empty() {
                found.push(note(&object, format!("would get {}", listed(&next))));
            } else if next != current {
                found.push(hazard(
                    &object,
                    format!(
                        "its address would change from {} to {}",
                        listed(&current),
                        listed(&next)
                    ),
                ));
            }
        }
    }
    for u in unhonoured {
        found.push(hazard(&object, format!("annotation {u}")));
    }
    found
}

/// The DaemonSets k3s's servicelb (and RKE2's, the same code) runs for a
/// Service, by the labels it gives them (pkg/cloudprovider/servicelb.go:
/// `svccontroller.<program>.cattle.io/svcname` and `/svcnamespace`). One left
/// running keeps its hostPorts on every node it runs on, so traffic for the
/// Service's ports to any address of those nodes, a VIP included, reaches
/// its pods instead of overcast-ccm's listener.
pub fn servicelb_daemonsets(daemonsets: &[DaemonSet]) -> Vec<Finding> {
    let mut found = Vec::new();
    for ds in daemonsets {
        let labels = ds.metadata.labels.clone().unwrap_or_default();
        let Some(program) = ["k3s", "rke2"]
            .into_iter()
            .find(|p| labels.contains_key(&format!("svccontroller.{p}.cattle.io/svcname")))
        else {
            continue;
        };
        let label = |what: &str| {
            labels
                .get(&format!("svccontroller.{program}.cattle.io/{what}"))
                .cloned()
                .unwrap_or_default()
        };
        let ports: Vec<String> = ds
            .spec
            .iter()
            .flat_map(|s| s.template.spec.iter())
            .flat_map(|p| &p.containers)
            .flat_map(|c| c.ports.iter().flatten())
            .filter_map(|p| {
                Some(format!(
                    "{}/{}",
                    p.host_port?,
                    p.protocol.as_deref().unwrap_or("TCP")
                ))
            })
            .collect();
        found.push(hazard(
            &format!(
                "daemonset/{}/{}",
                ds.metadata.namespace.as_deref().unwrap_or_default(),
                ds.metadata.name.as_deref().unwrap_or_default()
            ),
            format!(
                "{program} servicelb still runs for service/{}/{}: its pods hold host ports {} on every node they run on, so that traffic, a VIP's too, reaches them and not overcast-ccm; disable servicelb ({program} server --disable=servicelb) and delete the DaemonSet first",
                label("svcnamespace"),
                label("svcname"),
                if ports.is_empty() { "(none listed)".to_string() } else { ports.join(", ") }
            ),
        ));
    }
    found
}

/// Who holds a Lease overcast-ccm will take, and with what timings.
pub fn lease(namespace: &str, name: &str, lease: Option<&Lease>, now_seconds: i64) -> Finding {
    let object = format!("lease/{namespace}/{name}");
    let spec = lease.and_then(|l| l.spec.as_ref());
    let holder = spec
        .and_then(|s| s.holder_identity.as_deref())
        .filter(|h| !h.is_empty());
    let Some(holder) = holder else {
        return note(&object, "free: overcast-ccm takes it at once".into());
    };
    let duration = spec.and_then(|s| s.lease_duration_seconds).unwrap_or(0);
    let renewed = spec
        .and_then(|s| s.renew_time.as_ref())
        .map(|t| now_seconds - t.0.as_second());
    match renewed {
        Some(age) if age <= i64::from(duration) => note(
            &object,
            format!(
                "held by {holder:?}, renewed {age}s ago for {duration}s: overcast-ccm waits until that holder stops renewing it"
            ),
        ),
        _ => note(
            &object,
            format!("held by {holder:?} but expired: overcast-ccm takes it over"),
        ),
    }
}

/// A permission overcast-ccm needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permission {
    pub verb: &'static str,
    pub group: &'static str,
    pub resource: &'static str,
    pub subresource: &'static str,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let group = if self.group.is_empty() {
            String::new()
        } else {
            format!(".{}", self.group)
        };
        let sub = if self.subresource.is_empty() {
            String::new()
        } else {
            format!("/{}", self.subresource)
        };
        write!(f, "{} {}{group}{sub}", self.verb, self.resource)?;
        if let Some(name) = &self.name {
            write!(f, " {name:?}")?;
        }
        if let Some(ns) = &self.namespace {
            write!(f, " in {ns}")?;
        }
        Ok(())
    }
}

/// What deploy/rbac.yaml grants: the controllers' rights, the Leases' (by
/// name, in their namespace), and the reviews of the secure port's
/// delegated authentication and authorisation.
pub fn required(lease_namespace: &str, lease_names: &[&str]) -> Vec<Permission> {
    let p = |verb, group, resource, subresource| Permission {
        verb,
        group,
        resource,
        subresource,
        namespace: None,
        name: None,
    };
    let mut out = Vec::new();
    for verb in ["get", "list", "watch", "patch", "delete"] {
        out.push(p(verb, "", "nodes", ""));
    }
    out.push(p("patch", "", "nodes", "status"));
    for verb in ["get", "list", "watch", "patch"] {
        out.push(p(verb, "", "services", ""));
    }
    out.push(p("patch", "", "services", "status"));
    out.push(p("create", "", "events", ""));
    out.push(p("patch", "", "events", ""));
    out.push(Permission {
        namespace: Some(lease_namespace.to_string()),
        ..p("create", "coordination.k8s.io", "leases", "")
    });
    for name in lease_names {
        for verb in ["get", "update"] {
            out.push(Permission {
                namespace: Some(lease_namespace.to_string()),
                name: Some(name.to_string()),
                ..p(verb, "coordination.k8s.io", "leases", "")
            });
        }
    }
    out.push(p("create", "authentication.k8s.io", "tokenreviews", ""));
    out.push(p(
        "create",
        "authorization.k8s.io",
        "subjectaccessreviews",
        "",
    ));
    out
}

pub fn rbac(missing: &[Permission], user: &str) -> Vec<Finding> {
    missing
        .iter()
        .map(|p| {
            hazard(
                "rbac",
                format!("{user} may not {p} (deploy/rbac.yaml grants it)"),
            )
        })
        .collect()
}

/// Hazards first, then notes; each kind of object together.
pub fn sorted(mut findings: Vec<Finding>) -> Vec<Finding> {
    findings.sort_by(|a, b| (a.severity, &a.object).cmp(&(b.severity, &b.object)));
    findings
}

/// A table for people: severity, object, message; a summary line last.
pub fn table(findings: &[Finding]) -> String {
    let width = findings.iter().map(|f| f.object.len()).max().unwrap_or(0);
    let mut out = String::new();
    for f in findings {
        let severity = match f.severity {
            Severity::Hazard => "HAZARD",
            Severity::Note => "note",
        };
        out += &format!("{severity:<6}  {:<width$}  {}\n", f.object, f.message);
    }
    let hazards = findings
        .iter()
        .filter(|f| f.severity == Severity::Hazard)
        .count();
    out += &format!(
        "{hazards} hazard(s), {} note(s)\n",
        findings.len() - hazards
    );
    out
}

/// A controller overcast-ccm will run, and under which Lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnController {
    pub name: &'static str,
    /// Under the migration Lease (else under the main one).
    pub migrated: bool,
}

/// Where kube-controller-manager runs a controller.
#[derive(Debug, Clone, PartialEq, Eq)]
enum KcmPlacement {
    /// Under its own Lease, always; why.
    Main(String),
    /// Under the migration Lease.
    Migrated,
    /// Decided by a file on its node that the check cannot read.
    File(String),
    /// Its default migration configuration, read by a version before v1.28
    /// (pre-1.28 names), or by one whose version is unknown.
    UnknownVersion,
}

/// The cloud controllers a kube-controller-manager may run beside
/// overcast-ccm, in the order upstream lists them.
const SHARED_CONTROLLERS: [&str; 4] = [
    overcast_cloud_provider::names::controllers::CLOUD_NODE_LIFECYCLE,
    overcast_cloud_provider::names::controllers::SERVICE_LB,
    overcast_cloud_provider::names::controllers::NODE_ROUTE,
    overcast_cloud_provider::names::controllers::NODE_IPAM,
];

/// A container's flags as kube-controller-manager reads them: `--name=value`
/// or `--name value`; the last one given wins.
fn flag<'a>(argv: &'a [String], name: &str) -> Option<&'a str> {
    let long = format!("--{name}");
    let mut found = None;
    let mut args = argv.iter();
    while let Some(arg) = args.next() {
        if let Some(value) = arg.strip_prefix(&long) {
            if let Some(value) = value.strip_prefix('=') {
                found = Some(value);
            } else if value.is_empty() {
                // A boolean given bare, or a value in the next word.
                found = Some(match args.clone().next() {
                    Some(next) if !next.starts_with('-') => args.next().map_or("", |n| n.as_str()),
                    _ => "true",
                });
            }
        }
    }
    found
}

/// Go's strconv.ParseBool, as pflag reads a boolean flag.
fn go_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// The minor version of an image `…/kube-controller-manager:v1.30.14`.
fn image_minor(image: &str) -> Option<u32> {
    let tag = image.rsplit_once(':')?.1;
    let rest = tag.strip_prefix("v1.")?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// Whether `--controllers` (default `*`) enables `canonical`, by its name or
/// its alias, as kube-controller-manager from v1.28 reads the list.
fn kcm_enables(list: Option<&str>, canonical: &str) -> bool {
    let alias = crate::controllers::short_name(canonical);
    let names: Vec<&str> = list.unwrap_or("*").split(',').map(str::trim).collect();
    let named = |n: &str| n == canonical || n == alias;
    if names.iter().any(|n| n.strip_prefix('-').is_some_and(named)) {
        return false;
    }
    names.iter().any(|n| named(n)) || names.contains(&"*")
}

/// kube-controller-manager Pods (a control plane's static Pods, by their
/// command) that would run a controller overcast-ccm runs, so that both run
/// it: an in-tree cloud (`--cloud-provider` other than `external`) before
/// v1.31 runs the lifecycle, service and route controllers, and
/// `--allocate-node-cidrs` node IPAM, in every version. Both may run one only
/// when both place it under the migration Lease; where kube-controller-manager
/// takes its placement from a file on its node, the file is named to check.
pub fn controller_managers(pods: &[Pod], ours: &[OwnController]) -> Vec<Finding> {
    let mut found = Vec::new();
    for pod in pods {
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed")) {
            continue;
        }
        let containers = pod.spec.iter().flat_map(|s| &s.containers);
        for container in containers {
            let argv: Vec<String> = container
                .command
                .iter()
                .flatten()
                .chain(container.args.iter().flatten())
                .cloned()
                .collect();
            let runs_kcm = argv
                .first()
                .is_some_and(|a| a.rsplit('/').next() == Some("kube-controller-manager"));
            if !runs_kcm {
                continue;
            }
            let object = format!(
                "pod/{}/{}",
                pod.metadata.namespace.as_deref().unwrap_or_default(),
                pod.metadata.name.as_deref().unwrap_or_default()
            );
            found.extend(controller_manager(
                &object,
                container.image.as_deref(),
                &argv,
                ours,
            ));
        }
    }
    found
}

fn controller_manager(
    object: &str,
    image: Option<&str>,
    argv: &[String],
    ours: &[OwnController],
) -> Vec<Finding> {
    use overcast_cloud_provider::names::controllers::{NODE_IPAM, NODE_ROUTE};
    let minor = image.and_then(image_minor);
    let cloud = flag(argv, "cloud-provider").unwrap_or_default();
    let in_tree = !cloud.is_empty() && cloud != "external" && minor.is_none_or(|m| m <= 30);
    let is_set = |name: &str, default: bool| {
        flag(argv, name).map_or(default, |v| go_bool(v).unwrap_or(default))
    };
    let allocates = is_set("allocate-node-cidrs", false);
    let routes = is_set("configure-cloud-routes", true);
    let list = flag(argv, "controllers");
    let runs = |c: &str| {
        kcm_enables(list, c)
            && match c {
                NODE_IPAM => allocates,
                NODE_ROUTE => in_tree && allocates && routes,
                _ => in_tree,
            }
    };
    let placement = |c: &str| {
        if !is_set("enable-leader-migration", false) || !is_set("leader-elect", true) {
            return KcmPlacement::Main("it runs without --enable-leader-migration".into());
        }
        if let Some(file) = flag(argv, "leader-migration-config").filter(|f| !f.is_empty()) {
            return KcmPlacement::File(file.to_string());
        }
        match minor {
            Some(m) if m >= 28 => {
                match crate::migration::MigrationConfig::default_config().placement(c) {
                    crate::migration::Placement::NonMigrated => KcmPlacement::Main(format!(
                        "--enable-leader-migration without a file uses upstream's default configuration, which from v1.28 migrates only {}: its entries route-controller and service-controller name no controller",
                        overcast_cloud_provider::names::controllers::CLOUD_NODE_LIFECYCLE
                    )),
                    _ => KcmPlacement::Migrated,
                }
            }
            _ => KcmPlacement::UnknownVersion,
        }
    };
    let mut found = Vec::new();
    for name in SHARED_CONTROLLERS {
        let Some(own) = ours.iter().find(|o| o.name == name) else {
            continue;
        };
        if !runs(name) {
            continue;
        }
        let here = if own.migrated {
            "overcast-ccm runs it under the migration Lease"
        } else {
            "overcast-ccm runs it under its own Lease (its migration configuration does not list it)"
        };
        let finding = match (placement(name), own.migrated) {
            (KcmPlacement::Migrated, true) => None,
            (KcmPlacement::Main(why), _) => Some(hazard(
                object,
                format!(
                    "kube-controller-manager runs {name} under its own Lease ({why}) and {here}: both would run it; stop it there (--controllers=-{name}{}) or list {name:?} in both components' migration configuration",
                    if name == NODE_IPAM {
                        ", --allocate-node-cidrs=false"
                    } else {
                        ""
                    }
                ),
            )),
            (_, false) => Some(hazard(
                object,
                format!(
                    "kube-controller-manager runs {name} and {here}: both would run it; list {name:?} in overcast-ccm's migration configuration as in kube-controller-manager's"
                ),
            )),
            (KcmPlacement::File(file), true) => Some(note(
                object,
                format!(
                    "kube-controller-manager runs {name}, placed by {file} on its node, which this check cannot read: that file must list {name:?} (and, before v1.28, {:?}) as overcast-ccm's does, or both run it",
                    crate::controllers::short_name(name)
                ),
            )),
            (KcmPlacement::UnknownVersion, true) => Some(note(
                object,
                format!(
                    "kube-controller-manager runs {name} by upstream's default migration configuration, which its version (image {:?}) reads in a way this check does not know: give both components a file listing {name:?} and {:?}",
                    image.unwrap_or_default(),
                    crate::controllers::short_name(name)
                ),
            )),
        };
        found.extend(finding);
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        LoadBalancerIngress, NodeCondition, NodeSelector, NodeSelectorRequirement,
        NodeSelectorTerm, NodeSpec, NodeStatus, PersistentVolumeSpec, ServiceStatus,
        VolumeNodeAffinity,
    };
    use kube::api::ObjectMeta;

    fn a_node(name: &str, provider_id: &str, ready: bool, zone: &str) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some([(LABEL_ZONE.to_string(), zone.to_string())].into()),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                provider_id: (!provider_id.is_empty()).then(|| provider_id.into()),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    fn pv(name: &str, key: &str, value: &str) -> PersistentVolume {
        PersistentVolume {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(PersistentVolumeSpec {
                node_affinity: Some(VolumeNodeAffinity {
                    required: Some(NodeSelector {
                        node_selector_terms: vec![NodeSelectorTerm {
                            match_expressions: Some(vec![NodeSelectorRequirement {
                                key: key.into(),
                                operator: "In".into(),
                                values: Some(vec![value.into()]),
                            }]),
                            ..Default::default()
                        }],
                    }),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn metadata(provider_id: &str, zone: &str) -> Result<Option<InstanceMetadata>, String> {
        Ok(Some(InstanceMetadata {
            provider_id: provider_id.into(),
            zone: zone.into(),
            ..Default::default()
        }))
    }

    #[test]
    fn a_node_without_a_machine_is_one_the_lifecycle_controller_deletes() {
        let n = a_node("w1", "local://w1", false, "r1");
        let f = node(&n, &Ok(false), &Ok(None), &[], &[]);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].severity, Severity::Hazard);
        assert!(f[0].message.contains("\"local://w1\""), "{f:?}");
        assert!(f[0].message.ends_with("now: it is NotReady"), "{f:?}");
        let ready = a_node("w1", "", true, "r1");
        let f = node(&ready, &Ok(false), &Ok(None), &[], &[]);
        assert!(
            f[0].message.contains("no spec.providerID")
                && f[0].message.ends_with("once it is NotReady")
        );
        let f = node(&ready, &Err("timeout".into()), &Ok(None), &[], &[]);
        assert!(f[0].message.ends_with("exists: timeout"));
    }

    #[test]
    fn volumes_pinned_by_the_beta_zone_label_count_too() {
        let mut n = a_node("w1", "local://w1", true, "rack-1");
        n.metadata
            .labels
            .as_mut()
            .unwrap()
            .insert(LABEL_ZONE_BETA.into(), "rack-1".into());
        let pvs = [pv("old", LABEL_ZONE_BETA, "rack-1")];
        let f = node(&n, &Ok(true), &metadata("local://w1", "rack-2"), &pvs, &[]);
        let hazards: Vec<&Finding> = f
            .iter()
            .filter(|f| f.severity == Severity::Hazard)
            .collect();
        assert_eq!(hazards.len(), 1, "{f:?}");
        assert!(
            hazards[0]
                .message
                .contains("failure-domain.beta.kubernetes.io/zone=rack-1"),
            "{f:?}"
        );
    }

    #[test]
    fn a_zone_that_differs_is_a_hazard_only_where_volumes_are_pinned_to_it() {
        let n = a_node("w1", "local://w1", true, "rack-1");
        assert!(node(&n, &Ok(true), &metadata("local://w1", "rack-1"), &[], &[]).is_empty());
        let f = node(&n, &Ok(true), &metadata("local://w1", "rack-2"), &[], &[]);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].severity, Severity::Note);
        let pvs = [
            pv("data", LABEL_ZONE, "rack-1"),
            pv("other", LABEL_ZONE, "rack-9"),
        ];
        let f = node(&n, &Ok(true), &metadata("local://w1", "rack-2"), &pvs, &[]);
        assert_eq!(f[0].severity, Severity::Hazard);
        assert!(
            f[0].message
                .ends_with("PersistentVolume(s) data require topology.kubernetes.io/zone=rack-1"),
            "{f:?}"
        );
        let f = node(
            &n,
            &Ok(true),
            &metadata("local://other", "rack-1"),
            &[],
            &[],
        );
        assert_eq!(f[0].severity, Severity::Hazard);
        assert!(
            f[0].message.starts_with(
                "spec.providerID is \"local://w1\", the provider's is \"local://other\""
            )
        );
        let class = |name: &str, zones: &[&str]| -> StorageClass {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name},
                "provisioner": "example.com/csi",
                "allowedTopologies": [{"matchLabelExpressions": [{"key": LABEL_ZONE, "values": zones}]}],
            }))
            .unwrap()
        };
        let classes = [
            class("rack-1-only", &["rack-1"]),
            class("both", &["rack-1", "rack-2"]),
        ];
        let f = node(
            &n,
            &Ok(true),
            &metadata("local://w1", "rack-2"),
            &[],
            &classes,
        );
        assert_eq!(f[0].severity, Severity::Hazard);
        assert!(f[0].message.ends_with("StorageClass(es) rack-1-only allow topology.kubernetes.io/zone=rack-1 but not rack-2"), "{f:?}");
    }

    fn lb(ip: Option<&str>) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("shop".into()),
                ..Default::default()
            },
            status: ip.map(|ip| ServiceStatus {
                load_balancer: Some(LoadBalancerStatus {
                    ingress: Some(vec![LoadBalancerIngress {
                        ip: Some(ip.into()),
                        ..Default::default()
                    }]),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn status(ip: &str) -> LoadBalancerStatus {
        LoadBalancerStatus {
            ingress: Some(vec![LoadBalancerIngress {
                ip: Some(ip.into()),
                ..Default::default()
            }]),
        }
    }

    fn seen(status: Option<LoadBalancerStatus>) -> Result<LoadBalancerPreview, String> {
        Ok(LoadBalancerPreview {
            status,
            changes: Vec::new(),
        })
    }

    #[test]
    fn a_service_whose_address_would_change_is_a_hazard() {
        assert!(service(&lb(Some("10.0.0.5")), &seen(Some(status("10.0.0.5"))), &[]).is_empty());
        let f = service(&lb(Some("10.0.0.5")), &seen(Some(status("10.0.0.9"))), &[]);
        assert_eq!(f[0].severity, Severity::Hazard);
        assert_eq!(f[0].object, "service/shop/web");
        assert_eq!(
            f[0].message,
            "its address would change from 10.0.0.5 to 10.0.0.9"
        );
        let f = service(&lb(Some("10.0.0.5")), &seen(None), &[]);
        assert!(f[0].message.ends_with("its address replacing 10.0.0.5"));
        let f = service(&lb(None), &seen(None), &["x/y: no equivalent".into()]);
        assert_eq!(f.len(), 2);
        assert_eq!(
            (f[0].severity, f[1].severity),
            (Severity::Note, Severity::Hazard)
        );
        let replaced = Ok(LoadBalancerPreview {
            status: Some(status("10.0.0.5")),
            changes: vec!["target group k8s-a-b-c for port 80 would be made".into()],
        });
        let f = service(&lb(Some("10.0.0.5")), &replaced, &[]);
        assert_eq!(f.len(), 1);
        assert!(
            f[0].message
                .starts_with("its load balancer would change: target group")
        );
        let f = service(&lb(None), &Err("no free IPv4 address".into()), &[]);
        assert_eq!(
            f[0].message,
            "overcast-ccm could not serve it: no free IPv4 address"
        );
    }

    #[test]
    fn a_servicelb_daemonset_left_running_is_a_hazard_naming_its_host_ports() {
        let ds: DaemonSet = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "svclb-web-1a2b3c4d", "namespace": "kube-system", "labels": {
                "svccontroller.k3s.cattle.io/svcname": "web",
                "svccontroller.k3s.cattle.io/svcnamespace": "shop",
            }},
            "spec": {"selector": {}, "template": {"spec": {"containers": [
                {"name": "lb-tcp-80", "ports": [{"containerPort": 80, "hostPort": 80, "protocol": "TCP"}]},
                {"name": "lb-udp-53", "ports": [{"containerPort": 53, "hostPort": 53, "protocol": "UDP"}]},
            ]}}},
        }))
        .unwrap();
        let other: DaemonSet = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "kube-proxy", "namespace": "kube-system"},
            "spec": {"selector": {}, "template": {"spec": {"containers": []}}},
        }))
        .unwrap();
        let found = servicelb_daemonsets(&[ds, other]);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].severity, Severity::Hazard);
        assert_eq!(found[0].object, "daemonset/kube-system/svclb-web-1a2b3c4d");
        assert!(
            found[0]
                .message
                .starts_with("k3s servicelb still runs for service/shop/web: its pods hold host ports 80/TCP, 53/UDP"),
            "{}",
            found[0].message
        );
    }

    fn kcm_pod(image: &str, flags: &[&str]) -> Pod {
        let mut command = vec!["kube-controller-manager"];
        command.extend(flags);
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "kube-controller-manager-cp1", "namespace": "kube-system"},
            "spec": {"containers": [{"name": "kube-controller-manager", "image": image, "command": command}]},
            "status": {"phase": "Running"},
        }))
        .unwrap()
    }

    const MIGRATING_BOTH: [OwnController; 2] = [
        OwnController {
            name: overcast_cloud_provider::names::controllers::CLOUD_NODE_LIFECYCLE,
            migrated: true,
        },
        OwnController {
            name: overcast_cloud_provider::names::controllers::SERVICE_LB,
            migrated: true,
        },
    ];

    #[test]
    fn an_in_tree_controller_manager_on_the_default_migration_configuration_is_a_hazard() {
        // v1.30 with an in-tree cloud and upstream's default configuration:
        // the lifecycle controller migrates, the service controller does not.
        let pod = kcm_pod(
            "registry.k8s.io/kube-controller-manager:v1.30.14",
            &["--cloud-provider=aws", "--enable-leader-migration"],
        );
        let found = controller_managers(&[pod], &MIGRATING_BOTH);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].severity, Severity::Hazard);
        assert_eq!(
            found[0].object,
            "pod/kube-system/kube-controller-manager-cp1"
        );
        assert!(
            found[0].message.starts_with(
                "kube-controller-manager runs service-lb-controller under its own Lease (--enable-leader-migration without a file uses upstream's default configuration"
            ),
            "{}",
            found[0].message
        );
        // The same with a file: only the file can say, and it is named.
        let pod = kcm_pod(
            "registry.k8s.io/kube-controller-manager:v1.30.14",
            &[
                "--cloud-provider",
                "aws",
                "--enable-leader-migration",
                "--leader-migration-config=/etc/kubernetes/migration.yaml",
            ],
        );
        let found = controller_managers(&[pod], &MIGRATING_BOTH);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found.iter().all(|f| {
            f.severity == Severity::Note
                && f.message
                    .contains("placed by /etc/kubernetes/migration.yaml on its node")
        }));
    }

    #[test]
    fn a_controller_manager_without_migration_runs_beside_overcast() {
        let pod = kcm_pod(
            "registry.k8s.io/kube-controller-manager:v1.26.3",
            &["--cloud-provider=aws", "--allocate-node-cidrs=true"],
        );
        let ours = [
            MIGRATING_BOTH[1],
            OwnController {
                name: overcast_cloud_provider::names::controllers::NODE_ROUTE,
                migrated: false,
            },
        ];
        let found = controller_managers(&[pod], &ours);
        let names: Vec<&str> = found
            .iter()
            .map(|f| f.message.split(' ').nth(2).unwrap_or_default())
            .collect();
        assert_eq!(
            names,
            ["service-lb-controller", "node-route-controller"],
            "{found:?}"
        );
        assert!(found.iter().all(|f| f.severity == Severity::Hazard));
        // Turned off there, by name or alias: nothing to say.
        let pod = kcm_pod(
            "registry.k8s.io/kube-controller-manager:v1.26.3",
            &[
                "--cloud-provider=aws",
                "--allocate-node-cidrs=true",
                "--controllers=*,-service,-node-route-controller",
            ],
        );
        assert_eq!(controller_managers(&[pod], &ours), []);
    }

    #[test]
    fn only_node_ipam_is_shared_with_a_controller_manager_of_v1_31_on() {
        // No cloud loops from v1.31, whatever --cloud-provider says; node
        // IPAM still runs with --allocate-node-cidrs, un-migrated under the
        // default configuration.
        let ipam = OwnController {
            name: overcast_cloud_provider::names::controllers::NODE_IPAM,
            migrated: true,
        };
        let ours = [MIGRATING_BOTH[0], MIGRATING_BOTH[1], ipam];
        let pod = kcm_pod(
            "registry.k8s.io/kube-controller-manager:v1.34.4",
            &[
                "--cloud-provider=aws",
                "--enable-leader-migration",
                "--allocate-node-cidrs",
            ],
        );
        let found = controller_managers(&[pod], &ours);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0]
                .message
                .contains("node-ipam-controller under its own Lease")
        );
        assert!(found[0].message.contains("--allocate-node-cidrs=false"));
        // Not a controller manager, or one that has ended: nothing.
        let mut done = kcm_pod(
            "registry.k8s.io/kube-controller-manager:v1.34.4",
            &["--allocate-node-cidrs"],
        );
        done.status.as_mut().unwrap().phase = Some("Failed".into());
        let mut other = kcm_pod("busybox:1", &[]);
        other.spec.as_mut().unwrap().containers[0].command = Some(vec!["sh".into()]);
        assert_eq!(controller_managers(&[done, other], &ours), []);
    }

    #[test]
    fn kube_controller_manager_flags_are_read_as_pflag_reads_them() {
        let argv: Vec<String> = [
            "--a=1",
            "--b",
            "two",
            "--c",
            "--a=3",
            "--cloud-provider-gce-lb-src-cidrs=x",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(flag(&argv, "a"), Some("3"));
        assert_eq!(flag(&argv, "b"), Some("two"));
        assert_eq!(flag(&argv, "c"), Some("true"));
        assert_eq!(flag(&argv, "cloud-provider"), None);
        assert_eq!(
            image_minor("registry.k8s.io/kube-controller-manager:v1.30.14"),
            Some(30)
        );
        assert_eq!(image_minor("localhost:5000/kcm"), None);
        assert!(kcm_enables(None, "service-lb-controller"));
        assert!(!kcm_enables(Some("*,-service"), "service-lb-controller"));
        assert!(kcm_enables(Some("service"), "service-lb-controller"));
        assert!(!kcm_enables(Some("route"), "service-lb-controller"));
    }

    #[test]
    fn the_table_puts_hazards_first_and_counts() {
        let f = sorted(vec![
            note("lease/kube-system/x", "free".into()),
            hazard("node/b", "gone".into()),
            hazard("node/a", "gone".into()),
        ]);
        let t = table(&f);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("HAZARD  node/a"), "{t}");
        assert!(lines[2].starts_with("note    lease/kube-system/x"), "{t}");
        assert_eq!(lines[3], "2 hazard(s), 1 note(s)");
        assert_eq!(
            required("kube-system", &["cloud-controller-manager"])[13].to_string(),
            "create leases.coordination.k8s.io in kube-system"
        );
    }
}
