//! What a Service's Network Load Balancer should look like, as
//! cloud-provider-aws decides it (pkg/providers/v1/aws.go,
//! aws_loadbalancer.go): a pure function of the Service and the cluster ID.

use std::collections::BTreeMap;

use overcast_cloud_provider::k8s_openapi::api::core::v1::{Node, Service, ServicePort};
use overcast_cloud_provider::{CloudError, default_load_balancer_name};
use sha1::{Digest, Sha1};

pub const PREFIX: &str = "service.beta.kubernetes.io/aws-load-balancer-";
pub const ANN_TYPE: &str = "service.beta.kubernetes.io/aws-load-balancer-type";
pub const ANN_INTERNAL: &str = "service.beta.kubernetes.io/aws-load-balancer-internal";
pub const ANN_ADDITIONAL_TAGS: &str =
    "service.beta.kubernetes.io/aws-load-balancer-additional-resource-tags";
pub const ANN_HC_PROTOCOL: &str =
    "service.beta.kubernetes.io/aws-load-balancer-healthcheck-protocol";
pub const ANN_HC_PORT: &str = "service.beta.kubernetes.io/aws-load-balancer-healthcheck-port";
pub const ANN_HC_PATH: &str = "service.beta.kubernetes.io/aws-load-balancer-healthcheck-path";
pub const ANN_HC_INTERVAL: &str =
    "service.beta.kubernetes.io/aws-load-balancer-healthcheck-interval";
pub const ANN_HC_HEALTHY: &str =
    "service.beta.kubernetes.io/aws-load-balancer-healthcheck-healthy-threshold";
pub const ANN_HC_UNHEALTHY: &str =
    "service.beta.kubernetes.io/aws-load-balancer-healthcheck-unhealthy-threshold";
pub const ANN_SUBNETS: &str = "service.beta.kubernetes.io/aws-load-balancer-subnets";
pub const ANN_TARGET_NODE_LABELS: &str =
    "service.beta.kubernetes.io/aws-load-balancer-target-node-labels";

/// Annotations upstream reads for NLBs that Overcast does not implement
/// yet: a Service with one is refused rather than served differently.
pub const UNSUPPORTED: [&str; 7] = [
    "service.beta.kubernetes.io/aws-load-balancer-eip-allocations",
    "service.beta.kubernetes.io/aws-load-balancer-private-ipv4-addresses",
    "service.beta.kubernetes.io/aws-load-balancer-access-log-enabled",
    "service.beta.kubernetes.io/aws-load-balancer-target-group-attributes",
    "service.beta.kubernetes.io/aws-load-balancer-security-groups",
    "service.beta.kubernetes.io/aws-load-balancer-cross-zone-load-balancing-enabled",
    "service.beta.kubernetes.io/aws-load-balancer-extra-security-groups",
];

pub const ANN_SSL_CERT: &str = "service.beta.kubernetes.io/aws-load-balancer-ssl-cert";
pub const ANN_SSL_PORTS: &str = "service.beta.kubernetes.io/aws-load-balancer-ssl-ports";
pub const ANN_SSL_POLICY: &str =
    "service.beta.kubernetes.io/aws-load-balancer-ssl-negotiation-policy";
pub const ANN_BACKEND_PROTOCOL: &str =
    "service.beta.kubernetes.io/aws-load-balancer-backend-protocol";

pub const TAG_SERVICE_NAME: &str = "kubernetes.io/service-name";

pub fn cluster_tag_key(cluster_id: &str) -> String {
    format!("kubernetes.io/cluster/{cluster_id}")
}

/// Which controller serves the Service (`aws-load-balancer-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Nlb,
    /// `external`, `nlb-ip`: the AWS Load Balancer Controller's.
    Elsewhere,
    /// Anything else: a Classic ELB upstream, which Overcast does not make.
    Classic,
}

