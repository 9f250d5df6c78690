//! The service controller's decisions, as plain functions of their inputs
//! (upstream's `controllers/service/controller.go` predicates).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{LoadBalancerStatus, Node, Service};
use overcast_cloud_provider::names::{
    FINALIZER_LOAD_BALANCER_CLEANUP, LABEL_EXCLUDE_FROM_EXTERNAL_LOAD_BALANCERS,
    TAINT_TO_BE_DELETED_BY_AUTOSCALER,
};
use overcast_cloud_provider::service_helpers::parse_bool;
use serde_json::{Value, json};

use crate::events::EventType;
use crate::node_helpers::{has_taint, provider_id};
use overcast_cloud_provider::names::reasons;

fn is_load_balancer_type(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer")
}

/// Which Services this controller serves, by `spec.loadBalancerClass`. The
/// default is upstream's: class-less ones only (a class means another
/// implementation owns it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClassPolicy {
    /// `--load-balancer-class`: Services of this class are ours too.
    pub class: Option<String>,
    /// `--serve-classless-load-balancers=false`: class-less Services are
    /// left to another implementation (with a class set).
    pub skip_classless: bool,
}

impl ClassPolicy {
    pub fn serves(&self, class: Option<&str>) -> bool {
        match class {
            None => !self.skip_classless,
            Some(c) => self.class.as_deref() == Some(c),
        }
    }
}

/// Ours to serve: type LoadBalancer and a class `policy` serves.
pub fn wants_load_balancer(svc: &Service, policy: &ClassPolicy) -> bool {
    is_load_balancer_type(svc)
        && policy.serves(
            svc.spec
                .as_ref()
                .and_then(|s| s.load_balancer_class.as_deref()),
        )
}

pub fn has_finalizer(svc: &Service) -> bool {
    svc.metadata
        .finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|f| f == FINALIZER_LOAD_BALANCER_CLEANUP))
}

/// Our finalizer is on a Service that is going away or no longer a LoadBalancer.
pub fn needs_cleanup(svc: &Service) -> bool {
    has_finalizer(svc) && (svc.metadata.deletion_timestamp.is_some() || !is_load_balancer_type(svc))
}

/// Whether a change from `old` to `new` matters to the load balancer
/// (upstream's `needsUpdate`).
pub fn needs_update(old: &Service, new: &Service, policy: &ClassPolicy) -> bool {
    if wants_load_balancer(old, policy) != wants_load_balancer(new, policy) {
        return true;
    }
    if !wants_load_balancer(old, policy) && !wants_load_balancer(new, policy) {
        return false;
    }
    let (Some(o), Some(n)) = (old.spec.as_ref(), new.spec.as_ref()) else {
        return true;
    };
    let ports = |s: &k8s_openapi::api::core::v1::ServiceSpec| {
        s.ports
            .iter()
            .flatten()
            .map(|p| {
                (
                    p.name.clone(),
                    p.protocol.clone(),
                    p.port,
                    p.node_port,
                    p.target_port.clone(),
                    p.app_protocol.clone(),
                )
            })
            .collect::<Vec<_>>()
    };
    o.load_balancer_source_ranges != n.load_balancer_source_ranges
        || ports(o) != ports(n)
        || o.session_affinity != n.session_affinity
        || o.session_affinity_config != n.session_affinity_config
        || o.load_balancer_ip != n.load_balancer_ip
        || o.external_ips != n.external_ips
        || old.metadata.annotations != new.metadata.annotations
        || old.metadata.uid != new.metadata.uid
        || o.external_traffic_policy != n.external_traffic_policy
        || o.health_check_node_port != n.health_check_node_port
        || o.ip_families.as_ref().map(Vec::len) != n.ip_families.as_ref().map(Vec::len)
}

/// Whether a Node should receive load-balancer traffic (upstream's stable node
/// set since 1.32): not being deleted, not excluded by label (an unparsable
/// label value excludes), not about to be removed by the cluster autoscaler.
/// Readiness and schedulability do not matter, so a flapping kubelet does not
/// churn every balancer (KEP-3458).
pub fn node_eligible(node: &Node) -> bool {
    node.metadata.deletion_timestamp.is_none()
        && node_included_by_label(node)
        && !has_taint(node, TAINT_TO_BE_DELETED_BY_AUTOSCALER)
}

/// The exclude-from-external-load-balancers label is absent or false
/// (upstream's nodeIncludedPredicate).
pub fn node_included_by_label(node: &Node) -> bool {
    !node
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(LABEL_EXCLUDE_FROM_EXTERNAL_LOAD_BALANCERS))
        .is_some_and(|v| parse_bool(v).unwrap_or(true))
}

