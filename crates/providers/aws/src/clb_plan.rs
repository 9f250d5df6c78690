//! The Classic ELB decisions of cloud-provider-aws (a Service without
//! `aws-load-balancer-type: nlb`), as pure functions: what the ELB, its
//! security group and the instances' rules should be, and the changes from
//! what AWS reports. Upstream: pkg/providers/v1/aws.go (EnsureLoadBalancer,
//! buildListener, buildELBSecurityGroupList) and aws_loadbalancer.go
//! (ensureLoadBalancer, syncElbListeners, ensureLoadBalancerHealthCheck).

use std::collections::{BTreeMap, BTreeSet};

use overcast_cloud_provider::k8s_openapi::api::core::v1::Service;
use overcast_cloud_provider::service_helpers::load_balancer_source_ranges;
use overcast_cloud_provider::{CloudError, default_load_balancer_name};

use crate::nlb_plan::{
    ANN_ACCESS_LOG_BUCKET, ANN_ACCESS_LOG_ENABLED, ANN_ACCESS_LOG_PREFIX, ANN_ADDITIONAL_TAGS,
    ANN_BACKEND_PROTOCOL, ANN_CROSS_ZONE, ANN_EXTRA_SECURITY_GROUPS, ANN_HC_HEALTHY,
    ANN_HC_INTERVAL, ANN_HC_PATH, ANN_HC_PORT, ANN_HC_PROTOCOL, ANN_HC_UNHEALTHY, ANN_INTERNAL,
    ANN_SECURITY_GROUPS, ANN_SSL_CERT, ANN_SSL_POLICY, ANN_SSL_PORTS, ANN_SUBNETS,
    ANN_TARGET_GROUP_ATTRIBUTES, ANN_TARGET_NODE_LABELS, TAG_SERVICE_NAME, annotation, bad,
    bool_annotation, cluster_tag_key, is_ssl_port, key_values, service_key,
    tls_settings_without_certificate, trimmed_list,
};

pub const ANN_HC_TIMEOUT: &str = "service.beta.kubernetes.io/aws-load-balancer-healthcheck-timeout";
pub const ANN_DRAINING: &str =
    "service.beta.kubernetes.io/aws-load-balancer-connection-draining-enabled";
pub const ANN_DRAINING_TIMEOUT: &str =
    "service.beta.kubernetes.io/aws-load-balancer-connection-draining-timeout";
pub const ANN_IDLE_TIMEOUT: &str =
    "service.beta.kubernetes.io/aws-load-balancer-connection-idle-timeout";
pub const ANN_ACCESS_LOG_INTERVAL: &str =
    "service.beta.kubernetes.io/aws-load-balancer-access-log-emit-interval";

pub const ANN_PROXY_PROTOCOL: &str = "service.beta.kubernetes.io/aws-load-balancer-proxy-protocol";

/// upstream's ProxyProtocolPolicyName (aws_loadbalancer.go).
pub const PROXY_PROTOCOL_POLICY: &str = "k8s-proxyprotocol-enabled";

/// upstream's SSLNegotiationPolicyNameFormat: the policy made for the
/// `ssl-negotiation-policy` annotation's value.
pub fn ssl_negotiation_policy_name(reference: &str) -> String {
    format!("k8s-SSLNegotiationPolicy-{reference}")
}

/// One listener: the ELB's port to the instances' node port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ClbListener {
    pub lb_port: i32,
    pub instance_port: i32,
    /// `tcp`, `http`, `ssl` or `https`, lower case as upstream sends it.
    pub protocol: String,
    pub instance_protocol: String,
    /// The `ssl-cert` annotation's value, on a TLS listener.
    pub certificate: Option<String>,
}

impl ClbListener {
    /// Whether AWS terminates TLS on it (the ports an SSL negotiation
    /// policy goes on: upstream's getLoadBalancerTLSPorts).
    pub fn is_tls(&self) -> bool {
        self.protocol.eq_ignore_ascii_case("ssl") || self.protocol.eq_ignore_ascii_case("https")
    }
}

/// ConfigureHealthCheck's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClbHealthCheck {
    /// `TCP:31234`, `HTTP:32000/healthz`.
    pub target: String,
    pub healthy: i32,
    pub unhealthy: i32,
    pub interval: i32,
    pub timeout: i32,
}

/// The attributes upstream sets on every sync (defaults, then annotations).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClbAttributes {
    pub cross_zone: bool,
    pub idle_timeout: i32,
    pub draining: bool,
    pub draining_timeout: Option<i32>,
    pub access_log: bool,
    pub access_log_interval: Option<i32>,
    pub access_log_bucket: Option<String>,
    pub access_log_prefix: Option<String>,
}

/// One ingress rule of the ELB's own security group.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct IngressRule {
    pub protocol: String,
    pub from: i32,
    pub to: i32,
    pub cidr: String,
}

