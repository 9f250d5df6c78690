//! cloud-provider-aws's `--cloud-config` (gcfg INI): the `[Global]` keys
//! that apply here and `[ServiceOverride "N"]` endpoint overrides.
//!
//! Upstream (gcfg with FatalOnly) drops unknown keys silently; here every
//! key is accounted for: unknown ones, and upstream ones without effect in
//! Overcast, come back as warnings naming the line, so a file that works
//! with cloud-provider-aws still starts, and nothing is ignored unseen.

use crate::ini::{self, Section};

/// cloud-provider-aws's ServiceOverride `Service` values (SDK service IDs)
/// that Overcast calls.
pub const SERVICE_EC2: &str = "EC2";
pub const SERVICE_ELB: &str = "Elastic Load Balancing";
pub const SERVICE_ELBV2: &str = "Elastic Load Balancing v2";

#[derive(Debug, Clone, Default, PartialEq)]
pub struct AwsConfig {
    pub zone: String,
    pub region: String,
    pub vpc: String,
    pub subnet_id: String,
    pub route_table_id: String,
    pub kubernetes_cluster_tag: String,
    pub kubernetes_cluster_id: String,
    pub disable_security_group_ingress: bool,
    /// `ElbSecurityGroup`: the group every Classic ELB gets instead of a
    /// `k8s-elb-<name>` group of its own (not managed by the provider).
    pub elb_security_group: String,
    pub node_ip_families: Vec<String>,
    pub service_overrides: Vec<ServiceOverride>,
    /// `ClusterServiceLoadBalancerHealthProbeMode = Shared`: NLBs of
    /// Services with the Cluster traffic policy health-check kube-proxy
    /// (HTTP on the port and path below) instead of each node port.
    pub shared_health_probe: bool,
    /// `ClusterServiceSharedLoadBalancerHealthProbePort`; 0: 10256.
    pub shared_health_probe_port: i32,
    /// `ClusterServiceSharedLoadBalancerHealthProbePath`; empty: `/healthz`.
    pub shared_health_probe_path: String,
    /// `NLBSecurityGroupMode = Managed`: each new NLB gets a security
    /// group of its own admitting its clients.
    pub nlb_security_groups: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceOverride {
    /// The section's subsection name ("1" in `[ServiceOverride "1"]`).
    pub name: String,
    pub service: String,
    pub region: String,
    pub url: String,
    pub signing_region: String,
    pub signing_name: String,
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("aws cloud config: {0}")]
pub struct ConfigError(pub String);

/// Upstream [Global] keys that Overcast reads but that have no effect yet.
const WITHOUT_EFFECT: [&str; 5] = [
    "RoleARN",
    "SourceARN",
    "SupportedTopologyInstanceTypePattern",
    "DisableStrictZoneCheck",
    "SigningMethod",
];

/// gcfg matches names case-insensitively, with `-` matching `_`.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.chars().zip(b.chars()).all(|(x, y)| {
            let norm = |c: char| {
                if c == '-' {
                    '_'
                } else {
                    c.to_ascii_lowercase()
                }
            };
            norm(x) == norm(y)
        })
}