pub fn kind(svc: &Service) -> Kind {
    match annotation(svc, ANN_TYPE) {
        Some("nlb") => Kind::Nlb,
        Some("external" | "nlb-ip") => Kind::Elsewhere,
        _ => Kind::Classic,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub protocol: String,
    /// "traffic-port" or a number.
    pub port: String,
    pub path: Option<String>,
    pub interval: i32,
    pub healthy: i32,
    pub unhealthy: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerPlan {
    pub port: i32,
    /// The listener's: `TCP`, `UDP`, or `TLS` (a certificate on this port).
    pub frontend_protocol: String,
    /// The target group's: `TCP`, `UDP`, or `TLS` with backend-protocol ssl.
    pub protocol: String,
    pub node_port: i32,
    pub target_group: String,
    pub health: HealthCheck,
    /// The ACM/IAM certificate ARN of a TLS listener.
    pub certificate: Option<String>,
    /// A TLS listener's security policy; `None`: AWS's default.
    pub ssl_policy: Option<String>,
}

/// Whether `port` gets the certificate: upstream's getPortSets, with the
/// ports listed by number or name, comma-separated as written (no
/// trimming); empty or `*`: every port.
fn is_ssl_port(ssl_ports: Option<&str>, port: &ServicePort) -> bool {
    let Some(list) = ssl_ports.filter(|l| !l.is_empty() && *l != "*") else {
        return true;
    };
    list.split(',').any(|item| match item.parse::<i32>() {
        Ok(n) => n == port.port,
        Err(_) => port.name.as_deref() == Some(item),
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NlbPlan {
    pub name: String,
    pub internal: bool,
    pub tags: BTreeMap<String, String>,
    pub listeners: Vec<ListenerPlan>,
    /// Subnet IDs or Name tags from the annotation; empty: discover.
    pub subnets: Vec<String>,
    /// Nodes must carry all these labels (empty value: any value).
    pub target_node_labels: BTreeMap<String, String>,
}

fn annotation<'a>(svc: &'a Service, key: &str) -> Option<&'a str> {
    svc.metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

pub fn service_key(svc: &Service) -> String {
    format!(
        "{}/{}",
        svc.metadata.namespace.as_deref().unwrap_or("default"),
        svc.metadata.name.as_deref().unwrap_or_default()
    )
}

fn bad(svc: &Service, what: impl std::fmt::Display) -> CloudError {
    CloudError::other(format!("Service {}: {what}", service_key(svc)))
}

/// `k=v,k2=v2` (a bare `k` is `k=""`), as upstream parses map annotations.
pub fn key_values(value: &str) -> BTreeMap<String, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.trim().to_string(), v.trim().to_string()),
            None => (kv.to_string(), String::new()),
        })
        .collect()
}

/// Upstream's target group name: `k8s-<ns:8>-<name:8>-<sha1:10>`, the hash
/// over everything that forces a new target group when it changes.
pub fn target_group_name(
    cluster_id: &str,
    svc: &Service,
    port: i32,
    node_port: i32,
    protocol: &str,
    health: &HealthCheck,
) -> String {
    let ns = svc.metadata.namespace.as_deref().unwrap_or("default");
    let name = svc.metadata.name.as_deref().unwrap_or_default();
    let mut h = Sha1::new();
    for part in [
        cluster_id,
        ns,
        name,
        &port.to_string(),
        &node_port.to_string(),
        protocol,
        "instance",
        &health.protocol,
        &health.interval.to_string(),
    ] {
        h.update(part.as_bytes());
    }
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    let alnum = |s: &str| -> String {
        s.chars()
            .filter(char::is_ascii_alphanumeric)
            .take(8)
            .collect()
    };
    format!("k8s-{}-{}-{}", alnum(ns), alnum(name), &hex[..10])
}