/// The Classic ELB a Service should have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClbPlan {
    pub name: String,
    pub internal: bool,
    pub listeners: Vec<ClbListener>,
    pub health_check: ClbHealthCheck,
    pub attributes: ClbAttributes,
    /// `k8s-elb-<name>`, made for the ELB and tagged for the cluster;
    /// `None` with `ElbSecurityGroup` set or groups of the Service's own
    /// (those are used, unmanaged).
    pub own_group: Option<OwnGroup>,
    /// `ElbSecurityGroup` of the cloud config, when set (and no groups of
    /// the Service's own).
    pub shared_group: Option<String>,
    /// The `security-groups` annotation's groups, in its order: they
    /// replace the ELB's own group.
    pub byo_groups: Vec<String>,
    /// The `extra-security-groups` annotation's groups, after the others.
    pub extra_groups: Vec<String>,
    /// `proxy-protocol: "*"`: every listener's backend speaks the proxy
    /// protocol.
    pub proxy_protocol: bool,
    /// The `ssl-negotiation-policy` annotation's value (a predefined
    /// policy such as `ELBSecurityPolicy-TLS-1-2-2017-01`).
    pub ssl_policy: Option<String>,
    /// Tags at creation: the additional tags, the Service, the cluster.
    pub tags: BTreeMap<String, String>,
    /// `additional-resource-tags`, added on every sync (never removed).
    pub additional_tags: BTreeMap<String, String>,
    /// From the `subnets` annotation; empty: discovered.
    pub subnets: Vec<String>,
    pub target_node_labels: BTreeMap<String, String>,
}

/// The ELB's own security group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnGroup {
    pub name: String,
    pub description: String,
    /// Tags it is created with.
    pub tags: BTreeMap<String, String>,
    /// Its whole ingress: each Service port from each client range, and
    /// ICMP "fragmentation needed" (path MTU discovery) from the same.
    pub ingress: BTreeSet<IngressRule>,
}

/// The settings of the cloud config the classic path reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClbSettings {
    /// `ElbSecurityGroup`.
    pub shared_group: Option<String>,
    /// `ClusterServiceLoadBalancerHealthProbeMode = Shared`: (port, path).
    pub shared_health_probe: Option<(i32, String)>,
}

fn int_annotation(svc: &Service, key: &str) -> Result<Option<i32>, CloudError> {
    match annotation(svc, key).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| bad(svc, format!("error parsing service annotation: {key}={v}"))),
    }
}

/// upstream's getExpectedHealthCheck and ensureLoadBalancerHealthCheck.
fn health_check(
    svc: &Service,
    listeners: &[ClbListener],
    settings: &ClbSettings,
) -> Result<ClbHealthCheck, CloudError> {
    let spec = svc.spec.as_ref();
    let traffic_port = listeners.first().map_or(0, |l| l.instance_port);
    let local_port = spec
        .filter(|s| s.external_traffic_policy.as_deref() == Some("Local"))
        .and_then(|s| s.health_check_node_port)
        .filter(|p| *p != 0);
    let port_annotation = annotation(svc, ANN_HC_PORT);
    let (mut protocol, mut port, mut path) = match local_port {
        Some(hc_port) => {
            let port = if port_annotation == Some("traffic-port") {
                traffic_port
            } else {
                hc_port
            };
            ("HTTP".to_string(), port, "/healthz".to_string())
        }
        None => match &settings.shared_health_probe {
            Some((port, path)) => ("HTTP".to_string(), *port, path.clone()),
            None => {
                let backend = annotation(svc, ANN_BACKEND_PROTOCOL)
                    .unwrap_or_default()
                    .to_ascii_lowercase();
                let protocol = if backend == "https" || backend == "ssl" {
                    "SSL"
                } else {
                    "TCP"
                };
                (protocol.to_string(), traffic_port, String::new())
            }
        },
    };
    if let Some(p) = annotation(svc, ANN_HC_PROTOCOL) {
        protocol = p.to_string();
    }
    if let Some(p) = port_annotation.filter(|p| *p != "traffic-port") {
        port = p
            .parse()
            .map_err(|_| bad(svc, format!("{ANN_HC_PORT}: {p:?} is not a port number")))?;
    }
    if matches!(protocol.to_ascii_uppercase().as_str(), "HTTP" | "HTTPS") {
        if path.is_empty() {
            path = "/".into();
        }
        if let Some(p) = annotation(svc, ANN_HC_PATH).filter(|p| !p.is_empty()) {
            path = p.to_string();
        }
    } else {
        path.clear();
    }
    let threshold = |key: &str, default: i32| -> Result<i32, CloudError> {
        match annotation(svc, key) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| {
                bad(
                    svc,
                    format!("failed parsing health check annotation value: {key}={v:?}"),
                )
            }),
        }
    };
    let hc = ClbHealthCheck {
        target: format!("{protocol}:{port}{path}"),
        healthy: threshold(ANN_HC_HEALTHY, 2)?,
        unhealthy: threshold(ANN_HC_UNHEALTHY, 6)?,
        timeout: threshold(ANN_HC_TIMEOUT, 5)?,
        interval: threshold(ANN_HC_INTERVAL, 10)?,
    };
    let mut problems = Vec::new();
    for (ok, what) in [
        (hc.healthy >= 2, "HealthyThreshold must be at least 2"),
        (hc.interval >= 5, "Interval must be at least 5"),
        (hc.timeout >= 2, "Timeout must be at least 2"),
        (hc.unhealthy >= 2, "UnhealthyThreshold must be at least 2"),
    ] {
        if !ok {
            problems.push(what);
        }
    }
    if !problems.is_empty() {
        return Err(bad(
            svc,
            format!(
                "some of the load balancer health check parameters are invalid: HealthCheck validation errors: {}",
                problems.join("; ")
            ),
        ));
    }
    Ok(hc)
}

