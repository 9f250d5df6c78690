//! The cloud-node controller's decisions, as plain functions of their inputs.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Node, NodeAddress, Taint};
use overcast_cloud_provider::InstanceMetadata;
use overcast_cloud_provider::names::*;

use crate::node_helpers::{provider_id, taints};

/// Why a Node cannot be initialised yet. The taint stays; the controller retries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("cloud provider does not set node provider ID")]
    NoProviderId,
    #[error("provided node ip for node {node:?} is not valid: {reason}")]
    ProvidedNodeIp { node: String, reason: String },
}

/// What initialising one Node writes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct InitPlan {
    /// Set when the Node has no spec.providerID yet.
    pub provider_id: Option<String>,
    /// Labels to add or change.
    pub labels: BTreeMap<String, String>,
    /// The Node's taints without the uninitialized taint.
    pub taints: Vec<Taint>,
    /// status.addresses to write, when they differ from the Node's.
    pub addresses: Option<Vec<NodeAddress>>,
}

/// Beta → GA label pairs that the controller keeps in step (beta is primary).
const LABEL_PAIRS: [(&str, &str); 3] = [
    (LABEL_ZONE_BETA, LABEL_ZONE),
    (LABEL_REGION_BETA, LABEL_REGION),
    (LABEL_INSTANCE_TYPE_BETA, LABEL_INSTANCE_TYPE),
];

/// For an initialised Node: GA labels to set so they match their beta label
/// (upstream's `reconcileNodeLabels`). Empty when nothing needs writing.
pub fn label_reconciliation(node: &Node) -> BTreeMap<String, String> {
    let labels = node.metadata.labels.clone().unwrap_or_default();
    LABEL_PAIRS
        .iter()
        .filter_map(|(primary, secondary)| {
            let value = labels.get(*primary)?;
            (labels.get(*secondary) != Some(value)).then(|| (secondary.to_string(), value.clone()))
        })
        .collect()
}

/// Plans the initialisation of a Node that carries the uninitialized taint,
/// from what the cloud said about its instance.
///
/// A Node never loses the taint without a providerID (kubernetes#123713),
/// unless `provider_id_optional`: a legacy provider without InstanceID, which
/// upstream initialises by name.
pub fn plan_initialization(
    node: &Node,
    meta: &InstanceMetadata,
    provider_id_optional: bool,
) -> Result<InitPlan, PlanError> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let existing_id = provider_id(node);
    let provider_id = if !existing_id.is_empty() {
        None
    } else if !meta.provider_id.is_empty() {
        Some(meta.provider_id.clone())
    } else if provider_id_optional {
        None
    } else {
        return Err(PlanError::NoProviderId);
    };

    let addresses = desired_addresses(node, &meta.node_addresses)
        .map_err(|reason| PlanError::ProvidedNodeIp { node: name, reason })?;

    let existing = node.metadata.labels.clone().unwrap_or_default();
    let mut labels = BTreeMap::new();
    let mut set = |key: &str, value: &str| {
        if !value.is_empty() && existing.get(key).map(String::as_str) != Some(value) {
            labels.insert(key.to_string(), value.to_string());
        }
    };
    set(LABEL_INSTANCE_TYPE_BETA, &meta.instance_type);
    set(LABEL_INSTANCE_TYPE, &meta.instance_type);
    set(LABEL_ZONE_BETA, &meta.zone);
    set(LABEL_ZONE, &meta.zone);
    set(LABEL_REGION_BETA, &meta.region);
    set(LABEL_REGION, &meta.region);
    for (key, value) in &meta.additional_labels {
        // Providers may not set labels in Kubernetes' own namespaces, nor
        // overwrite labels the Node already has.
        if !is_kubernetes_label(key) && !existing.contains_key(key) {
            labels.insert(key.clone(), value.clone());
        }
    }

    let taints = taints(node)
        .iter()
        .filter(|t| t.key != TAINT_UNINITIALIZED)
        .cloned()
        .collect();

    Ok(InitPlan {
        provider_id,
        labels,
        taints,
        addresses,
    })
}

/// Keys in kubernetes.io or k8s.io, or a subdomain of either.
fn is_kubernetes_label(key: &str) -> bool {
    let Some((prefix, _)) = key.split_once('/') else {
        return false;
    };
    ["kubernetes.io", "k8s.io"]
        .iter()
        .any(|d| prefix == *d || prefix.ends_with(&format!(".{d}")))
}