/// What a balancer's backends are compared by: name → providerID.
pub type NodeSet = BTreeMap<String, String>;

pub fn node_set<'a>(nodes: impl IntoIterator<Item = &'a Node>) -> NodeSet {
    nodes
        .into_iter()
        .map(|n| {
            (
                n.metadata.name.clone().unwrap_or_default(),
                provider_id(n).to_string(),
            )
        })
        .collect()
}

/// Whether the status the cloud returned differs from the Service's.
pub fn status_differs(svc: &Service, new: &LoadBalancerStatus) -> bool {
    let current = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.clone())
        .unwrap_or_default();
    current != new.ingress.clone().unwrap_or_default()
}

/// The merge patch that sets status.loadBalancer to `status` (an empty
/// status removes the ingress list).
pub fn status_patch(status: &LoadBalancerStatus) -> Value {
    let ingress = match status.ingress.as_deref() {
        Some(list) if !list.is_empty() => serde_json::to_value(list).expect("ingress serializes"),
        _ => Value::Null,
    };
    json!({"status": {"loadBalancer": {"ingress": ingress}}})
}

/// The Service's finalizers with ours added or removed; `None` when nothing changes.
pub fn finalizers_with(svc: &Service, present: bool) -> Option<Vec<String>> {
    if has_finalizer(svc) == present {
        return None;
    }
    let mut list: Vec<String> = svc
        .metadata
        .finalizers
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|f| f != FINALIZER_LOAD_BALANCER_CLEANUP)
        .collect();
    if present {
        list.push(FINALIZER_LOAD_BALANCER_CLEANUP.to_string());
    }
    Some(list)
}

/// Node names for an event message, sorted, at most 20 and then "<N more>"
/// (upstream's loggableNodeNames, printed as Go prints a slice).
pub fn node_names_for_event(nodes: &[&Node]) -> String {
    const SHOWN: usize = 20;
    let mut names: Vec<String> = nodes
        .iter()
        .take(SHOWN)
        .map(|n| n.metadata.name.clone().unwrap_or_default())
        .collect();
    names.sort();
    if nodes.len() > SHOWN {
        names.push(format!("<{} more>", nodes.len() - SHOWN));
    }
    format!("[{}]", names.join(" "))
}

/// Upstream's two operations of `syncLoadBalancerIfNeeded`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// Finalizer first, then the balancer with the eligible Nodes, then
    /// the status it returned.
    Ensure,
    /// The balancer deleted if the cloud still has any of it, then our
    /// finalizer dropped and the status cleared.
    Cleanup,
}

/// One sync of a Service key, decided before anything is done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncPlan {
    /// The last-known copy is gone from the API, or was replaced by another
    /// object of the same name (a new UID): `Some(true)` deletes the
    /// balancer it wanted, then forgets it; `Some(false)` only forgets it.
    pub forget_previous: Option<bool>,
    /// What the Service as it is now needs; `None` when there is none.
    pub operation: Option<Operation>,
}

/// Decides a sync from the Service in the cache (`current`) and the copy
/// this controller last worked on (`previous`), as upstream's
/// `processServiceDeletion` / `syncLoadBalancerIfNeeded`.
pub fn plan_sync(
    current: Option<&Service>,
    previous: Option<&Service>,
    policy: &ClassPolicy,
) -> SyncPlan {
    let replaced_or_gone = |p: &Service| match current {
        None => true,
        Some(c) => c.metadata.uid != p.metadata.uid,
    };
    SyncPlan {
        forget_previous: previous
            .filter(|p| replaced_or_gone(p))
            .map(|p| wants_load_balancer(p, policy)),
        operation: current.map(|svc| {
            if !wants_load_balancer(svc, policy) || needs_cleanup(svc) {
                Operation::Cleanup
            } else {
                Operation::Ensure
            }
        }),
    }
}

/// What the status write after a sync sends: the merge patch, or `None`
/// when the Service already shows `new` (upstream's `patchStatus` skips
/// an equal status).
pub fn status_write(svc: &Service, new: &LoadBalancerStatus) -> Option<Value> {
    status_differs(svc, new).then(|| status_patch(new))
}

/// Each point of a sync that upstream records an Event at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Milestone {
    Deleting,
    Deleted,
    /// The deletion of a Service gone from the API failed.
    DeleteFailed(String),
    Ensuring,
    Ensured,
    /// The balancer is ensured or updated with no Node behind it.
    NoNodes,
    SyncFailed(String),
    UpdatedHosts,
    /// Updating the backends failed: the Nodes sent (names, at most 20 of
    /// them) and how many, and the cloud's error.
    UpdateHostsFailed {
        names: String,
        count: usize,
        error: String,
    },
}