/// upstream's backendProtocolMapping: the listener protocol for a TLS
/// listener whose instances speak `backend`.
fn tls_protocol(backend: &str) -> Option<&'static str> {
    match backend {
        "https" | "http" => Some("https"),
        "ssl" | "tcp" => Some("ssl"),
        _ => None,
    }
}

/// upstream's buildListener: a port with the certificate is TLS (`ssl`,
/// or `https` for an HTTP backend); without, `http` for an HTTP backend,
/// else `tcp`.
fn listener_for(
    svc: &Service,
    lb_port: i32,
    instance_port: i32,
    certificate: Option<&str>,
    backend: &str,
) -> Result<ClbListener, CloudError> {
    let (protocol, instance_protocol) = match certificate {
        Some(_) if backend.is_empty() => ("ssl", "tcp"),
        Some(cert) => match tls_protocol(backend) {
            Some(protocol) => (protocol, backend),
            None => {
                return Err(bad(
                    svc,
                    format!(
                        "Invalid backend protocol {backend} for {cert} in {ANN_BACKEND_PROTOCOL}"
                    ),
                ));
            }
        },
        None if backend == "http" => ("http", "http"),
        None => ("tcp", "tcp"),
    };
    Ok(ClbListener {
        lb_port,
        instance_port,
        protocol: protocol.into(),
        instance_protocol: instance_protocol.into(),
        certificate: certificate.map(str::to_string),
    })
}

/// A `backend-protocol` upstream ignores on a Classic ELB (without a
/// certificate anything but `http` gives TCP listeners, a typo too);
/// refused here, naming it. With a certificate upstream refuses it itself.
pub fn ignored_backend_protocol(svc: &Service) -> Option<String> {
    let value = annotation(svc, ANN_BACKEND_PROTOCOL)?;
    let certificate = annotation(svc, ANN_SSL_CERT).is_some_and(|c| !c.is_empty());
    if certificate || matches!(value, "" | "http" | "https" | "ssl" | "tcp") {
        return None;
    }
    Some(format!(
        "{ANN_BACKEND_PROTOCOL}: {value:?} is not http, https, ssl or tcp (cloud-provider-aws would make TCP listeners without a word)"
    ))
}