fn health_check(svc: &Service) -> Result<HealthCheck, CloudError> {
    let spec = svc.spec.as_ref();
    let local = spec.and_then(|s| s.external_traffic_policy.as_deref()) == Some("Local");
    let mut hc = if local {
        let port = spec
            .and_then(|s| s.health_check_node_port)
            .filter(|p| *p > 0)
            .ok_or_else(|| {
                bad(
                    svc,
                    "externalTrafficPolicy: Local without a healthCheckNodePort",
                )
            })?;
        HealthCheck {
            protocol: "HTTP".into(),
            port: port.to_string(),
            path: Some("/healthz".into()),
            interval: 10,
            healthy: 2,
            unhealthy: 2,
        }
    } else {
        HealthCheck {
            protocol: "TCP".into(),
            port: "traffic-port".into(),
            path: None,
            interval: 30,
            healthy: 3,
            unhealthy: 3,
        }
    };
    if let Some(p) = annotation(svc, ANN_HC_PROTOCOL) {
        let p = p.to_ascii_uppercase();
        if !["TCP", "HTTP", "HTTPS"].contains(&p.as_str()) {
            return Err(bad(
                svc,
                format!("{ANN_HC_PROTOCOL}: {p:?} is not TCP, HTTP or HTTPS"),
            ));
        }
        if p != "TCP" && hc.path.is_none() {
            hc.path = Some("/".into());
        }
        hc.protocol = p;
    }
    if hc.protocol == "TCP" {
        hc.path = None;
    } else if let Some(path) = annotation(svc, ANN_HC_PATH) {
        hc.path = Some(path.to_string());
    }
    if let Some(port) = annotation(svc, ANN_HC_PORT) {
        if port != "traffic-port" && port.parse::<u16>().is_err() {
            return Err(bad(
                svc,
                format!("{ANN_HC_PORT}: {port:?} is not a port number or traffic-port"),
            ));
        }
        hc.port = port.to_string();
    }
    for (key, field) in [
        (ANN_HC_INTERVAL, &mut hc.interval),
        (ANN_HC_HEALTHY, &mut hc.healthy),
        (ANN_HC_UNHEALTHY, &mut hc.unhealthy),
    ] {
        if let Some(v) = annotation(svc, key) {
            *field = v
                .trim()
                .parse()
                .map_err(|_| bad(svc, format!("{key}: {v:?} is not a number")))?;
        }
    }
    Ok(hc)
}

