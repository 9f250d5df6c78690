//! LoadBalancer: a VIP per Service and IP family from the pools, served by
//! the built-in proxy in front of the eligible Nodes' NodePorts.

use std::net::{IpAddr, SocketAddr};

use async_trait::async_trait;
use overcast_cloud_provider::k8s_openapi::api::core::v1::{
    LoadBalancerIngress, LoadBalancerStatus, Node, Service,
};
use overcast_cloud_provider::{CloudError, EventType, LoadBalancer, LoadBalancerPreview, Result};

use crate::LocalCloud;
use crate::allocator::{PortKey, Request};
use crate::annotations::*;
use crate::pool::Pool;
use crate::proxy::health::Check;
use crate::proxy::{BackendSpec, Frontend, Protocol};

fn service_key(svc: &Service) -> String {
    format!(
        "{}/{}",
        svc.metadata.namespace.as_deref().unwrap_or("default"),
        svc.metadata.name.as_deref().unwrap_or_default()
    )
}

fn annotation<'a>(svc: &'a Service, key: &str) -> Option<&'a str> {
    svc.metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
}

fn invalid(svc: &Service, what: String) -> CloudError {
    CloudError::other(format!("Service {}: {what}", service_key(svc)))
}

/// The first of `keys` the Service sets, as (key, value); two that are set
/// and differ (compared by `normal`) are an error naming both, since the
/// Service would get what only one of them asks.
fn first_of(
    svc: &Service,
    keys: &[&'static str],
    normal: fn(&str) -> String,
) -> Result<Option<(&'static str, String)>> {
    let mut found: Option<(&'static str, String)> = None;
    for key in keys {
        let Some(value) = annotation(svc, key) else {
            continue;
        };
        match &found {
            None => found = Some((key, value.to_string())),
            Some((first, kept)) if normal(kept) != normal(value) => {
                return Err(invalid(
                    svc,
                    format!("{first} {kept:?} and {key} {value:?} disagree; keep one of them"),
                ));
            }
            Some(_) => {}
        }
    }
    Ok(found)
}

/// An address list compared as a set.
fn address_set(text: &str) -> String {
    let mut parts: Vec<&str> = text.split(',').map(str::trim).collect();
    parts.sort_unstable();
    parts.join(",")
}

/// The Service's allocation request, or an error naming the bad field.
fn request(svc: &Service) -> Result<Request> {
    let spec = svc.spec.clone().unwrap_or_default();
    let explicit_text = match first_of(svc, &ADDRESS_REQUESTS, address_set)? {
        Some((key, v)) => Some((key.to_string(), v)),
        None => spec
            .load_balancer_ip
            .as_deref()
            .filter(|v| !v.is_empty())
            .map(|v| ("spec.loadBalancerIP".to_string(), v.to_string())),
    };
    let mut explicit: Vec<IpAddr> = Vec::new();
    if let Some((field, text)) = explicit_text {
        for part in text.split(',').map(str::trim) {
            let ip: IpAddr = part
                .parse()
                .map_err(|_| invalid(svc, format!("{field}: {part:?} is not an IP address")))?;
            if ip.is_unspecified() {
                // kube-vip's way to ask for an address by DHCP.
                return Err(invalid(
                    svc,
                    format!(
                        "{field}: {part} asks for an address by DHCP, which the local provider does not do; name an address of a pool, or remove it to get one"
                    ),
                ));
            }
            if explicit.iter().any(|e| e.is_ipv4() == ip.is_ipv4()) {
                return Err(invalid(
                    svc,
                    format!("{field}: give at most one address per IP family"),
                ));
            }
            explicit.push(ip);
        }
    }
    let mut families: Vec<bool> = spec
        .ip_families
        .iter()
        .flatten()
        .map(|f| f == "IPv4")
        .collect();
    if families.is_empty() {
        families.push(explicit.first().is_none_or(IpAddr::is_ipv4));
    }
    if spec.ip_family_policy.as_deref() == Some("SingleStack") {
        families.truncate(1);
    }
    let mut ports: Vec<PortKey> = Vec::new();
    for p in spec.ports.iter().flatten() {
        ports.push((p.protocol.clone().unwrap_or_else(|| "TCP".into()), p.port));
    }
    Ok(Request {
        service: service_key(svc),
        namespace: svc
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        families,
        require_all_families: spec.ip_family_policy.as_deref() == Some("RequireDualStack"),
        explicit,
        pool: first_of(svc, &POOL_REQUESTS, str::to_string)?.map(|(_, v)| v),
        sharing_key: first_of(svc, &SHARING_REQUESTS, str::to_string)?.map(|(_, v)| v),
        ports,
    })
}

/// The Service's annotations of MetalLB, kube-vip or this provider that
/// have no effect here, each with what to do instead.
fn unhonoured(svc: &Service) -> Vec<String> {
    let honoured: Vec<&str> = ADDRESS_REQUESTS
        .iter()
        .chain(&POOL_REQUESTS)
        .chain(&SHARING_REQUESTS)
        .chain(&[PROXY_PROTOCOL])
        .copied()
        .collect();
    // Written by the incumbent to report, never read by it.
    let reports = [
        "metallb.io/ip-allocated-from-pool",
        "metallb.universe.tf/ip-allocated-from-pool",
        "kube-vip.io/vipHost",
    ];
    let keys = svc
        .metadata
        .annotations
        .iter()
        .flatten()
        .map(|(k, _)| k.as_str());
    keys.filter(|k| {
        [
            "metallb.io/",
            "metallb.universe.tf/",
            "kube-vip.io/",
            "local.overcast.dev/",
        ]
        .iter()
        .any(|p| k.starts_with(p))
    })
    .filter(|k| !honoured.contains(k) && !reports.contains(k))
    .map(|k| {
        let instead = if k == "kube-vip.io/ignore" {
            "to leave the Service to another implementation, set its spec.loadBalancerClass"
        } else if k.starts_with("kube-vip.io/egress") {
            "the local provider does not route egress traffic"
        } else if k.starts_with("local.overcast.dev/") {
            "not a key of the local provider (docs/local-provider.md, Service annotations)"
        } else {
            "no equivalent in the local provider (docs/local-provider.md, Service annotations)"
        };
        format!("{k}: {instead}")
    })
    .collect()
}

/// `ipMode: Proxy` (KEP-1860): the data plane is a proxy on the leader, so
/// kube-proxy must not capture the VIP on the nodes. Measured on real
/// kube-proxy (crates/ccm/tests/e2e.rs): with `VIP`, a Pod's request to the VIP
/// was DNATed on its own node straight to a Pod, and the PROXY header and the
/// health checks never applied to it.
fn status(ips: &[IpAddr]) -> LoadBalancerStatus {
    LoadBalancerStatus {
        ingress: Some(
            ips.iter()
                .map(|ip| LoadBalancerIngress {
                    ip: Some(ip.to_string()),
                    ip_mode: Some("Proxy".into()),
                    ..Default::default()
                })
                .collect(),
        ),
    }
}

/// The addresses in the Service's status (what it held before a restart).
fn status_addresses(svc: &Service) -> Vec<IpAddr> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.as_deref()?.parse().ok())
        .collect()
}