/// The Classic ELB for a Service upstream would give one, or why not.
pub fn plan_classic(
    svc: &Service,
    cluster_id: &str,
    settings: &ClbSettings,
) -> Result<ClbPlan, CloudError> {
    let certificate = annotation(svc, ANN_SSL_CERT).filter(|c| !c.is_empty());
    // Upstream ignores these without a certificate; nothing a user sets is
    // ignored without a word here.
    if let Some(key) = tls_settings_without_certificate(svc).first() {
        return Err(bad(
            svc,
            format!("{key} has no effect without {ANN_SSL_CERT}"),
        ));
    }
    let ssl_policy = match annotation(svc, ANN_SSL_POLICY).filter(|_| certificate.is_some()) {
        None => None,
        Some("") => {
            return Err(bad(
                svc,
                format!(
                    "{ANN_SSL_POLICY} is empty; name a predefined policy such as ELBSecurityPolicy-TLS-1-2-2017-01"
                ),
            ));
        }
        Some(policy) => Some(policy.to_string()),
    };
    let proxy_protocol = match annotation(svc, ANN_PROXY_PROTOCOL) {
        None | Some("") => false,
        Some("*") => true,
        Some(other) => {
            return Err(bad(
                svc,
                format!(
                    "annotation {ANN_PROXY_PROTOCOL:?}={other:?} detected, but the only value supported currently is '*'"
                ),
            ));
        }
    };
    if annotation(svc, ANN_TARGET_GROUP_ATTRIBUTES).is_some() {
        return Err(bad(
            svc,
            "target group attributes annotation is only supported for NLB",
        ));
    }
    let spec = svc.spec.clone().unwrap_or_default();
    if let Some(affinity) = spec.session_affinity.as_deref().filter(|a| *a != "None") {
        return Err(bad(
            svc,
            format!("unsupported load balancer affinity: {affinity}"),
        ));
    }
    let ports = spec.ports.clone().unwrap_or_default();
    if ports.is_empty() {
        return Err(bad(svc, "requested load balancer with no ports"));
    }
    let protocol_of = |p: &overcast_cloud_provider::k8s_openapi::api::core::v1::ServicePort| {
        p.protocol.clone().unwrap_or_else(|| "TCP".into())
    };
    if ports
        .iter()
        .any(|p| protocol_of(p) != protocol_of(&ports[0]))
    {
        return Err(bad(svc, "mixed protocol is not supported for LoadBalancer"));
    }
    let backend = annotation(svc, ANN_BACKEND_PROTOCOL).unwrap_or_default();
    if let Some(refused) = ignored_backend_protocol(svc) {
        return Err(bad(svc, refused));
    }
    let mut listeners = Vec::new();
    for port in &ports {
        let protocol = protocol_of(port);
        if protocol != "TCP" {
            return Err(bad(
                svc,
                format!("Protocol {protocol} not supported by LoadBalancer"),
            ));
        }
        // No node port yet (allocation pending): no listener, as upstream.
        let Some(node_port) = port.node_port.filter(|p| *p != 0) else {
            continue;
        };
        listeners.push(listener_for(
            svc,
            port.port,
            node_port,
            certificate.filter(|_| is_ssl_port(annotation(svc, ANN_SSL_PORTS), port)),
            backend,
        )?);
    }
    if spec
        .load_balancer_ip
        .as_deref()
        .is_some_and(|ip| !ip.is_empty())
    {
        return Err(bad(svc, "LoadBalancerIP cannot be specified for AWS ELB"));
    }
    // A Classic ELB is IPv4: an IPv6 range admits no client it could
    // carry (upstream sends it as an IPv4 range, which AWS refuses).
    let ranges = load_balancer_source_ranges(svc).map_err(|e| bad(svc, e))?;
    let mut cidrs: Vec<String> = ranges
        .iter()
        .filter(|r| !r.contains(':'))
        .cloned()
        .collect();
    if ranges.is_empty() {
        cidrs.push("0.0.0.0/0".into());
    } else if cidrs.is_empty() {
        return Err(bad(
            svc,
            format!(
                "loadBalancerSourceRanges names only IPv6 ranges ({}); a Classic ELB is IPv4, so no client could reach it",
                ranges.join(", ")
            ),
        ));
    }
    let name = default_load_balancer_name(svc);
    let additional_tags = annotation(svc, ANN_ADDITIONAL_TAGS)
        .map(key_values)
        .unwrap_or_default();
    let cluster_tags = BTreeMap::from([(cluster_tag_key(cluster_id), "owned".to_string())]);
    let mut tags = additional_tags.clone();
    tags.insert(TAG_SERVICE_NAME.into(), service_key(svc));
    tags.extend(cluster_tags.clone());
    let byo_groups = annotation(svc, ANN_SECURITY_GROUPS)
        .map(trimmed_list)
        .unwrap_or_default();
    let extra_groups = annotation(svc, ANN_EXTRA_SECURITY_GROUPS)
        .map(trimmed_list)
        .unwrap_or_default();
    let shared_group = settings
        .shared_group
        .clone()
        .filter(|_| byo_groups.is_empty());
    let own_group = (shared_group.is_none() && byo_groups.is_empty()).then(|| {
        let ports: Vec<(&str, i32)> = ports.iter().map(|p| ("tcp", p.port)).collect();
        let ingress = client_ingress(&cidrs, &ports);
        let mut group_tags = additional_tags.clone();
        group_tags.extend(cluster_tags);
        OwnGroup {
            name: format!("k8s-elb-{name}"),
            description: format!(
                "Security group for Kubernetes ELB {name} ({})",
                service_key(svc)
            ),
            tags: group_tags,
            ingress,
        }
    });
    let attributes = ClbAttributes {
        cross_zone: bool_annotation(svc, ANN_CROSS_ZONE)?,
        idle_timeout: int_annotation(svc, ANN_IDLE_TIMEOUT)?.unwrap_or(60),
        draining: bool_annotation(svc, ANN_DRAINING)?,
        draining_timeout: int_annotation(svc, ANN_DRAINING_TIMEOUT)?,
        access_log: bool_annotation(svc, ANN_ACCESS_LOG_ENABLED)?,
        access_log_interval: int_annotation(svc, ANN_ACCESS_LOG_INTERVAL)?,
        access_log_bucket: annotation(svc, ANN_ACCESS_LOG_BUCKET)
            .filter(|v| !v.is_empty())
            .map(str::to_string),
        access_log_prefix: annotation(svc, ANN_ACCESS_LOG_PREFIX)
            .filter(|v| !v.is_empty())
            .map(str::to_string),
    };
    Ok(ClbPlan {
        health_check: health_check(svc, &listeners, settings)?,
        name,
        internal: annotation(svc, ANN_INTERNAL).is_some_and(|v| !v.is_empty() && v != "false"),
        listeners,
        attributes,
        own_group,
        shared_group,
        byo_groups,
        extra_groups,
        proxy_protocol,
        ssl_policy,
        tags,
        additional_tags,
        subnets: annotation(svc, ANN_SUBNETS)
            .map(trimmed_list)
            .unwrap_or_default(),
        target_node_labels: annotation(svc, ANN_TARGET_NODE_LABELS)
            .map(key_values)
            .unwrap_or_default(),
    })
}

