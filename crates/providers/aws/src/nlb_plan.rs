//! What a Service's Network Load Balancer should look like, as
//! cloud-provider-aws decides it (pkg/providers/v1/aws.go,
//! aws_loadbalancer.go): a pure function of the Service and the cluster ID.

use std::collections::BTreeMap;

use overcast_cloud_provider::k8s_openapi::api::core::v1::{Node, Service, ServicePort};
use overcast_cloud_provider::service_helpers::{load_balancer_source_ranges, parse_bool};
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

pub const ANN_EIP_ALLOCATIONS: &str =
    "service.beta.kubernetes.io/aws-load-balancer-eip-allocations";
pub const ANN_PRIVATE_IPV4_ADDRESSES: &str =
    "service.beta.kubernetes.io/aws-load-balancer-private-ipv4-addresses";

pub const ANN_SECURITY_GROUPS: &str =
    "service.beta.kubernetes.io/aws-load-balancer-security-groups";
pub const ANN_EXTRA_SECURITY_GROUPS: &str =
    "service.beta.kubernetes.io/aws-load-balancer-extra-security-groups";

/// Refused for NLBs by upstream too (aws_validations.go).
pub const NOT_FOR_NLB: [(&str, &str); 2] = [
    (ANN_SECURITY_GROUPS, "BYO security group annotation"),
    (
        ANN_EXTRA_SECURITY_GROUPS,
        "BYO extra security group annotation",
    ),
];

pub const ANN_CROSS_ZONE: &str =
    "service.beta.kubernetes.io/aws-load-balancer-cross-zone-load-balancing-enabled";
pub const ANN_ACCESS_LOG_ENABLED: &str =
    "service.beta.kubernetes.io/aws-load-balancer-access-log-enabled";
pub const ANN_ACCESS_LOG_BUCKET: &str =
    "service.beta.kubernetes.io/aws-load-balancer-access-log-s3-bucket-name";
pub const ANN_ACCESS_LOG_PREFIX: &str =
    "service.beta.kubernetes.io/aws-load-balancer-access-log-s3-bucket-prefix";
pub const ANN_TARGET_GROUP_ATTRIBUTES: &str =
    "service.beta.kubernetes.io/aws-load-balancer-target-group-attributes";

pub const ATTR_CROSS_ZONE: &str = "load_balancing.cross_zone.enabled";
pub const ATTR_ACCESS_LOGS: &str = "access_logs.s3.enabled";
pub const ATTR_ACCESS_LOGS_BUCKET: &str = "access_logs.s3.bucket";
pub const ATTR_ACCESS_LOGS_PREFIX: &str = "access_logs.s3.prefix";
pub const ATTR_PRESERVE_CLIENT_IP: &str = "preserve_client_ip.enabled";
pub const ATTR_PROXY_PROTOCOL_V2: &str = "proxy_protocol_v2.enabled";

/// The NLB's attributes upstream manages (reconcileLBAttributes): cross-zone
/// load balancing and access logs are off unless annotated on, so a change
/// made by hand outside the annotations is undone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LbAttributes {
    pub cross_zone: bool,
    pub access_logs: bool,
    pub bucket: String,
    pub prefix: String,
}

impl LbAttributes {
    /// The attributes to modify, given the NLB's current ones, in
    /// upstream's order. The bucket and prefix are compared only with access
    /// logs on (ELBv2 refuses an empty bucket).
    pub fn changes(&self, current: &BTreeMap<String, String>) -> Vec<(String, String)> {
        let now = |k: &str| current.get(k).map(String::as_str).unwrap_or_default();
        let mut out = Vec::new();
        for (key, on) in [
            (ATTR_CROSS_ZONE, self.cross_zone),
            (ATTR_ACCESS_LOGS, self.access_logs),
        ] {
            let want = if on { "true" } else { "false" };
            if now(key) != want {
                out.push((key.to_string(), want.to_string()));
            }
        }
        if self.access_logs {
            for (key, want) in [
                (ATTR_ACCESS_LOGS_BUCKET, &self.bucket),
                (ATTR_ACCESS_LOGS_PREFIX, &self.prefix),
            ] {
                if now(key) != want {
                    out.push((key.to_string(), want.clone()));
                }
            }
        }
        out
    }
}