/// The Event upstream records at `m`: type, reason, message.
pub fn event_for(m: &Milestone) -> (EventType, &'static str, String) {
    use Milestone::*;
    match m {
        Deleting => (
            EventType::Normal,
            reasons::DELETING_LOAD_BALANCER,
            "Deleting load balancer".into(),
        ),
        Deleted => (
            EventType::Normal,
            reasons::DELETED_LOAD_BALANCER,
            "Deleted load balancer".into(),
        ),
        DeleteFailed(e) => (
            EventType::Warning,
            reasons::DELETE_LOAD_BALANCER_FAILED,
            format!("Error deleting load balancer: {e}"),
        ),
        Ensuring => (
            EventType::Normal,
            reasons::ENSURING_LOAD_BALANCER,
            "Ensuring load balancer".into(),
        ),
        Ensured => (
            EventType::Normal,
            reasons::ENSURED_LOAD_BALANCER,
            "Ensured load balancer".into(),
        ),
        NoNodes => (
            EventType::Warning,
            reasons::UNAVAILABLE_LOAD_BALANCER,
            "There are no available nodes for LoadBalancer".into(),
        ),
        SyncFailed(e) => (
            EventType::Warning,
            reasons::SYNC_LOAD_BALANCER_FAILED,
            format!("Error syncing load balancer: {e}"),
        ),
        UpdatedHosts => (
            EventType::Normal,
            reasons::UPDATED_LOAD_BALANCER,
            "Updated load balancer with new hosts".into(),
        ),
        UpdateHostsFailed {
            names,
            count,
            error,
        } => (
            EventType::Warning,
            reasons::UPDATE_LOAD_BALANCER_FAILED,
            format!(
                "Error updating load balancer with new hosts {names} [node names limited, total number of nodes: {count}], error: {error}"
            ),
        ),
    }
}

/// How an UpdateLoadBalancer call for a node change came out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostsUpdate {
    Updated,
    /// The provider leaves balancers to another controller.
    Elsewhere,
    /// Failed, and the balancer does not exist (it is made on the next ensure).
    FailedWithoutBalancer,
    Failed(String),
}