/// upstream's syncElbListeners: the ports whose listener goes (unmatched
/// or changed), then the listeners to create. Protocols compare without
/// case (AWS answers them upper case).
pub fn listener_changes(
    actual: &[ClbListener],
    desired: &[ClbListener],
) -> (Vec<i32>, Vec<ClbListener>) {
    let same = |a: &ClbListener, d: &ClbListener| {
        a.lb_port == d.lb_port
            && a.instance_port == d.instance_port
            && a.protocol.eq_ignore_ascii_case(&d.protocol)
            && a.instance_protocol
                .eq_ignore_ascii_case(&d.instance_protocol)
            // upstream's awsArnEquals: none equals only none.
            && match (&a.certificate, &d.certificate) {
                (None, None) => true,
                (Some(a), Some(d)) => a.eq_ignore_ascii_case(d),
                _ => false,
            }
    };
    let remove = actual
        .iter()
        .filter(|a| !desired.iter().any(|d| same(a, d)))
        .map(|a| a.lb_port)
        .collect();
    let add = desired
        .iter()
        .filter(|d| !actual.iter().any(|a| same(a, d)))
        .cloned()
        .collect();
    (remove, add)
}

impl ClbPlan {
    /// The ELB's security groups in upstream's order
    /// (buildELBSecurityGroupList): the Service's own groups, else the
    /// ELB's own group (`own_id`) or the shared one; then the extras.
    pub fn security_groups(&self, own_id: Option<&str>) -> Vec<String> {
        let mut groups = if !self.byo_groups.is_empty() {
            self.byo_groups.clone()
        } else {
            own_id
                .map(str::to_string)
                .or_else(|| self.shared_group.clone())
                .into_iter()
                .collect()
        };
        groups.extend(self.extra_groups.iter().cloned());
        groups
    }

    /// Whether the Service names `group` (`security-groups` or
    /// `extra-security-groups`): such a group is never deleted.
    pub fn names_group(&self, group: &str) -> bool {
        self.byo_groups
            .iter()
            .chain(&self.extra_groups)
            .any(|g| g == group)
    }

    /// The group the instances' groups admit: the first of the Service's
    /// own groups, else the ELB's own (the group of `attached` that is no
    /// extra) or the shared one.
    pub fn source_group(&self, attached: &[String]) -> Option<String> {
        if let Some(first) = self.byo_groups.first() {
            return Some(first.clone());
        }
        if let Some(shared) = &self.shared_group {
            return Some(shared.clone());
        }
        attached
            .iter()
            .find(|g| !self.extra_groups.contains(g))
            .cloned()
    }
}

/// A balancer's own group's ingress, as upstream's (Classic ELB
/// setSecurityGroupIngress, NLB ensureNLBSecurityGroupRules): each
/// `(protocol, port)` and ICMP "fragmentation needed" (path MTU
/// discovery) from each client range.
pub fn client_ingress(cidrs: &[String], ports: &[(&str, i32)]) -> BTreeSet<IngressRule> {
    let mut ingress = BTreeSet::new();
    for cidr in cidrs {
        for (protocol, port) in ports {
            ingress.insert(IngressRule {
                protocol: protocol.to_string(),
                from: *port,
                to: *port,
                cidr: cidr.clone(),
            });
        }
        ingress.insert(IngressRule {
            protocol: "icmp".into(),
            from: 3,
            to: 4,
            cidr: cidr.clone(),
        });
    }
    ingress
}

/// The groups on the ELB that are not among `groups` any more (upstream's
/// `actual − expected`), in the ELB's order.
pub fn detached_groups(attached: &[String], groups: &[String]) -> Vec<String> {
    attached
        .iter()
        .filter(|g| !groups.contains(g))
        .cloned()
        .collect()
}

/// upstream's proxy-protocol sync (ensureLoadBalancer): the instance ports
/// whose backend policies are set, and to what. `backends`: each instance
/// port with policies now. A listener's port gets the proxy policy, or
/// loses it, when that differs from `enabled`; a port no listener uses any
/// more loses every policy.
pub fn backend_policy_changes(
    backends: &BTreeMap<i32, Vec<String>>,
    listeners: &[ClbListener],
    enabled: bool,
) -> Vec<(i32, Vec<String>)> {
    let wanted: Vec<String> = if enabled {
        vec![PROXY_PROTOCOL_POLICY.to_string()]
    } else {
        Vec::new()
    };
    let mut changes = Vec::new();
    let mut ports = BTreeSet::new();
    for l in listeners {
        if !ports.insert(l.instance_port) {
            continue;
        }
        let now = backends
            .get(&l.instance_port)
            .is_some_and(|p| p.iter().any(|n| n == PROXY_PROTOCOL_POLICY));
        if now != enabled {
            changes.push((l.instance_port, wanted.clone()));
        }
    }
    for port in backends.keys() {
        if !ports.contains(port) {
            changes.push((*port, Vec::new()));
        }
    }
    changes
}

/// The TLS listeners whose policies are not yet just `policy` (upstream
/// sets it on every TLS port on every sync; only the differences are sent
/// here). `policies`: each listener port's policy names, as described.
pub fn ssl_policy_changes(
    listeners: &[ClbListener],
    policies: &BTreeMap<i32, Vec<String>>,
    policy: &str,
) -> Vec<i32> {
    listeners
        .iter()
        .filter(|l| {
            l.is_tls()
                && policies.get(&l.lb_port).map(Vec::as_slice) != Some(&[policy.to_string()][..])
        })
        .map(|l| l.lb_port)
        .collect()
}