/// The target-group attributes to modify (upstream's
/// buildTargetGroupAttributes): each annotated one whose value differs; one
/// the group does not report is skipped, as upstream. An attribute no longer
/// annotated keeps its last value.
pub fn target_group_attribute_changes(
    annotated: &BTreeMap<String, String>,
    current: &BTreeMap<String, String>,
) -> Vec<(String, String)> {
    annotated
        .iter()
        .filter(|(k, v)| current.get(*k).is_some_and(|now| now != *v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

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
    /// Anything else: a Classic ELB (clb.rs).
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
/// Whether the client ranges admit everyone (upstream's default range).
pub fn admits_everyone(client_cidrs: &[String]) -> bool {
    client_cidrs.iter().any(|c| c == "0.0.0.0/0")
}

/// `ssl-ports` and `ssl-negotiation-policy` set (non-empty) while
/// `ssl-cert` is not: upstream ignores them, this provider refuses them
/// rather than ignore a setting without a word.
pub fn tls_settings_without_certificate(svc: &Service) -> Vec<&'static str> {
    let Some(annotations) = svc.metadata.annotations.as_ref() else {
        return Vec::new();
    };
    let set = |key: &str| annotations.get(key).is_some_and(|v| !v.is_empty());
    if set(ANN_SSL_CERT) {
        return Vec::new();
    }
    [ANN_SSL_PORTS, ANN_SSL_POLICY]
        .into_iter()
        .filter(|key| set(key))
        .collect()
}

pub(crate) fn is_ssl_port(ssl_ports: Option<&str>, port: &ServicePort) -> bool {
    let Some(list) = ssl_ports.filter(|l| !l.is_empty() && *l != "*") else {
        return true;
    };
    list.split(',').any(|item| match item.parse::<i32>() {
        Ok(n) => n == port.port,
        // An unnamed port is "" to upstream, so an empty entry ("443,")
        // names it.
        Err(_) => port.name.as_deref().unwrap_or_default() == item,
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
    /// The IPv4 client ranges the instances' security groups admit to the
    /// node ports (`0.0.0.0/0` when the Service names none).
    pub client_cidrs: Vec<String>,
    pub attributes: LbAttributes,
    /// The `target-group-attributes` annotation, when present: the target
    /// groups' attributes are reconciled only then, as upstream.
    pub target_group_attributes: Option<BTreeMap<String, String>>,
    /// Elastic IP allocation IDs, one per subnet in order (internet-facing).
    pub eip_allocations: Option<Vec<String>>,
    /// Private IPv4 addresses, one per subnet in order (internal).
    pub private_ipv4_addresses: Option<Vec<String>>,
}

/// A subnet of a new NLB with the addresses it gets there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetAddresses {
    pub subnet: String,
    pub allocation: Option<String>,
    pub private_address: Option<String>,
}

impl NlbPlan {
    /// The subnet mappings of a new NLB: each subnet with its EIP and
    /// private address when annotated, which must then be one per subnet
    /// (upstream's createSubnetMappings and its count checks).
    pub fn subnet_mappings(&self, subnets: &[String]) -> Result<Vec<SubnetAddresses>, CloudError> {
        for (list, what) in [
            (&self.eip_allocations, "EIP AllocationIDs"),
            (&self.private_ipv4_addresses, "Private IPv4Addresses"),
        ] {
            if let Some(list) = list.as_ref().filter(|l| l.len() != subnets.len()) {
                return Err(CloudError::other(format!(
                    "error creating load balancer {}: Must have same number of {what} ({}) and SubnetIDs ({})",
                    self.name,
                    list.len(),
                    subnets.len()
                )));
            }
        }
        Ok(subnets
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let at = |l: &Option<Vec<String>>| l.as_ref().map(|l| l[i].clone());
                SubnetAddresses {
                    subnet: s.clone(),
                    allocation: at(&self.eip_allocations),
                    private_address: at(&self.private_ipv4_addresses),
                }
            })
            .collect())
    }
}

/// What the provider's config decides for every NLB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NlbSettings {
    /// The instances' security groups are managed (`DisableSecurityGroupIngress`
    /// not set): source ranges are enforced there.
    pub security_group_ingress: bool,
    /// `ClusterServiceLoadBalancerHealthProbeMode = Shared`: the port and
    /// path of kube-proxy's health check that Cluster-policy Services use.
    pub shared_health_probe: Option<(i32, String)>,
    /// `NLBSecurityGroupMode = Managed`: a new NLB's own group admits its
    /// clients, so source ranges are enforced there too.
    pub own_groups: bool,
}