/// The Node's InternalIP of the VIP's family, else its first InternalIP.
fn node_ip(node: &Node, v4: bool) -> Option<IpAddr> {
    let internal: Vec<IpAddr> = node
        .status
        .as_ref()?
        .addresses
        .iter()
        .flatten()
        .filter(|a| a.type_ == "InternalIP")
        .filter_map(|a| a.address.parse().ok())
        .collect();
    internal
        .iter()
        .find(|ip| ip.is_ipv4() == v4)
        .or(internal.first())
        .copied()
}

/// The clients the Service admits (upstream's GetLoadBalancerSourceRanges,
/// overcast_cloud_provider::service_helpers). Empty: everyone.
pub fn source_ranges(svc: &Service) -> Result<Vec<crate::pool::AddressRange>> {
    overcast_cloud_provider::service_helpers::load_balancer_source_ranges(svc)
        .map_err(|e| invalid(svc, e))?
        .iter()
        .map(|cidr| crate::pool::AddressRange::parse(cidr).map_err(|e| invalid(svc, e)))
        .collect()
}

/// The listeners that serve the Service on `ips`.
fn frontends(svc: &Service, ips: &[IpAddr], nodes: &[&Node]) -> Result<Vec<Frontend>> {
    let spec = svc.spec.clone().unwrap_or_default();
    let local = spec.external_traffic_policy.as_deref() == Some("Local");
    let health_port = spec.health_check_node_port.filter(|p| *p > 0);
    let proxy_protocol = match annotation(svc, PROXY_PROTOCOL) {
        None => false,
        Some("v2") => true,
        Some(other) => {
            return Err(invalid(
                svc,
                format!("{PROXY_PROTOCOL}: {other:?} is not supported (use \"v2\")"),
            ));
        }
    };
    // Not silently ignored: the proxy spreads connections, it does not pin a
    // client to a backend (a documented limit, refused as the aws provider
    // and cloud-provider-aws refuse it).
    if spec
        .session_affinity
        .as_deref()
        .is_some_and(|a| a != "None")
    {
        return Err(invalid(
            svc,
            "spec.sessionAffinity: ClientIP is not supported by the local load balancer (it balances each connection; use None)".into(),
        ));
    }
    let allowed_sources = source_ranges(svc)?;
    let mut out = Vec::new();
    for (i, port) in spec.ports.iter().flatten().enumerate() {
        let protocol = match port.protocol.as_deref().unwrap_or("TCP") {
            "TCP" => Protocol::Tcp,
            "UDP" => Protocol::Udp,
            other => {
                return Err(invalid(
                    svc,
                    format!(
                        "spec.ports[{i}].protocol: {other} is not supported by the local load balancer (TCP, UDP)"
                    ),
                ));
            }
        };
        let node_port = port.node_port.filter(|p| *p > 0).ok_or_else(|| {
            invalid(
                svc,
                format!("spec.ports[{i}] has no nodePort; the local load balancer forwards to NodePorts (allocateLoadBalancerNodePorts must not be false)"),
            )
        })?;
        let front_port = u16::try_from(port.port).map_err(|_| {
            invalid(
                svc,
                format!("spec.ports[{i}].port: {} is out of range", port.port),
            )
        })?;
        for ip in ips {
            let backends = nodes
                .iter()
                .filter_map(|n| node_ip(n, ip.is_ipv4()))
                .map(|node_ip| {
                    let address = SocketAddr::new(node_ip, node_port as u16);
                    let check = match (local, health_port, protocol) {
                        (true, Some(hp), _) => {
                            Some(Check::Http(SocketAddr::new(node_ip, hp as u16)))
                        }
                        (_, _, Protocol::Tcp) => Some(Check::Tcp(address)),
                        (_, _, Protocol::Udp) => None,
                    };
                    BackendSpec { address, check }
                })
                .collect();
            out.push(Frontend {
                address: SocketAddr::new(*ip, front_port),
                protocol,
                backends,
                proxy_protocol,
                allowed_sources: allowed_sources.clone(),
            });
        }
    }
    Ok(out)
}