/// What to authorize and revoke so a group's ingress is exactly `desired`
/// (upstream's setSecurityGroupIngress).
pub fn ingress_changes(
    actual: &BTreeSet<IngressRule>,
    desired: &BTreeSet<IngressRule>,
) -> (Vec<IngressRule>, Vec<IngressRule>) {
    (
        desired.difference(actual).cloned().collect(),
        actual.difference(desired).cloned().collect(),
    )
}

/// upstream's updateInstanceSecurityGroupsForLoadBalancer: the groups that
/// get an all-traffic rule from the ELB's group, and those that lose it.
/// `referencing`: each group with such a rule now, and whether it carries
/// the cluster tag; an untagged one keeps its rule unless the ELB's group
/// is being deleted.
pub fn node_rule_changes(
    referencing: &BTreeMap<String, bool>,
    wanted: &BTreeSet<String>,
    deleting: bool,
) -> (Vec<String>, Vec<String>) {
    let add = wanted
        .iter()
        .filter(|g| !referencing.contains_key(*g))
        .cloned()
        .collect();
    let remove = referencing
        .iter()
        .filter(|(g, tagged)| !wanted.contains(*g) && (**tagged || deleting))
        .map(|(g, _)| g.clone())
        .collect();
    (add, remove)
}

#[cfg(test)]
mod tests {
    use super::*;
    use overcast_cloud_provider::k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
    use overcast_cloud_provider::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn svc(annotations: &[(&str, &str)], ports: &[(i32, i32)]) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("shop".into()),
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
                        .map(|(port, node_port)| ServicePort {
                            port: *port,
                            node_port: Some(*node_port),
                            protocol: Some("TCP".into()),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn plan(s: &Service) -> Result<ClbPlan, CloudError> {
        plan_classic(s, "c1", &ClbSettings::default())
    }

    #[test]
    fn a_plain_service_gets_upstreams_defaults() {
        let p = plan(&svc(&[], &[(80, 30080), (443, 30443)])).unwrap();
        assert_eq!(p.name, "a3b2c4d5e1f2a4b3c8d9e0a1b2c3d4e5");
        assert!(!p.internal);
        assert_eq!(
            p.listeners[0],
            ClbListener {
                lb_port: 80,
                instance_port: 30080,
                protocol: "tcp".into(),
                instance_protocol: "tcp".into(),
                certificate: None,
            }
        );
        assert_eq!(
            p.health_check,
            ClbHealthCheck {
                target: "TCP:30080".into(),
                healthy: 2,
                unhealthy: 6,
                interval: 10,
                timeout: 5
            }
        );
        assert_eq!(p.attributes.idle_timeout, 60);
        assert!(!p.attributes.cross_zone && !p.attributes.draining);
        let group = p.own_group.unwrap();
        assert_eq!(group.name, format!("k8s-elb-{}", p.name));
        assert_eq!(
            group.description,
            format!("Security group for Kubernetes ELB {} (shop/web)", p.name)
        );
        assert_eq!(group.tags["kubernetes.io/cluster/c1"], "owned");
        let rules: Vec<String> = group
            .ingress
            .iter()
            .map(|r| format!("{} {}-{} {}", r.protocol, r.from, r.to, r.cidr))
            .collect();
        assert_eq!(
            rules,
            [
                "icmp 3-4 0.0.0.0/0",
                "tcp 80-80 0.0.0.0/0",
                "tcp 443-443 0.0.0.0/0"
            ]
        );
        assert_eq!(p.tags["kubernetes.io/service-name"], "shop/web");
    }

    #[test]
    fn a_local_service_is_checked_over_http_on_its_health_node_port() {
        let mut s = svc(&[], &[(80, 30080)]);
        let spec = s.spec.as_mut().unwrap();
        spec.external_traffic_policy = Some("Local".into());
        spec.health_check_node_port = Some(32000);
        assert_eq!(plan(&s).unwrap().health_check.target, "HTTP:32000/healthz");
        s.metadata.annotations = Some(BTreeMap::from([(
            ANN_HC_PORT.to_string(),
            "traffic-port".to_string(),
        )]));
        assert_eq!(plan(&s).unwrap().health_check.target, "HTTP:30080/healthz");
    }

    #[test]
    fn health_check_annotations_override_and_are_validated() {
        let s = svc(
            &[
                (ANN_HC_PROTOCOL, "HTTP"),
                (ANN_HC_PATH, "/ready"),
                (ANN_HC_PORT, "8080"),
                (ANN_HC_INTERVAL, "30"),
                (ANN_HC_TIMEOUT, "3"),
            ],
            &[(80, 30080)],
        );
        let hc = plan(&s).unwrap().health_check;
        assert_eq!(hc.target, "HTTP:8080/ready");
        assert_eq!((hc.interval, hc.timeout), (30, 3));
        let low = svc(
            &[(ANN_HC_INTERVAL, "2"), (ANN_HC_HEALTHY, "1")],
            &[(80, 30080)],
        );
        let err = plan(&low).unwrap_err().to_string();
        assert!(
            err.contains("HealthyThreshold must be at least 2; Interval must be at least 5"),
            "{err}"
        );
    }

    #[test]
    fn what_upstream_refuses_is_refused_in_its_words() {
        let mut udp = svc(&[], &[(53, 30053)]);
        udp.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].protocol = Some("UDP".into());
        assert!(
            plan(&udp)
                .unwrap_err()
                .to_string()
                .contains("Protocol UDP not supported by LoadBalancer")
        );
        let odd = svc(&[(ANN_PROXY_PROTOCOL, "true")], &[(80, 30080)]);
        let err = plan(&odd).unwrap_err().to_string();
        assert!(
            err.contains(r#"="true" detected, but the only value supported currently is '*'"#)
                && err.contains("shop/web"),
            "{err}"
        );
        let bad_backend = svc(
            &[(ANN_SSL_CERT, "arn:cert"), (ANN_BACKEND_PROTOCOL, "HTTP")],
            &[(443, 30443)],
        );
        assert!(
            plan(&bad_backend)
                .unwrap_err()
                .to_string()
                .contains(&format!(
                    "Invalid backend protocol HTTP for arn:cert in {ANN_BACKEND_PROTOCOL}"
                ))
        );
        // Upstream ignores these without a certificate; refused here.
        for key in [ANN_SSL_PORTS, ANN_SSL_POLICY] {
            let err = plan(&svc(&[(key, "443")], &[(443, 30443)]))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&format!("{key} has no effect without")),
                "{err}"
            );
        }
    }