/// The addresses the Node should have, given what the cloud returned, or
/// `None` when nothing should be written (the cloud returned none, or the Node
/// already has exactly these). An error explains a provided-node-ip that
/// matches no cloud address.
pub fn desired_addresses(
    node: &Node,
    cloud: &[NodeAddress],
) -> Result<Option<Vec<NodeAddress>>, String> {
    if cloud.is_empty() {
        return Ok(None);
    }
    let current: &[NodeAddress] = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_deref())
        .unwrap_or_default();
    let mut addresses = cloud.to_vec();
    // Keep the kubelet's Hostname when the cloud reports none.
    if !addresses.iter().any(|a| a.type_ == "Hostname") {
        addresses.extend(current.iter().filter(|a| a.type_ == "Hostname").cloned());
    }
    let provided = node
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_PROVIDED_NODE_IP));
    if let Some(provided) = provided {
        addresses = filter_by_provided_node_ip(provided, addresses)?;
    }
    if addresses_changed(current, &addresses) {
        Ok(Some(addresses))
    } else {
        Ok(None)
    }
}

/// Upstream's nodeAddressesChangeDetected: the same length and, for each new
/// address, the old address of its type (the last one, for a type listed
/// twice) is the same. So a list in another order across types is no change
/// and the Node keeps its order, as with the Go CCM; its quirks with a type
/// listed twice are kept too, so the two never disagree about a write.
pub fn addresses_changed(old: &[NodeAddress], new: &[NodeAddress]) -> bool {
    if old.len() != new.len() {
        return true;
    }
    let by_type: std::collections::HashMap<&str, &str> = old
        .iter()
        .map(|a| (a.type_.as_str(), a.address.as_str()))
        .collect();
    new.iter()
        .any(|a| by_type.get(a.type_.as_str()).copied().unwrap_or("") != a.address)
}