/// MetalLB's `IPAllocated` message (`Assigned IP %q` of the addresses) with
/// the pools they came from, when the Service's addresses are not the ones
/// in its status; `None` when they are (nothing new to tell).
fn allocation_message(held: &[IpAddr], now: &[IpAddr], pools: &[Pool]) -> Option<String> {
    let as_set = |ips: &[IpAddr]| {
        ips.iter()
            .copied()
            .collect::<std::collections::BTreeSet<_>>()
    };
    if now.is_empty() || as_set(held) == as_set(now) {
        return None;
    }
    // Go's %q of a slice: each element quoted, space-separated.
    let ips: Vec<String> = now
        .iter()
        .map(|ip| format!("{:?}", ip.to_string()))
        .collect();
    let ips = ips.join(" ");
    let mut names: Vec<String> = Vec::new();
    for ip in now {
        if let Some(pool) = pools.iter().find(|p| p.contains(*ip))
            && !names.contains(&pool.name)
        {
            names.push(pool.name.clone());
        }
    }
    let from = match names.len() {
        0 => String::new(),
        1 => format!(" from address pool {:?}", names[0]),
        _ => format!(" from address pools {}", names.join(", ")),
    };
    Some(format!("Assigned IP [{ips}]{from}"))
}

/// MetalLB's speaker's `nodeAssigned` message: where the Service is served
/// from. With an interface the VIPs are announced there (layer 2, as
/// MetalLB's L2 mode); without, the host already has them.
fn serving_message(node: &str, announced: bool) -> String {
    if announced {
        format!("announcing from node {node:?} with protocol \"layer2\"")
    } else {
        format!("serving from node {node:?} on addresses the host already has")
    }
}