    #[test]
    fn listeners_follow_upstreams_build_listener_table() {
        let cert = "arn:aws:acm:us-east-1:1:certificate/x";
        let listener = |annotations: &[(&str, &str)]| {
            let mut s = svc(annotations, &[(443, 30443), (80, 30080)]);
            s.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].name = Some("https".into());
            plan(&s)
                .unwrap()
                .listeners
                .iter()
                .map(|l| {
                    format!(
                        "{} {}/{} {}",
                        l.lb_port,
                        l.protocol,
                        l.instance_protocol,
                        l.certificate.is_some()
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(
            listener(&[(ANN_SSL_CERT, cert)]),
            ["443 ssl/tcp true", "80 ssl/tcp true"]
        );
        for (backend, tls) in [
            ("http", "https/http"),
            ("https", "https/https"),
            ("ssl", "ssl/ssl"),
            ("tcp", "ssl/tcp"),
        ] {
            let plain = if backend == "http" {
                "http/http"
            } else {
                "tcp/tcp"
            };
            for ports in ["https", "443"] {
                assert_eq!(
                    listener(&[
                        (ANN_SSL_CERT, cert),
                        (ANN_SSL_PORTS, ports),
                        (ANN_BACKEND_PROTOCOL, backend)
                    ]),
                    [format!("443 {tls} true"), format!("80 {plain} false")],
                    "{backend} {ports}"
                );
            }
        }
        // Not trimmed, as upstream: " 443" names a port, which none is.
        assert_eq!(
            listener(&[(ANN_SSL_CERT, cert), (ANN_SSL_PORTS, "80, 443")]),
            ["443 tcp/tcp false", "80 ssl/tcp true"]
        );
        assert_eq!(
            listener(&[(ANN_BACKEND_PROTOCOL, "ssl")])[0],
            "443 tcp/tcp false"
        );
    }

    #[test]
    fn a_changed_certificate_makes_the_listener_again() {
        let l = |cert: Option<&str>| ClbListener {
            lb_port: 443,
            instance_port: 30443,
            protocol: "ssl".into(),
            instance_protocol: "tcp".into(),
            certificate: cert.map(str::to_string),
        };
        assert_eq!(
            listener_changes(&[l(Some("ARN:A"))], &[l(Some("arn:a"))]),
            (vec![], vec![])
        );
        let (remove, add) = listener_changes(&[l(Some("arn:a"))], &[l(Some("arn:b"))]);
        assert_eq!((remove, add), (vec![443], vec![l(Some("arn:b"))]));
        assert_eq!(listener_changes(&[l(None)], &[l(Some("arn:a"))]).0, [443]);
    }

    #[test]
    fn groups_of_the_services_own_replace_the_elbs_and_extras_follow() {
        let own = plan(&svc(
            &[(ANN_EXTRA_SECURITY_GROUPS, "sg-x, sg-y")],
            &[(80, 30080)],
        ))
        .unwrap();
        assert!(own.own_group.is_some());
        assert_eq!(
            own.security_groups(Some("sg-own")),
            ["sg-own", "sg-x", "sg-y"]
        );
        assert_eq!(
            own.source_group(&["sg-x".into(), "sg-own".into()])
                .as_deref(),
            Some("sg-own")
        );
        let byo = plan(&svc(
            &[
                (ANN_SECURITY_GROUPS, " sg-a ,,sg-b"),
                (ANN_EXTRA_SECURITY_GROUPS, "sg-x"),
            ],
            &[(80, 30080)],
        ))
        .unwrap();
        assert!(byo.own_group.is_none() && byo.shared_group.is_none());
        assert_eq!(byo.security_groups(None), ["sg-a", "sg-b", "sg-x"]);
        assert_eq!(byo.source_group(&[]).as_deref(), Some("sg-a"));
        let shared = ClbSettings {
            shared_group: Some("sg-shared".into()),
            ..Default::default()
        };
        let byo_over_shared = plan_classic(
            &svc(&[(ANN_SECURITY_GROUPS, "sg-a")], &[(80, 30080)]),
            "c1",
            &shared,
        )
        .unwrap();
        assert_eq!(byo_over_shared.security_groups(None), ["sg-a"]);
    }

    #[test]
    fn proxy_protocol_goes_on_each_backend_port_and_off_unused_ones() {
        let l = |instance_port| ClbListener {
            lb_port: instance_port - 30000,
            instance_port,
            protocol: "tcp".into(),
            instance_protocol: "tcp".into(),
            certificate: None,
        };
        let on = vec![PROXY_PROTOCOL_POLICY.to_string()];
        let backends = BTreeMap::from([(30080, on.clone()), (30999, vec!["other".into()])]);
        assert_eq!(
            backend_policy_changes(&backends, &[l(30080), l(30443)], true),
            [(30443, on.clone()), (30999, vec![])]
        );
        assert_eq!(
            backend_policy_changes(&backends, &[l(30080), l(30999)], false),
            [(30080, vec![])]
        );
        assert!(backend_policy_changes(&BTreeMap::new(), &[l(30080)], false).is_empty());
    }

    #[test]
    fn the_negotiation_policy_goes_on_tls_listeners_that_lack_it() {
        let l = |port, protocol: &str| ClbListener {
            lb_port: port,
            instance_port: port + 30000,
            protocol: protocol.into(),
            instance_protocol: "tcp".into(),
            certificate: None,
        };
        let name = ssl_negotiation_policy_name("ELBSecurityPolicy-2016-08");
        assert_eq!(name, "k8s-SSLNegotiationPolicy-ELBSecurityPolicy-2016-08");
        let listeners = [
            l(80, "TCP"),
            l(443, "SSL"),
            l(8443, "HTTPS"),
            l(9443, "SSL"),
        ];
        let policies = BTreeMap::from([(443, vec![name.clone()]), (9443, vec!["old".to_string()])]);
        assert_eq!(
            ssl_policy_changes(&listeners, &policies, &name),
            [8443, 9443]
        );
    }

    #[test]
    fn source_ranges_restrict_the_elb_group_and_attributes_follow_annotations() {
        let mut s = svc(
            &[
                (ANN_CROSS_ZONE, "true"),
                (ANN_IDLE_TIMEOUT, "120"),
                (ANN_DRAINING, "True"),
                (ANN_DRAINING_TIMEOUT, "30"),
            ],
            &[(80, 30080)],
        );
        s.spec.as_mut().unwrap().load_balancer_source_ranges = Some(vec!["10.1.2.3/16".into()]);
        let p = plan(&s).unwrap();
        assert!(
            p.own_group
                .unwrap()
                .ingress
                .iter()
                .all(|r| r.cidr == "10.1.0.0/16")
        );
        assert_eq!(
            p.attributes,
            ClbAttributes {
                cross_zone: true,
                idle_timeout: 120,
                draining: true,
                draining_timeout: Some(30),
                access_log: false,
                access_log_interval: None,
                access_log_bucket: None,
                access_log_prefix: None,
            }
        );
        let bad_bool = svc(&[(ANN_CROSS_ZONE, "yes")], &[(80, 30080)]);
        assert!(plan(&bad_bool).unwrap_err().to_string().contains("yes"));
    }

    #[test]
    fn a_changed_listener_is_deleted_and_created_on_its_port() {
        let l = |lb_port, instance_port, protocol: &str| ClbListener {
            lb_port,
            instance_port,
            protocol: protocol.into(),
            instance_protocol: protocol.into(),
            certificate: None,
        };
        let actual = [l(80, 30080, "TCP"), l(443, 30443, "TCP")];
        let desired = [
            l(80, 30080, "tcp"),
            l(443, 31443, "tcp"),
            l(8080, 30808, "tcp"),
        ];
        let (remove, add) = listener_changes(&actual, &desired);
        assert_eq!(remove, [443]);
        assert_eq!(add, [l(443, 31443, "tcp"), l(8080, 30808, "tcp")]);
    }

    #[test]
    fn node_rules_follow_the_instances_and_spare_untagged_groups_until_deletion() {
        let referencing = BTreeMap::from([
            ("sg-old-tagged".to_string(), true),
            ("sg-old-untagged".to_string(), false),
            ("sg-keep".to_string(), true),
        ]);
        let wanted = BTreeSet::from(["sg-keep".to_string(), "sg-new".to_string()]);
        assert_eq!(
            node_rule_changes(&referencing, &wanted, false),
            (
                vec!["sg-new".to_string()],
                vec!["sg-old-tagged".to_string()]
            )
        );
        let (add, remove) = node_rule_changes(&referencing, &BTreeSet::new(), true);
        assert!(add.is_empty());
        assert_eq!(remove.len(), 3);
    }
}