impl AwsConfig {
    /// Parses the file; returns the config and warnings to log.
    pub fn parse(bytes: &[u8]) -> Result<(Self, Vec<String>), ConfigError> {
        let text =
            std::str::from_utf8(bytes).map_err(|e| ConfigError(format!("not UTF-8: {e}")))?;
        let sections = ini::parse(text).map_err(|e| ConfigError(e.to_string()))?;
        let mut config = AwsConfig::default();
        let mut warnings = Vec::new();
        for section in &sections {
            if same(&section.name, "Global") && section.subsection.is_none() {
                config.global(section, &mut warnings)?;
            } else if same(&section.name, "ServiceOverride") && section.subsection.is_some() {
                config.service_override(section, &mut warnings)?;
            } else {
                warnings.push(format!(
                    "line {}: unknown section [{}{}], ignored",
                    section.line,
                    section.name,
                    section
                        .subsection
                        .as_ref()
                        .map(|s| format!(" {s:?}"))
                        .unwrap_or_default()
                ));
            }
        }
        if !config.kubernetes_cluster_tag.is_empty()
            && !config.kubernetes_cluster_id.is_empty()
            && config.kubernetes_cluster_tag != config.kubernetes_cluster_id
        {
            return Err(ConfigError(format!(
                "[Global] KubernetesClusterTag ({:?}) and KubernetesClusterID ({:?}) differ",
                config.kubernetes_cluster_tag, config.kubernetes_cluster_id
            )));
        }
        if config.node_ip_families.is_empty() {
            config.node_ip_families.push("ipv4".into());
        }
        let mut seen = Vec::new();
        for o in &config.service_overrides {
            let key = (o.service.clone(), o.region.clone());
            if seen.contains(&key) {
                return Err(ConfigError(format!(
                    "[ServiceOverride {:?}]: a second override for Service {:?} in Region {:?}",
                    o.name, o.service, o.region
                )));
            }
            seen.push(key);
        }
        Ok((config, warnings))
    }

    fn global(&mut self, section: &Section, warnings: &mut Vec<String>) -> Result<(), ConfigError> {
        for e in &section.entries {
            let at = || format!("[Global] {} (line {})", e.key, e.line);
            let k = e.key.as_str();
            let value = e.value.trim().to_string();
            if same(k, "Zone") {
                self.zone = value;
            } else if same(k, "Region") {
                self.region = value;
            } else if same(k, "VPC") {
                self.vpc = value;
            } else if same(k, "SubnetID") {
                warnings.push(format!(
                    "{}: has no effect in overcast's aws provider yet (NLB subnets come from the subnets annotation or discovery in the VPC)",
                    at()
                ));
                self.subnet_id = value;
            } else if same(k, "RouteTableID") {
                self.route_table_id = value;
            } else if same(k, "KubernetesClusterTag") {
                self.kubernetes_cluster_tag = value;
            } else if same(k, "KubernetesClusterID") {
                self.kubernetes_cluster_id = value;
            } else if same(k, "ElbSecurityGroup") {
                self.elb_security_group = value;
            } else if same(k, "DisableSecurityGroupIngress") {
                self.disable_security_group_ingress = ini::parse_bool(&value)
                    .ok_or_else(|| ConfigError(format!("{}: {value:?} is not a boolean", at())))?;
            } else if same(k, "NodeIPFamilies") {
                // A list: each line adds; a blank value resets.
                if value.is_empty() {
                    self.node_ip_families.clear();
                } else if value == "ipv4" || value == "ipv6" {
                    self.node_ip_families.push(value);
                } else {
                    warnings.push(format!("{}: {value:?} is not ipv4 or ipv6, ignored", at()));
                }
            } else if same(k, "ClusterServiceLoadBalancerHealthProbeMode") {
                // Upstream refuses any other mode at its first load balancer.
                self.shared_health_probe = match value.as_str() {
                    "Shared" => true,
                    "ServiceNodePort" | "" => false,
                    _ => {
                        return Err(ConfigError(format!(
                            "{}: {value:?} is not Shared or ServiceNodePort",
                            at()
                        )));
                    }
                };
            } else if same(k, "NLBSecurityGroupMode") {
                // Upstream checks it at the first NLB it makes; here at
                // start, so a typo is not found with the first Service.
                self.nlb_security_groups = match value.as_str() {
                    "Managed" => true,
                    "" => false,
                    _ => {
                        return Err(ConfigError(format!(
                            "{}: invalid NLB security group mode: {value:?}. Expected: \"Managed\"",
                            at()
                        )));
                    }
                };
            } else if same(k, "ClusterServiceSharedLoadBalancerHealthProbePort") {
                self.shared_health_probe_port = value
                    .parse()
                    .ok()
                    .filter(|p| (0..=65535).contains(p))
                    .ok_or_else(|| ConfigError(format!("{}: {value:?} is not a port", at())))?;
            } else if same(k, "ClusterServiceSharedLoadBalancerHealthProbePath") {
                self.shared_health_probe_path = value;
            } else if WITHOUT_EFFECT.iter().any(|w| same(k, w)) {
                warnings.push(format!(
                    "{}: has no effect in overcast's aws provider",
                    at()
                ));
            } else {
                warnings.push(format!("{}: unknown key, ignored", at()));
            }
        }
        Ok(())
    }