impl LocalCloud {
    /// Records the Service's Events after a sync that served it.
    fn report_served(&self, service: &Service, ips: &[IpAddr], pools: &[Pool]) {
        let Some(events) = self.events.get() else {
            return;
        };
        if let Some(message) = allocation_message(&status_addresses(service), ips, pools) {
            events.publish(service, EventType::Normal, "IPAllocated", message);
        }
        let first_here = self
            .served
            .lock()
            .expect("served lock")
            .insert(service_key(service));
        if first_here {
            let announced = !self.config().load_balancer.interface.is_empty();
            events.publish(
                service,
                EventType::Normal,
                "nodeAssigned",
                serving_message(&self.node_name, announced),
            );
        }
    }

    fn allocation(&self, svc: &Service) -> Option<Vec<IpAddr>> {
        self.allocator
            .lock()
            .expect("allocator lock")
            .addresses_of(&service_key(svc))
            .map(<[IpAddr]>::to_vec)
    }
}

#[async_trait]
impl LoadBalancer for LocalCloud {
    async fn get_load_balancer(
        &self,
        _cluster_name: &str,
        service: &Service,
    ) -> Result<Option<LoadBalancerStatus>> {
        Ok(self.allocation(service).map(|ips| status(&ips)))
    }

    async fn restore(&self, _cluster_name: &str, services: &[Service]) -> Result<()> {
        let mut allocator = self.allocator.lock().expect("allocator lock");
        let mut restored = 0;
        for svc in services {
            let addresses = status_addresses(svc);
            if addresses.is_empty() {
                continue;
            }
            // A Service with a bad annotation still keeps its addresses.
            let req = request(svc).unwrap_or_else(|_| Request {
                service: service_key(svc),
                ..Default::default()
            });
            allocator.restore(&req, &addresses);
            restored += 1;
        }
        tracing::info!(
            services = restored,
            "restored VIP allocations from Service status"
        );
        drop(allocator);
        self.report_pools();
        Ok(())
    }

    async fn ensure_load_balancer(
        &self,
        _cluster_name: &str,
        service: &Service,
        nodes: &[&Node],
    ) -> Result<LoadBalancerStatus> {
        let req = request(service)?;
        let pools = self.config().load_balancer.pools.clone();
        let ips = self
            .allocator
            .lock()
            .expect("allocator lock")
            .assign(&pools, &req)
            .map_err(|e| invalid(service, e.to_string()))?;
        self.report_pools();
        let frontends = frontends(service, &ips, nodes)?;
        self.data_plane
            .apply(&req.service, &frontends)
            .await
            .map_err(|e| invalid(service, e.to_string()))?;
        self.report_served(service, &ips, &pools);
        Ok(status(&ips))
    }

    async fn preview_load_balancer(
        &self,
        _cluster_name: &str,
        service: &Service,
        nodes: &[&Node],
    ) -> Result<LoadBalancerPreview> {
        let req = request(service)?;
        let pools = self.config().load_balancer.pools.clone();
        // On a copy: the preview holds nothing.
        let mut allocator = self.allocator.lock().expect("allocator lock").clone();
        let ips = allocator
            .assign(&pools, &req)
            .map_err(|e| invalid(service, e.to_string()))?;
        frontends(service, &ips, nodes)?;
        // Listeners are rebuilt in place and cost nothing to change.
        Ok(LoadBalancerPreview {
            status: Some(status(&ips)),
            changes: Vec::new(),
        })
    }