/// The NLB for an `nlb` Service, or the reason it cannot have one.
pub fn plan(svc: &Service, cluster_id: &str) -> Result<NlbPlan, CloudError> {
    let spec = svc.spec.clone().unwrap_or_default();
    for key in UNSUPPORTED {
        if annotation(svc, key).is_some() {
            return Err(bad(
                svc,
                format!("{key} is not supported by overcast's aws provider yet"),
            ));
        }
    }
    if spec
        .session_affinity
        .as_deref()
        .is_some_and(|a| a != "None")
    {
        return Err(bad(svc, "unsupported load balancer affinity: ClientIP"));
    }
    // cloud-provider-aws enforces these in the instances' security groups,
    // which this provider does not manage yet: refusing is safer than
    // serving everyone while the user believes it restricted.
    let annotated = annotation(
        svc,
        "service.beta.kubernetes.io/load-balancer-source-ranges",
    )
    .map(|v| {
        v.split(',')
            .map(|r| r.trim().to_string())
            .filter(|r| !r.is_empty())
            .collect()
    })
    .unwrap_or_default();
    let ranges: Vec<String> = match spec
        .load_balancer_source_ranges
        .clone()
        .filter(|r| !r.is_empty())
    {
        Some(r) => r,
        None => annotated,
    };
    if ranges.iter().any(|r| r != "0.0.0.0/0" && r != "::/0") {
        return Err(bad(
            svc,
            "loadBalancerSourceRanges is not supported by overcast's aws provider yet (cloud-provider-aws enforces it in the instances' security groups, which overcast does not manage); remove it, or restrict the node security groups yourself",
        ));
    }
    if spec
        .load_balancer_ip
        .as_deref()
        .is_some_and(|ip| !ip.is_empty())
    {
        return Err(bad(svc, "LoadBalancerIP cannot be specified for AWS ELB"));
    }
    let ports = spec.ports.clone().unwrap_or_default();
    if ports.is_empty() {
        return Err(bad(svc, "requested load balancer with no ports"));
    }
    let protocols: Vec<String> = ports
        .iter()
        .map(|p| p.protocol.clone().unwrap_or_else(|| "TCP".into()))
        .collect();
    if protocols.iter().any(|p| *p != protocols[0]) {
        return Err(bad(svc, "mixed protocol is not supported for LoadBalancer"));
    }
    let health = health_check(svc)?;
    // The raw value, as upstream reads it (an empty annotation: no TLS).
    let raw = |key: &str| {
        svc.metadata
            .annotations
            .as_ref()?
            .get(key)
            .map(String::as_str)
    };
    let certificate = raw(ANN_SSL_CERT).filter(|c| !c.is_empty());
    let backend_tls = match raw(ANN_BACKEND_PROTOCOL) {
        None | Some("" | "tcp") => false,
        Some("ssl") => true,
        // Upstream ignores the others for an NLB; they are Classic ELB's.
        Some(other) => {
            return Err(bad(
                svc,
                format!(
                    "{ANN_BACKEND_PROTOCOL}: {other:?} is a Classic ELB setting; an NLB takes \"ssl\" (TLS to the targets) or \"tcp\""
                ),
            ));
        }
    };
    if certificate.is_none() {
        for key in [ANN_SSL_PORTS, ANN_SSL_POLICY] {
            if raw(key).is_some_and(|v| !v.is_empty()) {
                return Err(bad(
                    svc,
                    format!("{key} has no effect without {ANN_SSL_CERT}"),
                ));
            }
        }
    }
    let mut listeners = Vec::new();
    for (port, protocol) in ports.iter().zip(&protocols) {
        if protocol != "TCP" && protocol != "UDP" {
            return Err(bad(
                svc,
                format!("Protocol {protocol} not supported by load balancer"),
            ));
        }
        let Some(node_port) = port.node_port.filter(|p| *p > 0) else {
            continue;
        };
        // upstream's ensureLoadBalancer: a TCP port among the ssl-ports with
        // a certificate is a TLS listener; its targets speak TLS with
        // backend-protocol ssl.
        let tls =
            certificate.filter(|_| protocol == "TCP" && is_ssl_port(raw(ANN_SSL_PORTS), port));
        let traffic = if tls.is_some() && backend_tls {
            "TLS".to_string()
        } else {
            protocol.clone()
        };
        listeners.push(ListenerPlan {
            port: port.port,
            frontend_protocol: if tls.is_some() {
                "TLS".into()
            } else {
                protocol.clone()
            },
            target_group: target_group_name(
                cluster_id, svc, port.port, node_port, &traffic, &health,
            ),
            protocol: traffic,
            node_port,
            health: health.clone(),
            certificate: tls.map(str::to_string),
            ssl_policy: tls
                .and(raw(ANN_SSL_POLICY))
                .filter(|p| !p.is_empty())
                .map(str::to_string),
        });
    }
    let mut tags = annotation(svc, ANN_ADDITIONAL_TAGS)
        .map(key_values)
        .unwrap_or_default();
    tags.insert(TAG_SERVICE_NAME.into(), service_key(svc));
    tags.insert(cluster_tag_key(cluster_id), "owned".into());
    Ok(NlbPlan {
        name: default_load_balancer_name(svc),
        internal: annotation(svc, ANN_INTERNAL).is_some_and(|v| !v.is_empty() && v != "false"),
        tags,
        listeners,
        subnets: annotation(svc, ANN_SUBNETS)
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default(),
        target_node_labels: annotation(svc, ANN_TARGET_NODE_LABELS)
            .map(key_values)
            .unwrap_or_default(),
    })
}