impl Default for NlbSettings {
    fn default() -> Self {
        NlbSettings {
            security_group_ingress: true,
            shared_health_probe: None,
            own_groups: false,
        }
    }
}

/// A boolean annotation as upstream reads it (strconv.ParseBool; absent or
/// empty: `false`).
pub(crate) fn bool_annotation(svc: &Service, key: &str) -> Result<bool, CloudError> {
    match annotation(svc, key).filter(|v| !v.is_empty()) {
        None => Ok(false),
        Some(v) => parse_bool(v)
            .ok_or_else(|| bad(svc, format!("error parsing service annotation: {key}={v}"))),
    }
}

/// upstream's validateServiceAnnotationTargetGroupAttributes.
fn target_group_attributes(
    svc: &Service,
    protocols: &[String],
) -> Result<Option<BTreeMap<String, String>>, CloudError> {
    let Some(value) = annotation(svc, ANN_TARGET_GROUP_ATTRIBUTES) else {
        return Ok(None);
    };
    let what = "error validating target group attributes";
    let attributes = key_values(value);
    for (k, v) in &attributes {
        if v.is_empty() {
            return Err(bad(
                svc,
                format!("{what}: attribute value is empty for {k:?}"),
            ));
        }
        match k.as_str() {
            ATTR_PRESERVE_CLIENT_IP | ATTR_PROXY_PROTOCOL_V2 if v != "true" && v != "false" => {
                return Err(bad(
                    svc,
                    format!("{what}: invalid attribute value for {k:?}: {v}"),
                ));
            }
            ATTR_PRESERVE_CLIENT_IP if v == "false" && protocols.iter().any(|p| p == "UDP") => {
                return Err(bad(
                    svc,
                    format!("{what}: client IP preservation can't be disabled for UDP ports"),
                ));
            }
            ATTR_PRESERVE_CLIENT_IP | ATTR_PROXY_PROTOCOL_V2 => {}
            _ => {
                return Err(bad(
                    svc,
                    format!(
                        "{what}: the attribute {k:?} is not supported by the controller or is invalid"
                    ),
                ));
            }
        }
    }
    Ok(Some(attributes))
}

pub(crate) fn annotation<'a>(svc: &'a Service, key: &str) -> Option<&'a str> {
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

pub(crate) fn bad(svc: &Service, what: impl std::fmt::Display) -> CloudError {
    CloudError::other(format!("Service {}: {what}", service_key(svc)))
}

/// upstream's GetSecurityGroupNameForNLB: `k8s-<ns:8>-<name:8>-<hash:10>`,
/// namespace and name without what is not alphanumeric, the hash a
/// SHA-256 of the cluster name (`--cluster-name`), the Service's name,
/// namespace and UID run together.
pub fn nlb_security_group_name(cluster_name: &str, svc: &Service) -> String {
    use sha2::Digest as _;
    let ns = svc.metadata.namespace.as_deref().unwrap_or_default();
    let name = svc.metadata.name.as_deref().unwrap_or_default();
    let uid = svc.metadata.uid.as_deref().unwrap_or_default();
    let clean = |s: &str| -> String {
        s.chars()
            .filter(char::is_ascii_alphanumeric)
            .take(8)
            .collect()
    };
    let digest = sha2::Sha256::digest(format!("{cluster_name}{name}{ns}{uid}"));
    let hash: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("k8s-{}-{}-{}", clean(ns), clean(name), &hash[..10])
}

