//! Address pools from an incumbent's configuration: MetalLB's
//! IPAddressPool and L2Advertisement objects, or kube-vip-cloud-provider's
//! ConfigMap, as the `loadBalancer` section of this provider's config
//! (`overcast-ccm migrate import-config`). What has no equivalent here is an
//! error naming the object and field, never dropped: a pool opened wider
//! than it was, or announced another way, would change who gets an address.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// The converted section and what the user must know about it (one line
/// each: a choice made, or a setting to finish by hand).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    pub yaml: String,
    pub notes: Vec<String>,
}

/// One pool as it will be written.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct PoolOut {
    name: String,
    addresses: Vec<String>,
    namespaces: Vec<String>,
    avoid_buggy_ips: bool,
    auto_assign: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Object {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    metadata: Metadata,
    #[serde(default)]
    spec: Value,
    #[serde(default)]
    data: BTreeMap<String, String>,
    #[serde(default)]
    items: Vec<Object>,
}

#[derive(Debug, Default, Deserialize)]
struct Metadata {
    #[serde(default)]
    name: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct IpAddressPoolSpec {
    #[serde(default)]
    addresses: Vec<String>,
    auto_assign: Option<bool>,
    #[serde(rename = "avoidBuggyIPs")]
    avoid_buggy_ips: Option<bool>,
    service_allocation: Option<ServiceAllocation>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ServiceAllocation {
    priority: Option<i64>,
    #[serde(default)]
    namespaces: Vec<String>,
    #[serde(default)]
    namespace_selectors: Vec<Value>,
    #[serde(default)]
    service_selectors: Vec<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct L2AdvertisementSpec {
    #[serde(default)]
    ip_address_pools: Vec<String>,
    #[serde(default)]
    ip_address_pool_selectors: Vec<LabelSelector>,
    #[serde(default)]
    interfaces: Vec<String>,
    #[serde(default)]
    node_selectors: Vec<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct LabelSelector {
    #[serde(default)]
    match_labels: BTreeMap<String, String>,
    #[serde(default)]
    match_expressions: Vec<Value>,
}

/// Every object of a multi-document YAML text, `kind: List` unpacked.
fn objects(text: &str) -> Result<Vec<Object>, String> {
    let docs: Vec<Object> = serde_saphyr::from_multiple(text).map_err(|e| {
        let message = e.to_string();
        message.lines().next().unwrap_or_default().to_string()
    })?;
    let mut out = Vec::new();
    for doc in docs {
        if doc.kind == "List" || doc.kind.ends_with("List") {
            out.extend(doc.items);
        } else if !doc.kind.is_empty() {
            out.push(doc);
        }
    }
    Ok(out)
}

fn spec<T: DeserializeOwned + Default>(object: &Object) -> Result<T, String> {
    if object.spec.is_null() {
        return Ok(T::default());
    }
    serde_json::from_value(object.spec.clone())
        .map_err(|e| format!("{} {:?}: spec: {e}", object.kind, object.metadata.name))
}

/// MetalLB's objects (`kubectl get ipaddresspools,l2advertisements,bgpadvertisements
/// -n metallb-system -o yaml`, or the manifests) as pools.
pub fn from_metallb(text: &str) -> Result<Imported, String> {
    let objects = objects(text)?;
    let mut notes = Vec::new();
    let mut pools: Vec<(Option<i64>, PoolOut, &Metadata)> = Vec::new();
    let mut advertisements: Vec<(&str, L2AdvertisementSpec)> = Vec::new();
    for o in &objects {
        let name = o.metadata.name.as_str();
        match o.kind.as_str() {
            "IPAddressPool" => {
                let s: IpAddressPoolSpec = spec(o)?;
                let at = format!("IPAddressPool {name:?}");
                if s.addresses.is_empty() {
                    return Err(format!("{at}: spec.addresses is empty"));
                }
                let allocation = s.service_allocation.unwrap_or_default();
                if !allocation.namespace_selectors.is_empty() {
                    return Err(format!(
                        "{at}: spec.serviceAllocation.namespaceSelectors has no equivalent here; list the namespaces in spec.serviceAllocation.namespaces and import again"
                    ));
                }
                if !allocation.service_selectors.is_empty() {
                    return Err(format!(
                        "{at}: spec.serviceAllocation.serviceSelectors has no equivalent here (a pool is chosen by namespace, or by the Service naming it with metallb.io/address-pool, which stays honoured); remove them and import again"
                    ));
                }
                pools.push((
                    allocation.priority,
                    PoolOut {
                        name: name.to_string(),
                        addresses: s.addresses.iter().map(|a| a.replace(' ', "")).collect(),
                        namespaces: allocation.namespaces,
                        avoid_buggy_ips: s.avoid_buggy_ips.unwrap_or(false),
                        auto_assign: s.auto_assign.unwrap_or(true),
                    },
                    &o.metadata,
                ));
            }
            "L2Advertisement" => advertisements.push((name, spec(o)?)),
            "BGPAdvertisement" => {
                return Err(format!(
                    "BGPAdvertisement {name:?}: the local provider announces addresses by ARP/NDP from the leader only (no BGP); its pools cannot move as they are announced today"
                ));
            }
            "ConfigMap" if o.data.contains_key("config") => {
                return Err(format!(
                    "ConfigMap {name:?}: MetalLB's configuration from before v0.13; convert it to IPAddressPool and L2Advertisement objects first (MetalLB's configmaptocrs)"
                ));
            }
            other => notes.push(format!("skipped {other} {name:?}: it holds no pool")),
        }
    }
    if pools.is_empty() {
        return Err("no IPAddressPool in the input".into());
    }

    // Which pools an advertisement announces, and on which interfaces.
    let mut announced = vec![false; pools.len()];
    let mut interfaces: Vec<String> = Vec::new();
    for (name, ad) in &advertisements {
        let at = format!("L2Advertisement {name:?}");
        for selector in &ad.ip_address_pool_selectors {
            if !selector.match_expressions.is_empty() {
                return Err(format!(
                    "{at}: spec.ipAddressPoolSelectors[].matchExpressions are not read here; name the pools in spec.ipAddressPools"
                ));
            }
        }
        for pool in &ad.ip_address_pools {
            if !pools.iter().any(|(_, p, _)| p.name == *pool) {
                return Err(format!(
                    "{at}: spec.ipAddressPools names {pool:?}, which is not in the input"
                ));
            }
        }
        let everything = ad.ip_address_pools.is_empty() && ad.ip_address_pool_selectors.is_empty();
        for (i, (_, pool, meta)) in pools.iter().enumerate() {
            let selected = ad.ip_address_pool_selectors.iter().any(|s| {
                s.match_labels
                    .iter()
                    .all(|(k, v)| meta.labels.get(k) == Some(v))
            });
            if everything || selected || ad.ip_address_pools.contains(&pool.name) {
                announced[i] = true;
            }
        }
        for interface in &ad.interfaces {
            if !interfaces.contains(interface) {
                interfaces.push(interface.clone());
            }
        }
        if !ad.node_selectors.is_empty() {
            notes.push(format!(
                "{at}: spec.nodeSelectors: here the leading overcast-ccm announces every address from its own node; to keep announcements on those nodes, schedule overcast-ccm there (the chart's nodeSelector/affinity)"
            ));
        }
    }
    for (i, (_, pool, _)) in pools.iter().enumerate() {
        if !announced[i] {
            notes.push(format!(
                "IPAddressPool {:?} is not in any L2Advertisement: MetalLB hands out its addresses without announcing them; the local provider announces every address it hands out",
                pool.name
            ));
        }
    }
    let interface = match interfaces.as_slice() {
        [] => {
            notes.push(
                "no L2Advertisement names an interface (MetalLB then announces on all of them): set loadBalancer.interface to the interface on the pools' network, or VIPs are not added anywhere".into(),
            );
            String::new()
        }
        [one] => one.clone(),
        many => {
            return Err(format!(
                "L2Advertisements name the interfaces {}; the local provider adds and announces VIPs on one interface",
                many.join(", ")
            ));
        }
    };

    // MetalLB tries pools with a priority first, lowest value first, then
    // the rest; pools here are tried in file order.
    let mut ordered: Vec<(Option<i64>, PoolOut)> =
        pools.into_iter().map(|(p, pool, _)| (p, pool)).collect();
    ordered.sort_by_key(|(priority, _)| (priority.is_none(), priority.unwrap_or(0)));
    let pools: Vec<PoolOut> = ordered.into_iter().map(|(_, p)| p).collect();
    Ok(Imported {
        yaml: render("MetalLB", &interface, &pools),
        notes,
    })
}

/// kube-vip-cloud-provider's ConfigMap (`kubectl get configmap kubevip -n
/// kube-system -o yaml`) as pools: one per namespace key, then the global one,
/// the order kube-vip looks in.
pub fn from_kube_vip(text: &str) -> Result<Imported, String> {
    let objects = objects(text)?;
    let configmaps: Vec<&Object> = objects.iter().filter(|o| o.kind == "ConfigMap").collect();
    let [configmap] = configmaps.as_slice() else {
        return Err(format!(
            "expected one ConfigMap (kube-vip's, kubevip in kube-system); the input has {}",
            configmaps.len()
        ));
    };
    let mut notes = Vec::new();
    let mut by_scope: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (key, value) in &configmap.data {
        let scope = key
            .strip_prefix("cidr-")
            .or_else(|| key.strip_prefix("range-"));
        if let Some(scope) = scope {
            let addresses = by_scope.entry(scope.to_string()).or_default();
            addresses.extend(
                value
                    .split(',')
                    .map(|a| a.replace(' ', ""))
                    .filter(|a| !a.is_empty()),
            );
        } else if key.starts_with("allow-share-") {
            notes.push(format!(
                "{key}: kube-vip shares an address between Services that ask for the same one; here Services share only when they carry the same local.overcast.dev/allow-shared-ip key: add one to each such Service"
            ));
        } else {
            return Err(format!(
                "ConfigMap {:?}: data key {key:?} has no equivalent here",
                configmap.metadata.name
            ));
        }
    }
    if by_scope.is_empty() {
        return Err(format!(
            "ConfigMap {:?} has no cidr-* or range-* key",
            configmap.metadata.name
        ));
    }
    let global = by_scope.remove("global");
    let mut pools: Vec<PoolOut> = by_scope
        .into_iter()
        .map(|(namespace, addresses)| PoolOut {
            name: namespace.clone(),
            addresses,
            namespaces: vec![namespace],
            avoid_buggy_ips: false,
            auto_assign: true,
        })
        .collect();
    if let Some(addresses) = global {
        pools.push(PoolOut {
            name: "global".into(),
            addresses,
            namespaces: Vec::new(),
            avoid_buggy_ips: false,
            auto_assign: true,
        });
    }
    notes.push(
        "kube-vip's interface is set on its DaemonSet (vip_interface), not in this ConfigMap: set loadBalancer.interface".into(),
    );
    Ok(Imported {
        yaml: render("kube-vip", "", &pools),
        notes,
    })
}

/// The `loadBalancer` section; strings as JSON strings, which YAML reads
/// as they are.
fn render(source: &str, interface: &str, pools: &[PoolOut]) -> String {
    let quote = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let list = |items: &[String]| {
        let quoted: Vec<String> = items.iter().map(|s| quote(s)).collect();
        format!("[{}]", quoted.join(", "))
    };
    let mut out = format!(
        "# The loadBalancer section of the local provider's --cloud-config,\n# imported from {source} by overcast-ccm migrate import-config.\nloadBalancer:\n  interface: {}\n  pools:\n",
        quote(interface)
    );
    for p in pools {
        out += &format!("    - name: {}\n", quote(&p.name));
        out += &format!("      addresses: {}\n", list(&p.addresses));
        if !p.namespaces.is_empty() {
            out += &format!("      namespaces: {}\n", list(&p.namespaces));
        }
        if p.avoid_buggy_ips {
            out += "      avoidBuggyIPs: true\n";
        }
        if !p.auto_assign {
            out += "      autoAssign: false\n";
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LocalConfig;

    const METALLB: &str = r#"
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: general, namespace: metallb-system}
spec:
  addresses: [192.168.10.0/28, 192.168.10.100 - 192.168.10.110]
  avoidBuggyIPs: true
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: team-a, namespace: metallb-system, labels: {tier: team}}
spec:
  addresses: [192.168.20.0/29]
  autoAssign: false
  serviceAllocation: {priority: 10, namespaces: [team-a]}
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {name: lan, namespace: metallb-system}
spec:
  ipAddressPools: [general]
  ipAddressPoolSelectors:
    - matchLabels: {tier: team}
  interfaces: [eth1]
"#;

    #[test]
    fn metallb_pools_become_pools_in_metallb_order_and_the_result_loads() {
        let imported = from_metallb(METALLB).unwrap();
        assert!(imported.notes.is_empty(), "{:?}", imported.notes);
        let config = LocalConfig::parse(imported.yaml.as_bytes()).unwrap();
        let lb = &config.load_balancer;
        assert_eq!(lb.interface, "eth1");
        let names: Vec<&str> = lb.pools.iter().map(|p| p.name.as_str()).collect();
        // A pool with a priority is tried before one without.
        assert_eq!(names, ["team-a", "general"]);
        assert!(!lb.pools[0].auto_assign);
        assert_eq!(lb.pools[0].namespaces, ["team-a"]);
        assert!(lb.pools[1].avoid_buggy_ips && lb.pools[1].auto_assign);
        assert!(lb.pools[1].contains("192.168.10.105".parse().unwrap()));
        assert!(!lb.pools[1].contains("192.168.10.0".parse().unwrap()));
    }

    #[test]
    fn what_metallb_does_and_the_local_provider_cannot_is_refused_or_noted() {
        let bgp = format!(
            "{METALLB}---\napiVersion: metallb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {{name: upstream}}\nspec: {{}}\n"
        );
        assert!(
            from_metallb(&bgp)
                .unwrap_err()
                .starts_with("BGPAdvertisement \"upstream\"")
        );
        let selectors = METALLB.replace(
            "serviceAllocation: {priority: 10, namespaces: [team-a]}",
            "serviceAllocation: {namespaceSelectors: [{matchLabels: {team: a}}]}",
        );
        assert!(
            from_metallb(&selectors)
                .unwrap_err()
                .contains("spec.serviceAllocation.namespaceSelectors has no equivalent")
        );
        let typo = METALLB.replace("autoAssign: false", "autoAsign: false");
        let e = from_metallb(&typo).unwrap_err();
        assert!(
            e.starts_with("IPAddressPool \"team-a\": spec: unknown field `autoAsign`"),
            "{e}"
        );
        let two = METALLB.replace("interfaces: [eth1]", "interfaces: [eth1, eth2]");
        assert!(from_metallb(&two).unwrap_err().contains("eth1, eth2"));
        let none = METALLB
            .replace(
                "interfaces: [eth1]",
                "nodeSelectors: [{matchLabels: {edge: \"true\"}}]",
            )
            .replace(
                "  ipAddressPoolSelectors:\n    - matchLabels: {tier: team}\n",
                "",
            );
        let imported = from_metallb(&none).unwrap();
        let notes = imported.notes.join("\n");
        assert!(notes.contains("spec.nodeSelectors"), "{notes}");
        assert!(
            notes.contains("IPAddressPool \"team-a\" is not in any L2Advertisement"),
            "{notes}"
        );
        assert!(notes.contains("set loadBalancer.interface"), "{notes}");
    }

    #[test]
    fn a_kubectl_list_reads_as_its_items() {
        let list = "apiVersion: v1\nkind: List\nitems:\n  - apiVersion: metallb.io/v1beta1\n    kind: IPAddressPool\n    metadata: {name: p}\n    spec: {addresses: [10.0.0.0/30]}\n";
        let imported = from_metallb(list).unwrap();
        let config = LocalConfig::parse(imported.yaml.as_bytes()).unwrap();
        assert_eq!(config.load_balancer.pools[0].name, "p");
    }

    #[test]
    fn kube_vip_namespace_pools_come_before_the_global_one() {
        let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: kubevip, namespace: kube-system}\ndata:\n  cidr-global: 192.168.0.200/29\n  range-shop: 192.168.1.10-192.168.1.20, 192.168.1.30-192.168.1.31\n  cidr-shop: 192.168.2.0/30\n  allow-share-shop: \"true\"\n";
        let imported = from_kube_vip(cm).unwrap();
        let config = LocalConfig::parse(imported.yaml.as_bytes()).unwrap();
        let pools = &config.load_balancer.pools;
        assert_eq!(pools.len(), 2);
        assert_eq!(
            (pools[0].name.as_str(), pools[0].namespaces.as_slice()),
            ("shop", &["shop".to_string()][..])
        );
        assert_eq!(pools[0].ranges.len(), 3);
        assert_eq!(pools[1].name, "global");
        assert!(pools[1].namespaces.is_empty());
        let notes = imported.notes.join("\n");
        assert!(
            notes.contains("allow-share-shop") && notes.contains("vip_interface"),
            "{notes}"
        );
        let unknown = cm.replace("allow-share-shop", "search-order");
        assert!(
            from_kube_vip(&unknown)
                .unwrap_err()
                .contains("\"search-order\" has no equivalent")
        );
    }
}