    fn service_override(
        &mut self,
        section: &Section,
        warnings: &mut Vec<String>,
    ) -> Result<(), ConfigError> {
        let name = section.subsection.clone().unwrap_or_default();
        let mut o = ServiceOverride {
            name: name.clone(),
            ..Default::default()
        };
        for e in &section.entries {
            let value = e.value.trim().to_string();
            let k = e.key.as_str();
            if same(k, "Service") {
                o.service = value;
            } else if same(k, "Region") {
                o.region = value;
            } else if same(k, "URL") {
                o.url = value;
            } else if same(k, "SigningRegion") {
                o.signing_region = value;
            } else if same(k, "SigningName") {
                o.signing_name = value;
            } else if same(k, "SigningMethod") {
                warnings.push(format!(
                    "[ServiceOverride {name:?}] SigningMethod (line {}): has no effect (upstream ignores it too)",
                    e.line
                ));
            } else {
                warnings.push(format!(
                    "[ServiceOverride {name:?}] {} (line {}): unknown key, ignored",
                    e.key, e.line
                ));
            }
        }
        for (field, value) in [
            ("Service", &o.service),
            ("Region", &o.region),
            ("URL", &o.url),
            ("SigningRegion", &o.signing_region),
        ] {
            if value.is_empty() {
                return Err(ConfigError(format!(
                    "[ServiceOverride {name:?}] (line {}): {field} is required",
                    section.line
                )));
            }
        }
        if ![SERVICE_EC2, SERVICE_ELB, SERVICE_ELBV2].contains(&o.service.as_str()) {
            warnings.push(format!(
                "[ServiceOverride {name:?}] Service {:?}: overcast calls only {SERVICE_EC2:?}, {SERVICE_ELB:?} and {SERVICE_ELBV2:?}; ignored",
                o.service
            ));
        }
        self.service_overrides.push(o);
        Ok(())
    }

    /// The cluster ID resources are tagged with, if configured.
    pub fn cluster_id(&self) -> Option<&str> {
        [&self.kubernetes_cluster_id, &self.kubernetes_cluster_tag]
            .into_iter()
            .find(|s| !s.is_empty())
            .map(String::as_str)
    }

    /// The configured region: from Zone when set (as upstream), else Region.
    pub fn configured_region(&self) -> Option<String> {
        if !self.zone.is_empty() {
            return Some(crate::instances::region_of_zone(&self.zone));
        }
        (!self.region.is_empty()).then(|| self.region.clone())
    }