    fn unhonoured_annotations(&self, service: &Service) -> Vec<String> {
        unhonoured(service)
    }

    async fn update_load_balancer(
        &self,
        _cluster_name: &str,
        service: &Service,
        nodes: &[&Node],
    ) -> Result<()> {
        let Some(ips) = self.allocation(service) else {
            return Ok(());
        };
        let frontends = frontends(service, &ips, nodes)?;
        self.data_plane
            .apply(&service_key(service), &frontends)
            .await
            .map_err(|e| invalid(service, e.to_string()))
    }

    async fn ensure_load_balancer_deleted(
        &self,
        _cluster_name: &str,
        service: &Service,
    ) -> Result<()> {
        let key = service_key(service);
        self.data_plane.remove(&key).await;
        self.served.lock().expect("served lock").remove(&key);
        let released = self.allocator.lock().expect("allocator lock").release(&key);
        self.report_pools();
        if !released.is_empty() {
            tracing::info!(service = %key, addresses = ?released, "released VIPs");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(name: &str, range: &str) -> Pool {
        Pool {
            name: name.into(),
            ranges: vec![crate::pool::AddressRange::parse(range).unwrap()],
            namespaces: Vec::new(),
            avoid_buggy_ips: false,
            auto_assign: true,
        }
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|ip| ip.parse().unwrap()).collect()
    }

    #[test]
    fn a_new_address_is_told_with_its_pool_as_metallb_words_it() {
        let pools = [pool("lan", "10.0.0.0/24"), pool("v6", "fd00::/120")];
        assert_eq!(
            allocation_message(&[], &ips(&["10.0.0.7"]), &pools).as_deref(),
            Some("Assigned IP [\"10.0.0.7\"] from address pool \"lan\"")
        );
        assert_eq!(
            allocation_message(&ips(&["10.0.0.7"]), &ips(&["10.0.0.7", "fd00::7"]), &pools)
                .as_deref(),
            Some("Assigned IP [\"10.0.0.7\" \"fd00::7\"] from address pools lan, v6")
        );
    }

    #[test]
    fn addresses_already_in_the_status_are_not_told_again() {
        let pools = [pool("lan", "10.0.0.0/24")];
        let held = ips(&["fd00::7", "10.0.0.7"]);
        assert_eq!(
            allocation_message(&held, &ips(&["10.0.0.7", "fd00::7"]), &pools),
            None
        );
        assert_eq!(allocation_message(&held, &[], &pools), None);
    }

    #[test]
    fn the_serving_node_is_named_and_how() {
        assert_eq!(
            serving_message("node-1", true),
            "announcing from node \"node-1\" with protocol \"layer2\""
        );
        assert!(serving_message("node-1", false).contains("\"node-1\""));
    }
    use overcast_cloud_provider::k8s_openapi::api::core::v1::{
        NodeAddress, NodeStatus, ServicePort, ServiceSpec,
    };
    use overcast_cloud_provider::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn svc(annotations: &[(&str, &str)], spec: ServiceSpec) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("shop".into()),
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(spec),
            ..Default::default()
        }
    }

    fn node(ips: &[&str]) -> Node {
        Node {
            status: Some(NodeStatus {
                addresses: Some(
                    ips.iter()
                        .map(|ip| NodeAddress {
                            type_: "InternalIP".into(),
                            address: ip.to_string(),
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn port(protocol: &str, port: i32, node_port: i32) -> ServicePort {
        ServicePort {
            protocol: Some(protocol.into()),
            port,
            node_port: Some(node_port),
            ..Default::default()
        }
    }

    #[test]
    fn the_annotation_wins_over_spec_load_balancer_ip() {
        let s = svc(
            &[
                (LOAD_BALANCER_IPS, "10.0.0.5, fd00::5"),
                (ALLOW_SHARED_IP, "k"),
            ],
            ServiceSpec {
                load_balancer_ip: Some("10.0.0.9".into()),
                ip_families: Some(vec!["IPv4".into(), "IPv6".into()]),
                ..Default::default()
            },
        );
        let r = request(&s).unwrap();
        assert_eq!(
            r.explicit,
            [
                "10.0.0.5".parse::<IpAddr>().unwrap(),
                "fd00::5".parse().unwrap()
            ]
        );
        assert_eq!(r.sharing_key.as_deref(), Some("k"));
        assert_eq!(r.service, "shop/web");
        let s = svc(
            &[],
            ServiceSpec {
                load_balancer_ip: Some("10.0.0.9".into()),
                ..Default::default()
            },
        );
        assert_eq!(
            request(&s).unwrap().explicit,
            ["10.0.0.9".parse::<IpAddr>().unwrap()]
        );
    }

    #[test]
    fn metallb_and_kube_vip_requests_are_honoured_and_conflicts_named() {
        for (key, pool_key, sharing_key) in [
            (
                METALLB_LOAD_BALANCER_IPS,
                METALLB_ADDRESS_POOL,
                METALLB_ALLOW_SHARED_IP,
            ),
            (
                METALLB_LEGACY_LOAD_BALANCER_IPS,
                METALLB_LEGACY_ADDRESS_POOL,
                METALLB_LEGACY_ALLOW_SHARED_IP,
            ),
        ] {
            let s = svc(
                &[(key, "10.0.0.5"), (pool_key, "lan"), (sharing_key, "k")],
                ServiceSpec::default(),
            );
            let r = request(&s).unwrap();
            assert_eq!(r.explicit, ["10.0.0.5".parse::<IpAddr>().unwrap()], "{key}");
            assert_eq!(r.pool.as_deref(), Some("lan"), "{pool_key}");
            assert_eq!(r.sharing_key.as_deref(), Some("k"), "{sharing_key}");
        }
        let s = svc(
            &[(KUBE_VIP_LOAD_BALANCER_IPS, "10.0.0.6")],
            ServiceSpec::default(),
        );
        assert_eq!(
            request(&s).unwrap().explicit,
            ["10.0.0.6".parse::<IpAddr>().unwrap()]
        );
        // The same request in two places is one request.
        let s = svc(
            &[
                (LOAD_BALANCER_IPS, "10.0.0.5,fd00::5"),
                (METALLB_LOAD_BALANCER_IPS, "fd00::5, 10.0.0.5"),
            ],
            ServiceSpec {
                ip_families: Some(vec!["IPv4".into(), "IPv6".into()]),
                ..Default::default()
            },
        );
        assert_eq!(request(&s).unwrap().explicit.len(), 2);
        let s = svc(
            &[
                (METALLB_LOAD_BALANCER_IPS, "10.0.0.5"),
                (KUBE_VIP_LOAD_BALANCER_IPS, "10.0.0.6"),
            ],
            ServiceSpec::default(),
        );
        assert_eq!(
            request(&s).unwrap_err().to_string(),
            "Service shop/web: metallb.io/loadBalancerIPs \"10.0.0.5\" and kube-vip.io/loadbalancerIPs \"10.0.0.6\" disagree; keep one of them"
        );
        let s = svc(
            &[(ADDRESS_POOL, "a"), (METALLB_LEGACY_ADDRESS_POOL, "b")],
            ServiceSpec::default(),
        );
        assert!(request(&s).unwrap_err().to_string().contains("disagree"));
        let s = svc(
            &[(KUBE_VIP_LOAD_BALANCER_IPS, "0.0.0.0")],
            ServiceSpec::default(),
        );
        assert!(
            request(&s)
                .unwrap_err()
                .to_string()
                .contains("kube-vip.io/loadbalancerIPs: 0.0.0.0 asks for an address by DHCP")
        );
    }

    #[test]
    fn annotations_without_effect_here_are_named_with_what_to_use() {
        let s = svc(
            &[
                (METALLB_LOAD_BALANCER_IPS, "10.0.0.5"),
                ("metallb.universe.tf/ip-allocated-from-pool", "lan"),
                ("kube-vip.io/egress", "true"),
                ("kube-vip.io/ignore", "true"),
                ("local.overcast.dev/adress-pool", "x"),
                ("example.com/owner", "me"),
            ],
            ServiceSpec::default(),
        );
        let found = unhonoured(&s);
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found[0].starts_with("kube-vip.io/egress: "), "{found:?}");
        assert!(found[1].contains("spec.loadBalancerClass"), "{found:?}");
        assert!(
            found[2].starts_with("local.overcast.dev/adress-pool: not a key"),
            "{found:?}"
        );
    }

    #[test]
    fn bad_annotations_are_named() {
        let s = svc(
            &[(LOAD_BALANCER_IPS, "10.0.0.1,nope")],
            ServiceSpec::default(),
        );
        assert_eq!(
            request(&s).unwrap_err().to_string(),
            "Service shop/web: local.overcast.dev/load-balancer-ips: \"nope\" is not an IP address"
        );
        let s = svc(
            &[(LOAD_BALANCER_IPS, "10.0.0.1,10.0.0.2")],
            ServiceSpec::default(),
        );
        assert!(
            request(&s)
                .unwrap_err()
                .to_string()
                .contains("at most one address per IP family")
        );
        let s = svc(
            &[(PROXY_PROTOCOL, "v1")],
            ServiceSpec {
                ports: Some(vec![port("TCP", 80, 30080)]),
                ..Default::default()
            },
        );
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        assert!(
            frontends(&s, &[ip], &[])
                .unwrap_err()
                .to_string()
                .contains("\"v1\" is not supported")
        );
    }

    #[test]
    fn every_port_forwards_to_every_nodes_node_port() {
        let s = svc(
            &[(PROXY_PROTOCOL, "v2")],
            ServiceSpec {
                ports: Some(vec![port("TCP", 80, 30080), port("UDP", 53, 30053)]),
                ..Default::default()
            },
        );
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let nodes = [
            node(&["192.168.1.1"]),
            node(&["fd00::2", "192.168.1.2"]),
            node(&[]),
        ];
        let f = frontends(&s, &[ip], &nodes.iter().collect::<Vec<_>>()).unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].address, "10.0.0.1:80".parse().unwrap());
        assert!(f[0].proxy_protocol);
        let backends: Vec<String> = f[0]
            .backends
            .iter()
            .map(|b| b.address.to_string())
            .collect();
        assert_eq!(backends, ["192.168.1.1:30080", "192.168.1.2:30080"]);
        assert_eq!(
            f[0].backends[0].check,
            Some(Check::Tcp("192.168.1.1:30080".parse().unwrap()))
        );
        assert_eq!(f[1].protocol, Protocol::Udp);
        assert_eq!(f[1].backends[0].check, None);
    }

    #[test]
    fn local_traffic_policy_checks_the_health_check_node_port() {
        let s = svc(
            &[],
            ServiceSpec {
                ports: Some(vec![port("UDP", 53, 30053)]),
                external_traffic_policy: Some("Local".into()),
                health_check_node_port: Some(31000),
                ..Default::default()
            },
        );
        let f = frontends(
            &s,
            &["10.0.0.1".parse().unwrap()],
            &[&node(&["192.168.1.1"])],
        )
        .unwrap();
        assert_eq!(
            f[0].backends[0].check,
            Some(Check::Http("192.168.1.1:31000".parse().unwrap()))
        );
    }

    #[test]
    fn ports_without_node_ports_are_refused() {
        let mut p = port("TCP", 80, 0);
        p.node_port = None;
        let s = svc(
            &[],
            ServiceSpec {
                ports: Some(vec![p]),
                ..Default::default()
            },
        );
        let err = frontends(&s, &["10.0.0.1".parse().unwrap()], &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("spec.ports[0] has no nodePort"), "{err}");
    }
}