/// Whether the Node carries every label of the filter.
pub fn node_selected(node: &Node, filter: &BTreeMap<String, String>) -> bool {
    let labels = node.metadata.labels.as_ref();
    filter.iter().all(|(k, v)| {
        labels
            .and_then(|l| l.get(k))
            .is_some_and(|have| v.is_empty() || have == v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use overcast_cloud_provider::k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
    use overcast_cloud_provider::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn svc(annotations: &[(&str, &str)], ports: &[(&str, i32, i32)]) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("web-frontend".into()),
                namespace: Some("shop-prod".into()),
                uid: Some("3b2c4d5e-1f2a-4b3c-8d9e-0a1b2c3d4e5f".into()),
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                type_: Some("LoadBalancer".into()),
                ports: Some(
                    ports
                        .iter()
                        .map(|(proto, port, node_port)| ServicePort {
                            protocol: Some(proto.to_string()),
                            port: *port,
                            node_port: Some(*node_port),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn types_pick_the_controller() {
        assert_eq!(kind(&svc(&[(ANN_TYPE, "nlb")], &[])), Kind::Nlb);
        assert_eq!(kind(&svc(&[(ANN_TYPE, "external")], &[])), Kind::Elsewhere);
        assert_eq!(kind(&svc(&[], &[])), Kind::Classic);
    }

    #[test]
    fn a_plain_nlb_plan() {
        let s = svc(
            &[
                (ANN_TYPE, "nlb"),
                (ANN_ADDITIONAL_TAGS, "team=web, cost-center"),
            ],
            &[("TCP", 80, 30080), ("TCP", 443, 30443)],
        );
        let p = plan(&s, "prod").unwrap();
        assert_eq!(p.name, "a3b2c4d5e1f2a4b3c8d9e0a1b2c3d4e5");
        assert!(!p.internal);
        assert_eq!(
            p.tags["kubernetes.io/service-name"],
            "shop-prod/web-frontend"
        );
        assert_eq!(p.tags["kubernetes.io/cluster/prod"], "owned");
        assert_eq!(p.tags["team"], "web");
        assert_eq!(p.tags["cost-center"], "");
        assert_eq!(p.listeners.len(), 2);
        let l = &p.listeners[0];
        assert_eq!(
            (l.port, l.node_port, l.protocol.as_str()),
            (80, 30080, "TCP")
        );
        assert_eq!(l.health.protocol, "TCP");
        assert_eq!(l.health.port, "traffic-port");
        assert_eq!(
            (l.health.interval, l.health.healthy, l.health.unhealthy),
            (30, 3, 3)
        );
        assert!(
            l.target_group.starts_with("k8s-shopprod-webfront-"),
            "{}",
            l.target_group
        );
        assert_eq!(l.target_group.len(), "k8s-shopprod-webfront-".len() + 10);
        assert_ne!(p.listeners[0].target_group, p.listeners[1].target_group);
    }

    #[test]
    fn local_traffic_policy_checks_healthz_on_the_health_check_node_port() {
        let mut s = svc(
            &[(ANN_TYPE, "nlb"), (ANN_INTERNAL, "true")],
            &[("UDP", 53, 30053)],
        );
        let spec = s.spec.as_mut().unwrap();
        spec.external_traffic_policy = Some("Local".into());
        spec.health_check_node_port = Some(31999);
        let p = plan(&s, "prod").unwrap();
        assert!(p.internal);
        let hc = &p.listeners[0].health;
        assert_eq!(hc.protocol, "HTTP");
        assert_eq!(hc.port, "31999");
        assert_eq!(hc.path.as_deref(), Some("/healthz"));
        assert_eq!((hc.interval, hc.healthy, hc.unhealthy), (10, 2, 2));
    }

    #[test]
    fn source_ranges_are_refused_not_ignored_unless_they_allow_everyone() {
        let mut ranged = svc(&[(ANN_TYPE, "nlb")], &[("TCP", 80, 30080)]);
        ranged.spec.as_mut().unwrap().load_balancer_source_ranges = Some(vec!["10.0.0.0/8".into()]);
        let err = plan(&ranged, "c").unwrap_err().to_string();
        assert!(
            err.contains("loadBalancerSourceRanges is not supported"),
            "{err}"
        );
        let annotated = svc(
            &[
                (ANN_TYPE, "nlb"),
                (
                    "service.beta.kubernetes.io/load-balancer-source-ranges",
                    "192.168.0.0/16",
                ),
            ],
            &[("TCP", 80, 30080)],
        );
        assert!(plan(&annotated, "c").is_err());
        let open = svc(
            &[
                (ANN_TYPE, "nlb"),
                (
                    "service.beta.kubernetes.io/load-balancer-source-ranges",
                    "0.0.0.0/0",
                ),
            ],
            &[("TCP", 80, 30080)],
        );
        assert!(plan(&open, "c").is_ok());
    }

    #[test]
    fn a_certificate_makes_tls_listeners_on_the_ssl_ports_as_upstream() {
        let arn = "arn:aws:acm:us-east-1:1:certificate/x";
        let ports = [("TCP", 443, 30443), ("TCP", 80, 30080)];
        let mut s = svc(
            &[
                (ANN_TYPE, "nlb"),
                (ANN_SSL_CERT, arn),
                (ANN_SSL_PORTS, "443"),
                (ANN_SSL_POLICY, "ELBSecurityPolicy-TLS13-1-2-2021-06"),
                (ANN_BACKEND_PROTOCOL, "ssl"),
            ],
            &ports,
        );
        let p = plan(&s, "c").unwrap();
        let (tls, plain) = (&p.listeners[0], &p.listeners[1]);
        assert_eq!(
            (tls.frontend_protocol.as_str(), tls.protocol.as_str()),
            ("TLS", "TLS")
        );
        assert_eq!(tls.certificate.as_deref(), Some(arn));
        assert_eq!(
            tls.ssl_policy.as_deref(),
            Some("ELBSecurityPolicy-TLS13-1-2-2021-06")
        );
        assert_eq!(
            (plain.frontend_protocol.as_str(), plain.protocol.as_str()),
            ("TCP", "TCP")
        );
        assert_eq!(
            (plain.certificate.clone(), plain.ssl_policy.clone()),
            (None, None)
        );
        // The target protocol enters the group's name, as upstream's hash.
        let tcp_backend = svc(&[(ANN_TYPE, "nlb"), (ANN_SSL_CERT, arn)], &ports);
        let q = plan(&tcp_backend, "c").unwrap();
        assert_eq!(q.listeners[0].protocol, "TCP");
        assert_eq!(
            q.listeners[1].frontend_protocol, "TLS",
            "no ssl-ports: every port"
        );
        assert_ne!(q.listeners[0].target_group, tls.target_group);
        // By name; items taken as written (upstream does not trim).
        s.spec.as_mut().unwrap().ports.as_mut().unwrap()[1].name = Some("web".into());
        s.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(ANN_SSL_PORTS.into(), "web, 443".into());
        let r = plan(&s, "c").unwrap();
        assert_eq!(r.listeners[1].frontend_protocol, "TLS");
        assert_eq!(
            r.listeners[0].frontend_protocol, "TCP",
            "\" 443\" is a name"
        );
    }

    #[test]
    fn what_upstream_refuses_is_refused() {
        let mixed = svc(
            &[(ANN_TYPE, "nlb")],
            &[("TCP", 80, 30080), ("UDP", 53, 30053)],
        );
        assert!(
            plan(&mixed, "c")
                .unwrap_err()
                .to_string()
                .contains("mixed protocol")
        );
        let sctp = svc(&[(ANN_TYPE, "nlb")], &[("SCTP", 80, 30080)]);
        assert!(
            plan(&sctp, "c")
                .unwrap_err()
                .to_string()
                .contains("Protocol SCTP not supported")
        );
        let classic = svc(
            &[(ANN_TYPE, "nlb"), (ANN_BACKEND_PROTOCOL, "http")],
            &[("TCP", 80, 30080)],
        );
        assert!(
            plan(&classic, "c")
                .unwrap_err()
                .to_string()
                .contains("\"http\" is a Classic ELB setting")
        );
        let alone = svc(
            &[(ANN_TYPE, "nlb"), (ANN_SSL_PORTS, "443")],
            &[("TCP", 443, 30443)],
        );
        assert!(plan(&alone, "c").unwrap_err().to_string().contains(
            "has no effect without service.beta.kubernetes.io/aws-load-balancer-ssl-cert"
        ));
        let bad = svc(
            &[(ANN_TYPE, "nlb"), (ANN_HC_INTERVAL, "often")],
            &[("TCP", 80, 30080)],
        );
        assert!(
            plan(&bad, "c")
                .unwrap_err()
                .to_string()
                .contains("\"often\" is not a number")
        );
    }

    #[test]
    fn the_target_group_name_changes_with_what_forces_a_new_group() {
        let s = svc(&[], &[]);
        let hc = health_check(&s).unwrap();
        let a = target_group_name("c", &s, 80, 30080, "TCP", &hc);
        assert_eq!(a, target_group_name("c", &s, 80, 30080, "TCP", &hc));
        assert_ne!(a, target_group_name("c", &s, 80, 30081, "TCP", &hc));
        let mut slower = hc.clone();
        slower.interval = 10;
        assert_ne!(a, target_group_name("c", &s, 80, 30080, "TCP", &slower));
    }
}