/// With `NLBSecurityGroupMode = Managed`, the security group a new NLB
/// gets (upstream's ensureNLBSecurityGroup and ensureNLBSecurityGroupRules):
/// each listener's port and protocol (`tcp` for a TLS listener, where
/// upstream sends `tls`, which EC2 refuses) and ICMP "fragmentation needed"
/// from the client ranges; tagged for the cluster and with the additional
/// tags.
pub fn nlb_security_group(
    plan: &NlbPlan,
    svc: &Service,
    cluster_name: &str,
    cluster_id: &str,
) -> crate::clb_plan::OwnGroup {
    let ports: Vec<(&str, i32)> = plan
        .listeners
        .iter()
        .map(|l| {
            let protocol = if l.frontend_protocol == "UDP" {
                "udp"
            } else {
                "tcp"
            };
            (protocol, l.port)
        })
        .collect();
    let ingress = crate::clb_plan::client_ingress(&plan.client_cidrs, &ports);
    let mut tags = annotation(svc, ANN_ADDITIONAL_TAGS)
        .map(key_values)
        .unwrap_or_default();
    tags.insert(cluster_tag_key(cluster_id), "owned".into());
    crate::clb_plan::OwnGroup {
        name: nlb_security_group_name(cluster_name, svc),
        description: "[k8s] Managed SecurityGroup for LoadBalancer".into(),
        tags,
        ingress,
    }
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

fn health_check(svc: &Service, settings: &NlbSettings) -> Result<HealthCheck, CloudError> {
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
    // Shared mode replaces protocol, port and path for the Cluster policy,
    // annotated or not (as upstream's code does, whatever its comment says).
    if let Some((port, path)) = settings.shared_health_probe.as_ref().filter(|_| !local) {
        hc.protocol = "HTTP".into();
        hc.port = port.to_string();
        hc.path = Some(path.clone());
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
pub fn plan(
    svc: &Service,
    cluster_id: &str,
    settings: &NlbSettings,
) -> Result<NlbPlan, CloudError> {
    let spec = svc.spec.clone().unwrap_or_default();
    for (key, what) in NOT_FOR_NLB {
        if annotation(svc, key).is_some() {
            return Err(bad(svc, format!("{what} {key:?} is not supported by NLB")));
        }
    }
    if spec
        .session_affinity
        .as_deref()
        .is_some_and(|a| a != "None")
    {
        return Err(bad(svc, "unsupported load balancer affinity: ClientIP"));
    }
    // The clients the instances' security groups admit (upstream:
    // GetLoadBalancerSourceRanges, default 0.0.0.0/0). The NLB is IPv4, so
    // an IPv6 range admits no one it could carry and gets no rule.
    let ranges = load_balancer_source_ranges(svc).map_err(|e| bad(svc, e))?;
    let mut client_cidrs: Vec<String> = ranges
        .iter()
        .filter(|r| !r.contains(':'))
        .cloned()
        .collect();
    if ranges.is_empty() {
        client_cidrs.push("0.0.0.0/0".into());
    } else if client_cidrs.is_empty() {
        return Err(bad(
            svc,
            format!(
                "loadBalancerSourceRanges names only IPv6 ranges ({}); the NLB is IPv4, so no client could reach it",
                ranges.join(", ")
            ),
        ));
    }
    if !settings.security_group_ingress && !settings.own_groups && !admits_everyone(&client_cidrs) {
        // Upstream then admits everyone without a word.
        return Err(bad(
            svc,
            "loadBalancerSourceRanges cannot be enforced: DisableSecurityGroupIngress is set in --cloud-config, so the instances' security groups (where cloud-provider-aws enforces it for NLBs) are not managed; remove the ranges, or restrict the node security groups yourself",
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
    let health = health_check(svc, settings)?;
    let attributes = LbAttributes {
        cross_zone: bool_annotation(svc, ANN_CROSS_ZONE)?,
        access_logs: bool_annotation(svc, ANN_ACCESS_LOG_ENABLED)?,
        bucket: annotation(svc, ANN_ACCESS_LOG_BUCKET)
            .unwrap_or_default()
            .to_string(),
        prefix: annotation(svc, ANN_ACCESS_LOG_PREFIX)
            .unwrap_or_default()
            .to_string(),
    };
    let target_group_attributes = target_group_attributes(svc, &protocols)?;
    let certificate = annotation(svc, ANN_SSL_CERT).filter(|c| !c.is_empty());
    let backend_tls = match annotation(svc, ANN_BACKEND_PROTOCOL) {
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
    if let Some(key) = tls_settings_without_certificate(svc).first() {
        return Err(bad(
            svc,
            format!("{key} has no effect without {ANN_SSL_CERT}"),
        ));
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
        let tls = certificate
            .filter(|_| protocol == "TCP" && is_ssl_port(annotation(svc, ANN_SSL_PORTS), port));
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
                .and(annotation(svc, ANN_SSL_POLICY))
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
            .map(trimmed_list)
            .unwrap_or_default(),
        target_node_labels: annotation(svc, ANN_TARGET_NODE_LABELS)
            .map(key_values)
            .unwrap_or_default(),
        client_cidrs,
        attributes,
        target_group_attributes,
        // Comma-separated as upstream splits them; each trimmed (upstream
        // sends " eipalloc-2" as written, which AWS refuses).
        eip_allocations: annotation(svc, ANN_EIP_ALLOCATIONS).map(comma_list),
        private_ipv4_addresses: annotation(svc, ANN_PRIVATE_IPV4_ADDRESSES).map(comma_list),
    })
}

/// A comma-separated list, each entry trimmed and empty ones dropped, as
/// upstream reads subnet and security-group annotations
/// (getSGListFromAnnotation).
pub(crate) fn trimmed_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .map(str::to_string)
        .collect()
}

pub(crate) fn comma_list(value: &str) -> Vec<String> {
    value.split(',').map(|v| v.trim().to_string()).collect()
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
    fn the_nlbs_own_group_is_named_and_ruled_as_upstream() {
        // Upstream's vectors (aws_test.go TestCloud_GetSecurityGroupNameForNLB).
        let mut s = svc(&[], &[("TCP", 80, 30080)]);
        s.metadata.name = Some("my-service".into());
        s.metadata.namespace = Some("default".into());
        s.metadata.uid = Some("12345678-1234-1234-1234-123456789abc".into());
        assert_eq!(
            nlb_security_group_name("test-cluster", &s),
            "k8s-default-myservic-b7cb8b02f0"
        );
        s.metadata.name = Some("my-service-123".into());
        s.metadata.namespace = Some("kube-system".into());
        s.metadata.uid = Some("87654321-4321-4321-4321-cba987654321".into());
        assert_eq!(
            nlb_security_group_name("test-cluster", &s),
            "k8s-kubesyst-myservic-5aa269aeaf"
        );
        let mut s = svc(
            &[
                (ANN_TYPE, "nlb"),
                (ANN_SSL_CERT, "arn:cert"),
                (ANN_ADDITIONAL_TAGS, "team=shop"),
            ],
            &[("TCP", 443, 30443), ("TCP", 80, 30080)],
        );
        s.spec.as_mut().unwrap().load_balancer_source_ranges = Some(vec!["10.0.0.0/8".into()]);
        let p = plan(&s, "c1", &NlbSettings::default()).unwrap();
        let group = nlb_security_group(&p, &s, "kubernetes", "c1");
        assert_eq!(
            group.description,
            "[k8s] Managed SecurityGroup for LoadBalancer"
        );
        assert_eq!(group.tags["kubernetes.io/cluster/c1"], "owned");
        assert_eq!(group.tags["team"], "shop");
        let rules: Vec<String> = group
            .ingress
            .iter()
            .map(|r| format!("{} {}-{} {}", r.protocol, r.from, r.to, r.cidr))
            .collect();
        assert_eq!(
            rules,
            [
                "icmp 3-4 10.0.0.0/8",
                "tcp 80-80 10.0.0.0/8",
                "tcp 443-443 10.0.0.0/8"
            ]
        );
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
        let p = plan(&s, "prod", &NlbSettings::default()).unwrap();
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
        let p = plan(&s, "prod", &NlbSettings::default()).unwrap();
        assert!(p.internal);
        let hc = &p.listeners[0].health;
        assert_eq!(hc.protocol, "HTTP");
        assert_eq!(hc.port, "31999");
        assert_eq!(hc.path.as_deref(), Some("/healthz"));
        assert_eq!((hc.interval, hc.healthy, hc.unhealthy), (10, 2, 2));
    }

    #[test]
    fn the_shared_probe_checks_kube_proxy_for_the_cluster_policy_and_names_groups_as_upstream() {
        let shared = NlbSettings {
            shared_health_probe: Some((10256, "/healthz".into())),
            ..Default::default()
        };
        let mut s = svc(&[(ANN_TYPE, "nlb")], &[("TCP", 80, 30080)]);
        s.metadata.namespace = Some("default".into());
        s.metadata.name = Some("legacy".into());
        let hc = plan(&s, "overcast-test", &shared).unwrap().listeners[0].clone();
        assert_eq!(
            (
                hc.health.protocol.as_str(),
                hc.health.port.as_str(),
                hc.health.path.as_deref()
            ),
            ("HTTP", "10256", Some("/healthz"))
        );
        assert_eq!(
            hc.health.interval, 30,
            "the interval stays the Cluster policy's"
        );
        // buildTargetGroupName's SHA-1 over the same inputs with health-check
        // protocol HTTP (computed outside this project, as for tests/aws.rs's
        // UPSTREAM_TARGET_GROUP, whose TCP twin is k8s-default-legacy-dfb3259b0e).
        assert_eq!(hc.target_group, "k8s-default-legacy-791440e57e");
        let plain = plan(&s, "overcast-test", &NlbSettings::default()).unwrap();
        assert_eq!(
            plain.listeners[0].target_group,
            "k8s-default-legacy-dfb3259b0e"
        );
        // The Local policy keeps its own health-check node port.
        let spec = s.spec.as_mut().unwrap();
        spec.external_traffic_policy = Some("Local".into());
        spec.health_check_node_port = Some(31999);
        let local = plan(&s, "overcast-test", &shared).unwrap();
        assert_eq!(local.listeners[0].health.port, "31999");
    }

    #[test]
    fn source_ranges_become_the_client_cidrs_or_are_refused_where_they_cannot_be_enforced() {
        let no_ingress = NlbSettings {
            security_group_ingress: false,
            ..Default::default()
        };
        let mut ranged = svc(&[(ANN_TYPE, "nlb")], &[("TCP", 80, 30080)]);
        ranged.spec.as_mut().unwrap().load_balancer_source_ranges =
            Some(vec!["10.1.0.0/8".into(), "2001:db8::/32".into()]);
        assert_eq!(
            plan(&ranged, "c", &NlbSettings::default())
                .unwrap()
                .client_cidrs,
            ["10.0.0.0/8"]
        );
        // Enforced by the NLB's own group instead.
        let own_groups = NlbSettings {
            own_groups: true,
            ..no_ingress.clone()
        };
        assert!(plan(&ranged, "c", &own_groups).is_ok());
        let err = plan(&ranged, "c", &no_ingress).unwrap_err().to_string();
        assert!(
            err.contains(
                "loadBalancerSourceRanges cannot be enforced: DisableSecurityGroupIngress"
            ),
            "{err}"
        );
        let annotated = svc(
            &[
                (ANN_TYPE, "nlb"),
                (
                    "service.beta.kubernetes.io/load-balancer-source-ranges",
                    "192.168.0.0/16, 0.0.0.0/0",
                ),
            ],
            &[("TCP", 80, 30080)],
        );
        assert_eq!(
            plan(&annotated, "c", &NlbSettings::default())
                .unwrap()
                .client_cidrs,
            ["0.0.0.0/0", "192.168.0.0/16"]
        );
        assert!(
            plan(&annotated, "c", &no_ingress).is_ok(),
            "admits everyone"
        );
        let open = svc(&[(ANN_TYPE, "nlb")], &[("TCP", 80, 30080)]);
        assert_eq!(
            plan(&open, "c", &no_ingress).unwrap().client_cidrs,
            ["0.0.0.0/0"]
        );
        let mut v6 = open.clone();
        v6.spec.as_mut().unwrap().load_balancer_source_ranges = Some(vec!["::/0".into()]);
        let err = plan(&v6, "c", &NlbSettings::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("only IPv6 ranges (::/0)"), "{err}");
        let mut typo = open.clone();
        typo.spec.as_mut().unwrap().load_balancer_source_ranges = Some(vec!["10.0.0.0".into()]);
        let err = plan(&typo, "c", &NlbSettings::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("spec.loadBalancerSourceRanges: \"10.0.0.0\" is not a CIDR"),
            "{err}"
        );
    }

    #[test]
    fn nlb_attributes_are_off_unless_annotated_and_only_differences_are_sent() {
        let current: BTreeMap<String, String> = [
            (ATTR_CROSS_ZONE, "true"),
            (ATTR_ACCESS_LOGS, "false"),
            (ATTR_ACCESS_LOGS_BUCKET, ""),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .into();
        let plain = plan(
            &svc(&[(ANN_TYPE, "nlb")], &[("TCP", 80, 30080)]),
            "c",
            &NlbSettings::default(),
        )
        .unwrap();
        // Cross-zone turned on by hand is turned off again, as upstream.
        assert_eq!(
            plain.attributes.changes(&current),
            [(ATTR_CROSS_ZONE.to_string(), "false".to_string())]
        );
        let logged = plan(
            &svc(
                &[
                    (ANN_TYPE, "nlb"),
                    (ANN_CROSS_ZONE, "True"),
                    (ANN_ACCESS_LOG_ENABLED, "1"),
                    (ANN_ACCESS_LOG_BUCKET, "logs"),
                ],
                &[("TCP", 80, 30080)],
            ),
            "c",
            &NlbSettings::default(),
        )
        .unwrap();
        assert_eq!(
            logged.attributes.changes(&current),
            [
                (ATTR_ACCESS_LOGS.to_string(), "true".to_string()),
                (ATTR_ACCESS_LOGS_BUCKET.to_string(), "logs".to_string()),
            ],
            "cross-zone already on; no prefix is the one not reported"
        );
        let err = plan(
            &svc(
                &[(ANN_TYPE, "nlb"), (ANN_CROSS_ZONE, "yes")],
                &[("TCP", 80, 30080)],
            ),
            "c",
            &NlbSettings::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.ends_with(&format!(
                "error parsing service annotation: {ANN_CROSS_ZONE}=yes"
            )),
            "{err}"
        );
    }

    #[test]
    fn target_group_attributes_are_validated_as_upstream_and_only_reported_ones_change() {
        let with = |value: &str, protocol: &str| {
            plan(
                &svc(
                    &[(ANN_TYPE, "nlb"), (ANN_TARGET_GROUP_ATTRIBUTES, value)],
                    &[(protocol, 80, 30080)],
                ),
                "c",
                &NlbSettings::default(),
            )
        };
        let p = with(
            "proxy_protocol_v2.enabled=true, preserve_client_ip.enabled=false",
            "TCP",
        )
        .unwrap();
        let annotated = p.target_group_attributes.unwrap();
        let current: BTreeMap<String, String> = [(ATTR_PROXY_PROTOCOL_V2, "false")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into();
        assert_eq!(
            target_group_attribute_changes(&annotated, &current),
            [(ATTR_PROXY_PROTOCOL_V2.to_string(), "true".to_string())],
            "preserve_client_ip is not reported by this group: skipped"
        );
        for (value, protocol, error) in [
            (
                "proxy_protocol_v2.enabled=yes",
                "TCP",
                "invalid attribute value for \"proxy_protocol_v2.enabled\": yes",
            ),
            (
                "proxy_protocol_v2.enabled",
                "TCP",
                "attribute value is empty for \"proxy_protocol_v2.enabled\"",
            ),
            (
                "preserve_client_ip.enabled=false",
                "UDP",
                "client IP preservation can't be disabled for UDP ports",
            ),
            (
                "deregistration_delay.timeout_seconds=5",
                "TCP",
                "the attribute \"deregistration_delay.timeout_seconds\" is not supported",
            ),
        ] {
            let err = with(value, protocol).unwrap_err().to_string();
            assert!(err.contains(error), "{value}: {err}");
        }
        assert!(
            plan(
                &svc(&[(ANN_TYPE, "nlb")], &[("TCP", 80, 30080)]),
                "c",
                &NlbSettings::default()
            )
            .unwrap()
            .target_group_attributes
            .is_none()
        );
    }

    #[test]
    fn elastic_ips_and_private_addresses_go_one_per_subnet_in_order() {
        let p = plan(
            &svc(
                &[
                    (ANN_TYPE, "nlb"),
                    (ANN_EIP_ALLOCATIONS, "eipalloc-a, eipalloc-b"),
                    (ANN_PRIVATE_IPV4_ADDRESSES, "10.0.1.5,10.0.2.5"),
                ],
                &[("TCP", 80, 30080)],
            ),
            "c",
            &NlbSettings::default(),
        )
        .unwrap();
        let subnets = ["subnet-1".to_string(), "subnet-2".to_string()];
        assert_eq!(
            p.subnet_mappings(&subnets).unwrap(),
            [
                SubnetAddresses {
                    subnet: "subnet-1".into(),
                    allocation: Some("eipalloc-a".into()),
                    private_address: Some("10.0.1.5".into()),
                },
                SubnetAddresses {
                    subnet: "subnet-2".into(),
                    allocation: Some("eipalloc-b".into()),
                    private_address: Some("10.0.2.5".into()),
                },
            ]
        );
        let err = p.subnet_mappings(&subnets[..1]).unwrap_err().to_string();
        assert!(
            err.contains("Must have same number of EIP AllocationIDs (2) and SubnetIDs (1)"),
            "{err}"
        );
        let plain = plan(
            &svc(&[(ANN_TYPE, "nlb")], &[("TCP", 80, 30080)]),
            "c",
            &NlbSettings::default(),
        )
        .unwrap();
        assert_eq!(
            plain.subnet_mappings(&subnets[..1]).unwrap(),
            [SubnetAddresses {
                subnet: "subnet-1".into(),
                allocation: None,
                private_address: None,
            }]
        );
    }

    #[test]
    fn bring_your_own_security_groups_are_refused_for_nlbs_as_upstream() {
        let err = plan(
            &svc(
                &[
                    (ANN_TYPE, "nlb"),
                    (
                        "service.beta.kubernetes.io/aws-load-balancer-security-groups",
                        "sg-1",
                    ),
                ],
                &[("TCP", 80, 30080)],
            ),
            "c",
            &NlbSettings::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("BYO security group annotation"), "{err}");
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
        let p = plan(&s, "c", &NlbSettings::default()).unwrap();
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
        let q = plan(&tcp_backend, "c", &NlbSettings::default()).unwrap();
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
        let r = plan(&s, "c", &NlbSettings::default()).unwrap();
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
            plan(&mixed, "c", &NlbSettings::default())
                .unwrap_err()
                .to_string()
                .contains("mixed protocol")
        );
        let sctp = svc(&[(ANN_TYPE, "nlb")], &[("SCTP", 80, 30080)]);
        assert!(
            plan(&sctp, "c", &NlbSettings::default())
                .unwrap_err()
                .to_string()
                .contains("Protocol SCTP not supported")
        );
        let classic = svc(
            &[(ANN_TYPE, "nlb"), (ANN_BACKEND_PROTOCOL, "http")],
            &[("TCP", 80, 30080)],
        );
        assert!(
            plan(&classic, "c", &NlbSettings::default())
                .unwrap_err()
                .to_string()
                .contains("\"http\" is a Classic ELB setting")
        );
        let alone = svc(
            &[(ANN_TYPE, "nlb"), (ANN_SSL_PORTS, "443")],
            &[("TCP", 443, 30443)],
        );
        assert!(
            plan(&alone, "c", &NlbSettings::default())
                .unwrap_err()
                .to_string()
                .contains(
                    "has no effect without service.beta.kubernetes.io/aws-load-balancer-ssl-cert"
                )
        );
        let bad = svc(
            &[(ANN_TYPE, "nlb"), (ANN_HC_INTERVAL, "often")],
            &[("TCP", 80, 30080)],
        );
        assert!(
            plan(&bad, "c", &NlbSettings::default())
                .unwrap_err()
                .to_string()
                .contains("\"often\" is not a number")
        );
    }

    #[test]
    fn the_target_group_name_changes_with_what_forces_a_new_group() {
        let s = svc(&[], &[]);
        let hc = health_check(&s, &NlbSettings::default()).unwrap();
        let a = target_group_name("c", &s, 80, 30080, "TCP", &hc);
        assert_eq!(a, target_group_name("c", &s, 80, 30080, "TCP", &hc));
        assert_ne!(a, target_group_name("c", &s, 80, 30081, "TCP", &hc));
        let mut slower = hc.clone();
        slower.interval = 10;
        assert_ne!(a, target_group_name("c", &s, 80, 30080, "TCP", &slower));
    }
}