    /// The override for `service` in `region`, if any.
    pub fn override_for(&self, service: &str, region: &str) -> Option<&ServiceOverride> {
        self.service_overrides
            .iter()
            .find(|o| o.service == service && o.region == region)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cloud_provider_aws_config_reads_as_upstream() {
        let text = r#"
[Global]
Zone = us-east-1a
VPC = vpc-0123
kubernetesclusterid = prod
RouteTableID = rtb-1
DisableSecurityGroupIngress = yes
RoleARN = arn:aws:iam::1:role/x
DisableStrictZoneCheck = true
Typo = 1

[ServiceOverride "1"]
Service = EC2
Region = us-east-1
URL = http://127.0.0.1:5000
SigningRegion = us-east-1
"#;
        let (c, warnings) = AwsConfig::parse(text.as_bytes()).unwrap();
        assert_eq!(c.cluster_id(), Some("prod"));
        assert_eq!(c.configured_region().as_deref(), Some("us-east-1"));
        assert_eq!(c.vpc, "vpc-0123");
        assert!(c.disable_security_group_ingress);
        assert_eq!(c.node_ip_families, ["ipv4"]);
        assert_eq!(
            c.override_for(SERVICE_EC2, "us-east-1").unwrap().url,
            "http://127.0.0.1:5000"
        );
        assert_eq!(
            warnings,
            [
                "[Global] RoleARN (line 8): has no effect in overcast's aws provider",
                "[Global] DisableStrictZoneCheck (line 9): has no effect in overcast's aws provider",
                "[Global] Typo (line 10): unknown key, ignored",
            ]
        );
    }

    #[test]
    fn the_shared_health_probe_is_read_and_a_mode_upstream_refuses_is_an_error() {
        let text = "[Global]\nClusterServiceLoadBalancerHealthProbeMode = Shared\nClusterServiceSharedLoadBalancerHealthProbePort = 10257\nClusterServiceSharedLoadBalancerHealthProbePath = /livez\n";
        let (c, warnings) = AwsConfig::parse(text.as_bytes()).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(c.shared_health_probe);
        assert_eq!(
            (
                c.shared_health_probe_port,
                c.shared_health_probe_path.as_str()
            ),
            (10257, "/livez")
        );
        let err =
            AwsConfig::parse(b"[Global]\nClusterServiceLoadBalancerHealthProbeMode = shared\n")
                .unwrap_err();
        assert_eq!(
            err.to_string(),
            "aws cloud config: [Global] ClusterServiceLoadBalancerHealthProbeMode (line 2): \"shared\" is not Shared or ServiceNodePort"
        );
    }

    #[test]
    fn the_nlb_security_group_mode_is_managed_or_unset() {
        let (c, warnings) =
            AwsConfig::parse(b"[Global]\nNLBSecurityGroupMode = Managed\n").unwrap();
        assert!(c.nlb_security_groups && warnings.is_empty(), "{warnings:?}");
        assert!(
            !AwsConfig::parse(b"[Global]\n")
                .unwrap()
                .0
                .nlb_security_groups
        );
        // Upstream's value check is exact (config_test.go: "managed" fails).
        let err = AwsConfig::parse(b"[Global]\nNLBSecurityGroupMode = managed\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "aws cloud config: [Global] NLBSecurityGroupMode (line 2): invalid NLB security group mode: \"managed\". Expected: \"Managed\""
        );
    }

    #[test]
    fn keys_read_but_without_effect_say_so() {
        let text = "[Global]\nSubnetID = subnet-1\nDisableSecurityGroupIngress = false\nNodeIPFamilies = ipv4\nNodeIPFamilies = ipv6\n";
        let (c, warnings) = AwsConfig::parse(text.as_bytes()).unwrap();
        assert!(!c.disable_security_group_ingress);
        assert_eq!(c.node_ip_families, ["ipv4", "ipv6"]);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with("[Global] SubnetID (line 2): has no effect"),
            "{warnings:?}"
        );
    }

    #[test]
    fn errors_name_section_key_and_line() {
        for (text, want) in [
            (
                "[Global]\nDisableSecurityGroupIngress = maybe",
                "[Global] DisableSecurityGroupIngress (line 2): \"maybe\" is not a boolean",
            ),
            (
                "[Global]\nKubernetesClusterTag = a\nKubernetesClusterID = b",
                "KubernetesClusterTag (\"a\") and KubernetesClusterID (\"b\") differ",
            ),
            (
                "[ServiceOverride \"x\"]\nService = EC2\nRegion = r\nURL = u",
                "[ServiceOverride \"x\"] (line 1): SigningRegion is required",
            ),
        ] {
            let err = AwsConfig::parse(text.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(want), "{text}\n got: {err}");
        }
    }
}
