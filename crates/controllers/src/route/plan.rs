//! The route controller's decisions (upstream's `reconcile`), as plain functions.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Node, NodeAddress};
use overcast_cloud_provider::Route;

use crate::cidr::IpNet;
use crate::node_helpers::pod_cidrs;

/// A route to create for a Node's pod CIDR.
#[derive(Debug, Clone, PartialEq)]
pub struct Create {
    pub node: String,
    /// The Node's UID: a stable, unique name hint for the cloud.
    pub name_hint: String,
    pub route: Route,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    pub deletes: Vec<Route>,
    pub creates: Vec<Create>,
    /// Per Node with pod CIDRs: each CIDR and whether its route exists.
    pub statuses: BTreeMap<String, BTreeMap<String, bool>>,
}

fn addresses(node: &Node) -> Vec<NodeAddress> {
    node.status
        .as_ref()
        .and_then(|s| s.addresses.clone())
        .unwrap_or_default()
}

fn same_addresses(a: &[NodeAddress], b: &[NodeAddress]) -> bool {
    let set = |l: &[NodeAddress]| {
        l.iter()
            .map(|x| (x.type_.clone(), x.address.clone()))
            .collect::<BTreeSet<_>>()
    };
    a.len() == b.len() && set(a) == set(b)
}

/// Whether a route is this cluster's to manage: its CIDR's first or last
/// address lies in a cluster CIDR (upstream's `isResponsibleForRoute`).
pub fn is_responsible(route: &Route, cluster_cidrs: &[IpNet]) -> bool {
    let Ok(net) = route.destination_cidr.parse::<IpNet>() else {
        return false;
    };
    cluster_cidrs
        .iter()
        .any(|c| c.contains(&net.first()) || c.contains(&net.last()))
}

/// Decides which routes to delete and create.
pub fn plan(nodes: &[&Node], routes: &[Route], cluster_cidrs: &[IpNet]) -> Plan {
    let existing: BTreeMap<(&str, &str), &Route> = routes
        .iter()
        .filter(|r| !r.target_node.is_empty())
        .map(|r| ((r.target_node.as_str(), r.destination_cidr.as_str()), r))
        .collect();
    let mut plan = Plan::default();
    // (node, cidr) pairs whose route stays as it is.
    let mut keep: BTreeSet<(String, String)> = BTreeSet::new();
    for node in nodes {
        let cidrs = pod_cidrs(node);
        if cidrs.is_empty() {
            continue;
        }
        let name = node.metadata.name.clone().unwrap_or_default();
        let node_addresses = addresses(node);
        let statuses = plan.statuses.entry(name.clone()).or_default();
        for cidr in cidrs {
            let ok = match existing.get(&(name.as_str(), cidr.as_str())) {
                // Routes that target addresses are re-made when the addresses change.
                Some(r) if r.enable_node_addresses => {
                    same_addresses(&r.target_node_addresses, &node_addresses)
                }
                Some(_) => true,
                None => false,
            };
            statuses.insert(cidr.clone(), ok);
            if ok {
                keep.insert((name.clone(), cidr));
            } else {
                plan.creates.push(Create {
                    node: name.clone(),
                    name_hint: node.metadata.uid.clone().unwrap_or_default(),
                    route: Route {
                        target_node: name.clone(),
                        target_node_addresses: node_addresses.clone(),
                        destination_cidr: cidr,
                        ..Default::default()
                    },
                });
            }
        }
    }
    plan.deletes = routes
        .iter()
        .filter(|r| is_responsible(r, cluster_cidrs))
        .filter(|r| {
            r.blackhole || !keep.contains(&(r.target_node.clone(), r.destination_cidr.clone()))
        })
        .cloned()
        .collect();
    plan
}