/// What follows an UpdateLoadBalancer of `nodes` (upstream's
/// `nodeSyncService`): the Event, and whether the Service needs a full sync.
pub fn report_hosts_update(update: &HostsUpdate, nodes: &[&Node]) -> (Option<Milestone>, bool) {
    match update {
        HostsUpdate::Updated if nodes.is_empty() => (Some(Milestone::NoNodes), false),
        HostsUpdate::Updated => (Some(Milestone::UpdatedHosts), false),
        HostsUpdate::Elsewhere | HostsUpdate::FailedWithoutBalancer => (None, false),
        HostsUpdate::Failed(error) => (
            Some(Milestone::UpdateHostsFailed {
                names: node_names_for_event(nodes),
                count: nodes.len(),
                error: error.clone(),
            }),
            true,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        LoadBalancerIngress, NodeSpec, ServicePort, ServiceSpec, ServiceStatus, Taint,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    fn svc(type_: &str) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                uid: Some("u1".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                type_: Some(type_.into()),
                ports: Some(vec![ServicePort {
                    port: 80,
                    node_port: Some(30080),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn with_finalizer(mut s: Service) -> Service {
        s.metadata.finalizers = Some(vec!["other".into(), FINALIZER_LOAD_BALANCER_CLEANUP.into()]);
        s
    }

    fn now() -> Time {
        Time(k8s_openapi::jiff::Timestamp::now())
    }

    #[test]
    fn a_sync_forgets_a_gone_or_replaced_copy_and_picks_the_operation() {
        let policy = ClassPolicy::default();
        let lb = svc("LoadBalancer");
        // Serving: nothing to forget.
        assert_eq!(
            plan_sync(Some(&lb), Some(&lb), &policy),
            SyncPlan {
                forget_previous: None,
                operation: Some(Operation::Ensure)
            }
        );
        // Deleted from the API: its balancer goes.
        assert_eq!(
            plan_sync(None, Some(&lb), &policy),
            SyncPlan {
                forget_previous: Some(true),
                operation: None
            }
        );
        // Never worked on and gone: nothing at all.
        assert_eq!(
            plan_sync(None, None, &policy),
            SyncPlan {
                forget_previous: None,
                operation: None
            }
        );
        // Replaced under the same name: the old one's balancer first.
        let mut replacement = lb.clone();
        replacement.metadata.uid = Some("u2".into());
        assert_eq!(
            plan_sync(Some(&replacement), Some(&lb), &policy),
            SyncPlan {
                forget_previous: Some(true),
                operation: Some(Operation::Ensure)
            }
        );
        // A gone copy that wanted no balancer is only forgotten.
        assert_eq!(
            plan_sync(None, Some(&svc("ClusterIP")), &policy).forget_previous,
            Some(false)
        );
        // Type changed away, or deleting, with our finalizer: cleanup.
        let changed = with_finalizer(svc("ClusterIP"));
        assert_eq!(
            plan_sync(Some(&changed), Some(&lb), &policy).operation,
            Some(Operation::Cleanup)
        );
        let mut deleting = with_finalizer(lb.clone());
        deleting.metadata.deletion_timestamp = Some(now());
        assert_eq!(
            plan_sync(Some(&deleting), None, &policy).operation,
            Some(Operation::Cleanup)
        );
    }

    #[test]
    fn a_status_already_shown_is_not_written_again() {
        let mut shown = svc("LoadBalancer");
        let status = LoadBalancerStatus {
            ingress: Some(vec![LoadBalancerIngress {
                ip: Some("192.0.2.1".into()),
                ..Default::default()
            }]),
        };
        assert!(status_write(&shown, &status).is_some());
        shown.status = Some(ServiceStatus {
            load_balancer: Some(status.clone()),
            ..Default::default()
        });
        assert_eq!(status_write(&shown, &status), None);
        assert_eq!(
            status_write(&shown, &LoadBalancerStatus::default()),
            Some(json!({"status": {"loadBalancer": {"ingress": null}}}))
        );
    }

    #[test]
    fn a_failed_hosts_update_asks_for_a_full_sync_with_upstreams_message() {
        let node = |name: &str| Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let (a, b) = (node("b"), node("a"));
        let nodes = [&a, &b];
        let (milestone, full_sync) =
            report_hosts_update(&HostsUpdate::Failed("quota".into()), &nodes);
        assert!(full_sync);
        let (type_, reason, message) = event_for(&milestone.unwrap());
        assert_eq!(
            (type_, reason),
            (EventType::Warning, "UpdateLoadBalancerFailed")
        );
        assert_eq!(
            message,
            "Error updating load balancer with new hosts [a b] [node names limited, total number of nodes: 2], error: quota"
        );
        assert_eq!(
            report_hosts_update(&HostsUpdate::Updated, &[]),
            (Some(Milestone::NoNodes), false)
        );
        assert_eq!(
            report_hosts_update(&HostsUpdate::FailedWithoutBalancer, &nodes),
            (None, false)
        );
    }

    #[test]
    fn only_classless_load_balancers_are_ours() {
        let upstream = ClassPolicy::default();
        assert!(wants_load_balancer(&svc("LoadBalancer"), &upstream));
        assert!(!wants_load_balancer(&svc("ClusterIP"), &upstream));
        let mut classed = svc("LoadBalancer");
        classed.spec.as_mut().unwrap().load_balancer_class = Some("example.com/lb".into());
        assert!(!wants_load_balancer(&classed, &upstream));
        let ours = ClassPolicy {
            class: Some("example.com/lb".into()),
            skip_classless: false,
        };
        assert!(wants_load_balancer(&classed, &ours));
        assert!(wants_load_balancer(&svc("LoadBalancer"), &ours));
        let only_ours = ClassPolicy {
            skip_classless: true,
            ..ours.clone()
        };
        assert!(wants_load_balancer(&classed, &only_ours));
        assert!(!wants_load_balancer(&svc("LoadBalancer"), &only_ours));
        let mut other = classed.clone();
        other.spec.as_mut().unwrap().load_balancer_class = Some("metallb.io/metallb".into());
        assert!(!wants_load_balancer(&other, &ours));
    }

    #[test]
    fn cleanup_needs_our_finalizer_and_deletion_or_a_type_change() {
        assert!(!needs_cleanup(&svc("LoadBalancer")));
        assert!(!needs_cleanup(&with_finalizer(svc("LoadBalancer"))));
        assert!(needs_cleanup(&with_finalizer(svc("ClusterIP"))));
        let mut deleting = with_finalizer(svc("LoadBalancer"));
        deleting.metadata.deletion_timestamp = Some(now());
        assert!(needs_cleanup(&deleting));
        let mut no_finalizer = svc("ClusterIP");
        no_finalizer.metadata.deletion_timestamp = Some(now());
        assert!(!needs_cleanup(&no_finalizer));
    }

    #[test]
    fn updates_that_matter() {
        let old = svc("LoadBalancer");
        assert!(!needs_update(&old, &old.clone(), &ClassPolicy::default()));
        assert!(needs_update(
            &old,
            &svc("ClusterIP"),
            &ClassPolicy::default()
        ));
        let mut ports = old.clone();
        ports.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].node_port = Some(30081);
        assert!(needs_update(&old, &ports, &ClassPolicy::default()));
        let mut annotated = old.clone();
        annotated.metadata.annotations = Some([("a".to_string(), "b".to_string())].into());
        assert!(needs_update(&old, &annotated, &ClassPolicy::default()));
        let mut etp = old.clone();
        etp.spec.as_mut().unwrap().external_traffic_policy = Some("Local".into());
        assert!(needs_update(&old, &etp, &ClassPolicy::default()));
        // Status and labels are not the balancer's business.
        let mut status = old.clone();
        status.status = Some(ServiceStatus::default());
        status.metadata.labels = Some([("x".to_string(), "y".to_string())].into());
        assert!(!needs_update(&old, &status, &ClassPolicy::default()));
        assert!(!needs_update(
            &svc("ClusterIP"),
            &svc("NodePort"),
            &ClassPolicy::default()
        ));
    }

    fn node(labels: &[(&str, &str)], taint: Option<&str>) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some("n".into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                taints: taint.map(|k| {
                    vec![Taint {
                        key: k.into(),
                        effect: "NoSchedule".into(),
                        ..Default::default()
                    }]
                }),
                unschedulable: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn node_eligibility_follows_the_stable_node_set() {
        assert!(
            node_eligible(&node(&[], None)),
            "unschedulable and NotReady nodes stay"
        );
        let label = LABEL_EXCLUDE_FROM_EXTERNAL_LOAD_BALANCERS;
        assert!(!node_eligible(&node(&[(label, "true")], None)));
        assert!(
            !node_eligible(&node(&[(label, "")], None)),
            "unparsable excludes"
        );
        assert!(!node_eligible(&node(&[(label, "yes")], None)));
        assert!(node_eligible(&node(&[(label, "false")], None)));
        assert!(node_eligible(&node(&[(label, "F")], None)));
        assert!(!node_eligible(&node(
            &[],
            Some(TAINT_TO_BE_DELETED_BY_AUTOSCALER)
        )));
        let mut deleting = node(&[], None);
        deleting.metadata.deletion_timestamp = Some(now());
        assert!(!node_eligible(&deleting));
    }

    #[test]
    fn status_patch_sets_or_clears_ingress() {
        let st = LoadBalancerStatus {
            ingress: Some(vec![LoadBalancerIngress {
                ip: Some("198.51.100.1".into()),
                ..Default::default()
            }]),
        };
        assert_eq!(
            status_patch(&st),
            json!({"status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.1"}]}}})
        );
        assert_eq!(
            status_patch(&LoadBalancerStatus::default()),
            json!({"status": {"loadBalancer": {"ingress": null}}})
        );
        assert!(status_differs(&svc("LoadBalancer"), &st));
        assert!(!status_differs(
            &svc("LoadBalancer"),
            &LoadBalancerStatus::default()
        ));
    }

    #[test]
    fn finalizer_edits_keep_other_finalizers() {
        assert_eq!(
            finalizers_with(&svc("LoadBalancer"), true),
            Some(vec![FINALIZER_LOAD_BALANCER_CLEANUP.to_string()])
        );
        assert_eq!(
            finalizers_with(&with_finalizer(svc("LoadBalancer")), true),
            None
        );
        assert_eq!(
            finalizers_with(&with_finalizer(svc("LoadBalancer")), false),
            Some(vec!["other".to_string()])
        );
    }

    #[test]
    fn event_node_lists_are_capped_at_twenty() {
        let nodes: Vec<Node> = (0..23)
            .map(|i| Node {
                metadata: ObjectMeta {
                    name: Some(format!("n{i}")),
                    ..Default::default()
                },
                ..Default::default()
            })
            .collect();
        let text = node_names_for_event(&nodes.iter().collect::<Vec<_>>());
        // The first twenty, sorted as strings (Go's sets.List), then the rest counted.
        assert!(text.starts_with("[n0 n1 n10 "), "{text}");
        assert!(text.ends_with(" n9 <3 more>]"), "{text}");
    }
}