/// Upstream's `GetNodeAddressesFromNodeIP`: each provided IP must be one of
/// the cloud's addresses; it comes first and is the only address of its type;
/// addresses of other types follow.
fn filter_by_provided_node_ip(
    annotation: &str,
    cloud: Vec<NodeAddress>,
) -> Result<Vec<NodeAddress>, String> {
    let ips = annotation
        .split(',')
        .map(|s| {
            s.trim()
                .parse::<IpAddr>()
                .map_err(|_| format!("could not parse {ANNOTATION_PROVIDED_NODE_IP} {annotation:?}: {s:?} is not an IP address"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if ips.len() > 2 || (ips.len() == 2 && ips[0].is_ipv4() == ips[1].is_ipv4()) {
        return Err(format!(
            "{ANNOTATION_PROVIDED_NODE_IP} {annotation:?} must be one IP or a dual-stack pair"
        ));
    }
    // An unspecified address (0.0.0.0 or ::) means "no preference".
    if ips.len() == 1 && ips[0].is_unspecified() {
        return Ok(cloud);
    }
    let same_ip = |a: &NodeAddress, ip: &IpAddr| a.address.parse::<IpAddr>().ok() == Some(*ip);
    let mut out = Vec::new();
    let mut enforced_types = Vec::new();
    for ip in &ips {
        let matches: Vec<&NodeAddress> = cloud.iter().filter(|a| same_ip(a, ip)).collect();
        if matches.is_empty() {
            let known: Vec<&str> = cloud.iter().map(|a| a.address.as_str()).collect();
            return Err(format!(
                "failed to get node address from cloud provider that matches ip: {ip} (the cloud reports {})",
                known.join(", ")
            ));
        }
        for a in matches {
            out.push(a.clone());
            enforced_types.push(a.type_.clone());
        }
    }
    out.extend(
        cloud
            .iter()
            .filter(|a| !enforced_types.contains(&a.type_))
            .cloned(),
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeSpec, NodeStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn addr(type_: &str, address: &str) -> NodeAddress {
        NodeAddress {
            type_: type_.into(),
            address: address.into(),
        }
    }

    fn taint(key: &str) -> Taint {
        Taint {
            key: key.into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        }
    }

    fn node(labels: &[(&str, &str)], provider_id: Option<&str>) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some("n1".into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                provider_id: provider_id.map(Into::into),
                taints: Some(vec![taint(TAINT_UNINITIALIZED), taint("dedicated")]),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                addresses: Some(vec![addr("Hostname", "n1.local")]),
                ..Default::default()
            }),
        }
    }

    fn with_annotation(mut n: Node, value: &str) -> Node {
        n.metadata.annotations = Some(BTreeMap::from([(
            ANNOTATION_PROVIDED_NODE_IP.to_string(),
            value.to_string(),
        )]));
        n
    }

    fn meta() -> InstanceMetadata {
        InstanceMetadata {
            provider_id: "fake://n1".into(),
            instance_type: "bm.large".into(),
            node_addresses: vec![
                addr("InternalIP", "10.0.0.1"),
                addr("ExternalIP", "203.0.113.1"),
            ],
            zone: "rack-1".into(),
            region: "eu-home".into(),
            additional_labels: BTreeMap::from([
                ("example.com/pool".to_string(), "gold".to_string()),
                ("node.kubernetes.io/evil".to_string(), "x".to_string()),
                ("team".to_string(), "cloud".to_string()),
            ]),
        }
    }

    #[test]
    fn initialization_sets_provider_id_labels_addresses_and_drops_only_the_uninitialized_taint() {
        let plan = plan_initialization(&node(&[("team", "infra")], None), &meta(), false).unwrap();
        assert_eq!(plan.provider_id.as_deref(), Some("fake://n1"));
        let expected: BTreeMap<String, String> = [
            (LABEL_INSTANCE_TYPE_BETA, "bm.large"),
            (LABEL_INSTANCE_TYPE, "bm.large"),
            (LABEL_ZONE_BETA, "rack-1"),
            (LABEL_ZONE, "rack-1"),
            (LABEL_REGION_BETA, "eu-home"),
            (LABEL_REGION, "eu-home"),
            ("example.com/pool", "gold"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(
            plan.labels, expected,
            "kubernetes.io labels and existing labels are not taken"
        );
        assert_eq!(plan.taints, vec![taint("dedicated")]);
        assert_eq!(
            plan.addresses.unwrap(),
            vec![
                addr("InternalIP", "10.0.0.1"),
                addr("ExternalIP", "203.0.113.1"),
                addr("Hostname", "n1.local")
            ]
        );
    }

    #[test]
    fn an_existing_provider_id_is_kept() {
        let plan = plan_initialization(&node(&[], Some("fake://other")), &meta(), false).unwrap();
        assert_eq!(plan.provider_id, None);
    }

    #[test]
    fn without_any_provider_id_the_node_stays_tainted() {
        let m = InstanceMetadata {
            provider_id: String::new(),
            ..meta()
        };
        assert_eq!(
            plan_initialization(&node(&[], None), &m, false),
            Err(PlanError::NoProviderId)
        );
        assert!(plan_initialization(&node(&[], Some("fake://n1")), &m, false).is_ok());
        let plan = plan_initialization(&node(&[], None), &m, true).unwrap();
        assert_eq!(
            plan.provider_id, None,
            "legacy providers without InstanceID"
        );
    }

    #[test]
    fn empty_zone_and_region_set_no_labels() {
        let m = InstanceMetadata {
            zone: String::new(),
            region: String::new(),
            ..meta()
        };
        let plan = plan_initialization(&node(&[], None), &m, false).unwrap();
        assert!(!plan.labels.contains_key(LABEL_ZONE));
        assert!(!plan.labels.contains_key(LABEL_REGION_BETA));
    }

    #[test]
    fn kubernetes_label_namespaces() {
        assert!(is_kubernetes_label("kubernetes.io/x"));
        assert!(is_kubernetes_label("node.kubernetes.io/x"));
        assert!(is_kubernetes_label("k8s.io/x"));
        assert!(is_kubernetes_label("foo.k8s.io/x"));
        assert!(!is_kubernetes_label("notkubernetes.io/x"));
        assert!(!is_kubernetes_label("example.com/x"));
        assert!(!is_kubernetes_label("plain"));
    }

    #[test]
    fn provided_node_ip_comes_first_and_replaces_other_addresses_of_its_type() {
        let cloud = vec![
            addr("InternalIP", "10.0.0.1"),
            addr("InternalIP", "10.0.0.2"),
            addr("ExternalIP", "203.0.113.1"),
        ];
        let n = with_annotation(node(&[], None), "10.0.0.2");
        let got = desired_addresses(&n, &cloud).unwrap().unwrap();
        assert_eq!(
            got,
            vec![
                addr("InternalIP", "10.0.0.2"),
                addr("ExternalIP", "203.0.113.1"),
                addr("Hostname", "n1.local")
            ]
        );
    }

    #[test]
    fn provided_node_ip_dual_stack_pair() {
        let cloud = vec![
            addr("InternalIP", "10.0.0.1"),
            addr("InternalIP", "fd00::1"),
            addr("InternalIP", "10.0.0.9"),
            addr("Hostname", "n1"),
        ];
        let n = with_annotation(node(&[], None), "10.0.0.1,fd00::1");
        let got = desired_addresses(&n, &cloud).unwrap().unwrap();
        assert_eq!(
            got,
            vec![
                addr("InternalIP", "10.0.0.1"),
                addr("InternalIP", "fd00::1"),
                addr("Hostname", "n1")
            ]
        );
    }

    #[test]
    fn provided_node_ip_not_in_the_cloud_is_an_error_that_names_it() {
        let n = with_annotation(node(&[], None), "10.9.9.9");
        let err = desired_addresses(&n, &meta().node_addresses).unwrap_err();
        assert!(err.contains("matches ip: 10.9.9.9"), "{err}");
        assert!(
            err.contains("10.0.0.1"),
            "names what the cloud reports: {err}"
        );
        let plan_err = plan_initialization(&n, &meta(), false).unwrap_err();
        assert!(matches!(plan_err, PlanError::ProvidedNodeIp { .. }));
    }

    #[test]
    fn provided_node_ip_garbage_and_unspecified() {
        let n = with_annotation(node(&[], None), "not-an-ip");
        assert!(
            desired_addresses(&n, &meta().node_addresses)
                .unwrap_err()
                .contains("not an IP")
        );
        let n = with_annotation(node(&[], None), "0.0.0.0");
        let got = desired_addresses(&n, &meta().node_addresses)
            .unwrap()
            .unwrap();
        assert_eq!(got[0], addr("InternalIP", "10.0.0.1"));
        let n = with_annotation(node(&[], None), "10.0.0.1,10.0.0.2");
        assert!(
            desired_addresses(&n, &meta().node_addresses)
                .unwrap_err()
                .contains("dual-stack")
        );
    }

    #[test]
    fn address_changes_are_detected_per_type_as_upstream() {
        let a = |t: &str, ip: &str| addr(t, ip);
        let old = [a("InternalIP", "10.0.0.1"), a("Hostname", "n1")];
        // Another order across types: no change (the Node keeps its order).
        assert!(!addresses_changed(
            &old,
            &[a("Hostname", "n1"), a("InternalIP", "10.0.0.1")]
        ));
        assert!(addresses_changed(
            &old,
            &[a("InternalIP", "10.0.0.2"), a("Hostname", "n1")]
        ));
        assert!(addresses_changed(&old, &[a("InternalIP", "10.0.0.1")]));
        // Two of one type: the map keeps the last, as upstream's.
        let two = [a("InternalIP", "10.0.0.1"), a("InternalIP", "10.0.0.2")];
        assert!(addresses_changed(
            &two,
            &[a("InternalIP", "10.0.0.2"), a("InternalIP", "10.0.0.1")]
        ));
        assert!(!addresses_changed(
            &two,
            &[a("InternalIP", "10.0.0.2"), a("InternalIP", "10.0.0.2")]
        ));
    }

    #[test]
    fn the_cloud_reporting_the_nodes_addresses_in_another_order_writes_nothing() {
        let mut n = node(&[], None);
        n.status.get_or_insert_default().addresses = Some(vec![
            addr("Hostname", "n1.local"),
            addr("InternalIP", "10.0.0.5"),
        ]);
        let cloud = [addr("InternalIP", "10.0.0.5"), addr("Hostname", "n1.local")];
        assert_eq!(desired_addresses(&n, &cloud).unwrap(), None);
    }

    #[test]
    fn unchanged_or_empty_cloud_addresses_write_nothing() {
        let mut n = node(&[], None);
        assert_eq!(desired_addresses(&n, &[]).unwrap(), None);
        n.status.as_mut().unwrap().addresses =
            Some(vec![addr("InternalIP", "10.0.0.1"), addr("Hostname", "x")]);
        let cloud = vec![addr("InternalIP", "10.0.0.1"), addr("Hostname", "x")];
        assert_eq!(desired_addresses(&n, &cloud).unwrap(), None);
    }

    #[test]
    fn ga_labels_follow_their_beta_label() {
        let n = node(
            &[
                (LABEL_ZONE_BETA, "a"),
                (LABEL_ZONE, "b"),
                (LABEL_REGION_BETA, "r"),
                (LABEL_INSTANCE_TYPE, "only-ga"),
            ],
            None,
        );
        let got = label_reconciliation(&n);
        assert_eq!(
            got,
            BTreeMap::from([
                (LABEL_ZONE.to_string(), "a".to_string()),
                (LABEL_REGION.to_string(), "r".to_string())
            ])
        );
        assert!(
            label_reconciliation(&node(&[(LABEL_ZONE_BETA, "a"), (LABEL_ZONE, "a")], None))
                .is_empty()
        );
    }
}