/// The NetworkUnavailable verdict for a Node after creating routes:
/// `Some(true)` routes created, `Some(false)` some missing, `None` leave it
/// (no pod CIDRs and no routes: nothing to say yet).
pub fn routes_created(
    statuses: Option<&BTreeMap<String, bool>>,
    node_has_routes: bool,
) -> Option<bool> {
    match statuses {
        Some(s) if !s.is_empty() => Some(s.values().all(|ok| *ok)),
        _ if node_has_routes => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeSpec, NodeStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn node(name: &str, cidrs: &[&str]) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                uid: Some(format!("uid-{name}")),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                pod_cidrs: Some(cidrs.iter().map(|s| s.to_string()).collect()),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                addresses: Some(vec![NodeAddress {
                    type_: "InternalIP".into(),
                    address: format!("10.0.0.{}", name.len()),
                }]),
                ..Default::default()
            }),
        }
    }

    fn route(target: &str, cidr: &str) -> Route {
        Route {
            name: format!("r-{target}"),
            target_node: target.into(),
            destination_cidr: cidr.into(),
            ..Default::default()
        }
    }

    fn cluster() -> Vec<IpNet> {
        vec!["10.244.0.0/16".parse().unwrap()]
    }

    #[test]
    fn creates_missing_routes_keeps_existing_and_deletes_stale_ones_in_the_cluster_range() {
        let a = node("a", &["10.244.0.0/24"]);
        let b = node("b", &["10.244.1.0/24"]);
        let routes = vec![
            route("a", "10.244.0.0/24"),      // keep
            route("gone", "10.244.5.0/24"),   // node gone: delete
            route("b", "10.244.9.0/24"),      // wrong CIDR for b: delete
            route("other", "192.168.0.0/24"), // not ours: leave
        ];
        let p = plan(&[&a, &b], &routes, &cluster());
        assert_eq!(p.creates.len(), 1);
        assert_eq!(p.creates[0].route.destination_cidr, "10.244.1.0/24");
        assert_eq!(p.creates[0].name_hint, "uid-b");
        let deleted: Vec<&str> = p
            .deletes
            .iter()
            .map(|r| r.destination_cidr.as_str())
            .collect();
        assert_eq!(deleted, vec!["10.244.5.0/24", "10.244.9.0/24"]);
        assert!(p.statuses["a"]["10.244.0.0/24"]);
        assert!(!p.statuses["b"]["10.244.1.0/24"]);
    }

    #[test]
    fn blackhole_routes_are_deleted_and_recreated() {
        let a = node("a", &["10.244.0.0/24"]);
        let mut r = route("a", "10.244.0.0/24");
        r.blackhole = true;
        let p = plan(&[&a], &[r], &cluster());
        assert_eq!(p.deletes.len(), 1);
        // The blackhole still counts as present; upstream does not re-create it
        // in the same pass.
        assert!(p.creates.is_empty());
    }

    #[test]
    fn address_routes_are_remade_when_addresses_change() {
        let a = node("a", &["10.244.0.0/24"]);
        let mut r = route("a", "10.244.0.0/24");
        r.enable_node_addresses = true;
        r.target_node_addresses = vec![NodeAddress {
            type_: "InternalIP".into(),
            address: "10.9.9.9".into(),
        }];
        let p = plan(&[&a], &[r], &cluster());
        assert_eq!(p.deletes.len(), 1);
        assert_eq!(p.creates.len(), 1);
    }

    #[test]
    fn dual_stack_nodes_get_a_route_per_cidr() {
        let a = node("a", &["10.244.0.0/24", "fd00:10:0:1::/64"]);
        let cidrs = vec![
            "10.244.0.0/16".parse().unwrap(),
            "fd00:10::/56".parse().unwrap(),
        ];
        let p = plan(&[&a], &[], &cidrs);
        assert_eq!(p.creates.len(), 2);
    }

    #[test]
    fn responsibility_is_by_first_or_last_address() {
        assert!(is_responsible(&route("x", "10.244.3.0/24"), &cluster()));
        assert!(!is_responsible(&route("x", "10.0.0.0/8"), &[]));
        assert!(!is_responsible(&route("x", "10.245.0.0/24"), &cluster()));
        assert!(!is_responsible(&route("x", "garbage"), &cluster()));
    }

    #[test]
    fn network_condition_verdicts() {
        let ok = BTreeMap::from([("c".to_string(), true)]);
        let missing = BTreeMap::from([("c".to_string(), true), ("d".to_string(), false)]);
        assert_eq!(routes_created(Some(&ok), true), Some(true));
        assert_eq!(routes_created(Some(&missing), true), Some(false));
        assert_eq!(routes_created(None, true), Some(false));
        assert_eq!(routes_created(None, false), None);
    }
}
