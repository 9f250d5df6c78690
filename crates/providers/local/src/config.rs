//! The local provider's `--cloud-config` file (YAML), parsed and validated
//! whole: a file with any bad field is refused with the field's path, so a
//! reload never applies half an edit.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::time::Duration;

use overcast_cloud_provider::duration::parse_go_duration;
use serde::Deserialize;

use crate::pool::{AddressRange, Pool};

/// NodeAddress types (core/v1), the only ones an inventory may give.
const ADDRESS_TYPES: [&str; 5] = [
    "Hostname",
    "InternalIP",
    "ExternalIP",
    "InternalDNS",
    "ExternalDNS",
];

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("local cloud config: {0}")]
pub struct ConfigError(pub String);

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    instances: Vec<RawInstance>,
    #[serde(default)]
    load_balancer: RawLoadBalancer,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawInstance {
    #[serde(default)]
    name: String,
    #[serde(default, rename = "providerID")]
    provider_id: Option<String>,
    #[serde(default)]
    instance_type: String,
    #[serde(default)]
    region: String,
    #[serde(default)]
    zone: String,
    #[serde(default)]
    addresses: Vec<RawAddress>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAddress {
    #[serde(rename = "type", default)]
    type_: String,
    #[serde(default)]
    address: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawLoadBalancer {
    #[serde(default)]
    pools: Vec<RawPool>,
    #[serde(default)]
    interface: String,
    #[serde(default)]
    health_check: RawHealthCheck,
    #[serde(default)]
    udp_idle_timeout: Option<String>,
    #[serde(default)]
    vip_lifetime: Option<String>,
    #[serde(default, rename = "garpInterval")]
    garp_interval: Option<String>,
    #[serde(default)]
    tcp_idle_timeout: Option<String>,
    #[serde(default)]
    max_connections: Option<u32>,
    #[serde(default, rename = "maxUDPFlows")]
    max_udp_flows: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawPool {
    #[serde(default)]
    name: String,
    #[serde(default)]
    addresses: Vec<String>,
    #[serde(default)]
    namespaces: Vec<String>,
    #[serde(default, rename = "avoidBuggyIPs")]
    avoid_buggy_ips: bool,
    #[serde(default)]
    auto_assign: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawHealthCheck {
    interval: Option<String>,
    timeout: Option<String>,
    healthy_threshold: Option<u32>,
    unhealthy_threshold: Option<u32>,
}

/// A machine of the inventory.
#[derive(Clone, Debug, PartialEq)]
pub struct Instance {
    pub name: String,
    pub provider_id: String,
    pub instance_type: String,
    pub region: String,
    pub zone: String,
    /// (type, address), in the order written.
    pub addresses: Vec<(String, String)>,
    pub stopped: bool,
    pub labels: BTreeMap<String, String>,
}

/// Active health checks of the built-in load balancer's backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive successes that bring a backend back.
    pub healthy_threshold: u32,
    /// Consecutive failures that take a backend out.
    pub unhealthy_threshold: u32,
}

impl Default for HealthCheck {
    /// Cloud load balancers' usual figures (an NLB's: 10s, 2 and 2) with a
    /// shorter interval, since the checks run on the local network.
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            healthy_threshold: 2,
            unhealthy_threshold: 2,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct LoadBalancerConfig {
    pub pools: Vec<Pool>,
    /// Where VIPs are added and announced; empty: bind addresses the host
    /// already has (loopback, or ones configured by other means).
    pub interface: String,
    pub health_check: HealthCheck,
    /// How long a UDP flow with no packets keeps its backend.
    pub udp_idle_timeout: Duration,
    /// The lifetime of the VIPs added to `interface`, renewed by the
    /// leader: how long a killed leader's VIP stays behind. Keep it below
    /// the leader election's lease duration, so it is gone before a standby
    /// can take over.
    pub vip_lifetime: Duration,
    /// How often the leader announces its VIPs again (gratuitous ARP /
    /// unsolicited neighbour advertisement) after the first announcement,
    /// for switches and hosts that forget; zero: only when added.
    pub garp_interval: Duration,
    /// A TCP connection with no bytes either way for this long is closed
    /// (an NLB's fixed idle timeout is 350 s).
    pub tcp_idle_timeout: Duration,
    /// Open TCP connections per listener; more are closed at once.
    pub max_connections: usize,
    /// UDP flows (client addresses) per listener; datagrams from more are
    /// dropped until one ends.
    pub max_udp_flows: usize,
}

impl Default for LoadBalancerConfig {
    fn default() -> Self {
        Self {
            pools: Vec::new(),
            interface: String::new(),
            health_check: HealthCheck::default(),
            udp_idle_timeout: Duration::from_secs(60),
            vip_lifetime: crate::vip::DEFAULT_LIFETIME,
            garp_interval: Duration::from_secs(10),
            tcp_idle_timeout: Duration::from_secs(350),
            max_connections: 10_000,
            max_udp_flows: 10_000,
        }
    }
}

/// The whole, validated configuration.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LocalConfig {
    pub instances: Vec<Instance>,
    pub load_balancer: LoadBalancerConfig,
}

impl LocalConfig {
    pub fn parse(bytes: &[u8]) -> Result<Self, ConfigError> {
        let text =
            std::str::from_utf8(bytes).map_err(|e| ConfigError(format!("not UTF-8: {e}")))?;
        let raw: RawConfig = if text.trim().is_empty() {
            RawConfig::default()
        } else {
            overcast_cloud_provider::yaml::parse_yaml(text).map_err(|e| ConfigError(e.into()))?
        };
        validate(raw).map_err(ConfigError)
    }

    /// The machine behind a Node: by provider ID when the Node has one,
    /// else by name.
    pub fn instance(&self, node_name: &str, provider_id: Option<&str>) -> Option<&Instance> {
        match provider_id.filter(|p| !p.is_empty()) {
            Some(id) => self.instances.iter().find(|i| i.provider_id == id),
            None => self.instances.iter().find(|i| i.name == node_name),
        }
    }
}

fn validate(raw: RawConfig) -> Result<LocalConfig, String> {
    let mut instances = Vec::with_capacity(raw.instances.len());
    let mut names = HashSet::new();
    let mut ids = HashSet::new();
    for (i, inst) in raw.instances.into_iter().enumerate() {
        let at = format!("instances[{i}]");
        if inst.name.is_empty() {
            return Err(format!("{at}.name: required"));
        }
        if !names.insert(inst.name.clone()) {
            return Err(format!("{at}.name: {:?} is listed twice", inst.name));
        }
        let provider_id = inst
            .provider_id
            .unwrap_or_else(|| format!("{}://{}", crate::PROVIDER_NAME, inst.name));
        if !provider_id.starts_with(&format!("{}://", crate::PROVIDER_NAME)) {
            return Err(format!(
                "{at}.providerID: {provider_id:?} must start with \"{}://\"",
                crate::PROVIDER_NAME
            ));
        }
        if !ids.insert(provider_id.clone()) {
            return Err(format!("{at}.providerID: {provider_id:?} is listed twice"));
        }
        let mut addresses = Vec::new();
        for (j, a) in inst.addresses.into_iter().enumerate() {
            let at = format!("{at}.addresses[{j}]");
            if !ADDRESS_TYPES.contains(&a.type_.as_str()) {
                return Err(format!(
                    "{at}.type: {:?} is not one of {}",
                    a.type_,
                    ADDRESS_TYPES.join(", ")
                ));
            }
            if a.address.is_empty() {
                return Err(format!("{at}.address: required"));
            }
            if a.type_.ends_with("IP") && a.address.parse::<IpAddr>().is_err() {
                return Err(format!(
                    "{at}.address: {:?} is not an IP address",
                    a.address
                ));
            }
            addresses.push((a.type_, a.address));
        }
        let stopped = match inst.state.as_deref() {
            None | Some("running") => false,
            Some("stopped") => true,
            Some(other) => {
                return Err(format!("{at}.state: {other:?} is not running or stopped"));
            }
        };
        instances.push(Instance {
            name: inst.name,
            provider_id,
            instance_type: inst.instance_type,
            region: inst.region,
            zone: inst.zone,
            addresses,
            stopped,
            labels: inst.labels,
        });
    }

    let lb = raw.load_balancer;
    let mut pools: Vec<Pool> = Vec::with_capacity(lb.pools.len());
    for (i, p) in lb.pools.into_iter().enumerate() {
        let at = format!("loadBalancer.pools[{i}]");
        if p.name.is_empty() {
            return Err(format!("{at}.name: required"));
        }
        if pools.iter().any(|q| q.name == p.name) {
            return Err(format!("{at}.name: {:?} is listed twice", p.name));
        }
        if p.addresses.is_empty() {
            return Err(format!("{at}.addresses: a pool needs at least one address"));
        }
        let mut ranges = Vec::with_capacity(p.addresses.len());
        for (j, a) in p.addresses.iter().enumerate() {
            let range = AddressRange::parse(a).map_err(|e| format!("{at}.addresses[{j}]: {e}"))?;
            for (k, other) in pools.iter().enumerate() {
                if let Some(r) = other.ranges.iter().find(|r| r.overlaps(&range)) {
                    return Err(format!(
                        "{at}.addresses[{j}]: {range} overlaps {r} of loadBalancer.pools[{k}] ({:?})",
                        other.name
                    ));
                }
            }
            if let Some(r) = ranges.iter().find(|r: &&AddressRange| r.overlaps(&range)) {
                return Err(format!(
                    "{at}.addresses[{j}]: {range} overlaps {r} of the same pool"
                ));
            }
            ranges.push(range);
        }
        pools.push(Pool {
            name: p.name,
            ranges,
            namespaces: p.namespaces,
            avoid_buggy_ips: p.avoid_buggy_ips,
            auto_assign: p.auto_assign.unwrap_or(true),
        });
    }

    let defaults = HealthCheck::default();
    let hc = lb.health_check;
    let duration = |field: &str, value: Option<String>, default: Duration| match value {
        None => Ok(default),
        Some(v) => match parse_go_duration(&v) {
            Ok(d) if !d.is_zero() => Ok(d),
            Ok(_) => Err(format!("{field}: {v:?} must be greater than zero")),
            Err(e) => Err(format!("{field}: {e}")),
        },
    };
    let health_check = HealthCheck {
        interval: duration(
            "loadBalancer.healthCheck.interval",
            hc.interval,
            defaults.interval,
        )?,
        timeout: duration(
            "loadBalancer.healthCheck.timeout",
            hc.timeout,
            defaults.timeout,
        )?,
        healthy_threshold: threshold(
            "loadBalancer.healthCheck.healthyThreshold",
            hc.healthy_threshold,
            defaults.healthy_threshold,
        )?,
        unhealthy_threshold: threshold(
            "loadBalancer.healthCheck.unhealthyThreshold",
            hc.unhealthy_threshold,
            defaults.unhealthy_threshold,
        )?,
    };
    let udp_idle_timeout = duration(
        "loadBalancer.udpIdleTimeout",
        lb.udp_idle_timeout,
        LoadBalancerConfig::default().udp_idle_timeout,
    )?;
    let vip_lifetime = duration(
        "loadBalancer.vipLifetime",
        lb.vip_lifetime,
        LoadBalancerConfig::default().vip_lifetime,
    )?;
    let defaults_lb = LoadBalancerConfig::default();
    // Zero is allowed here: announcements only when a VIP is added.
    let garp_interval = match lb.garp_interval {
        None => defaults_lb.garp_interval,
        Some(v) => parse_go_duration(&v).map_err(|e| format!("loadBalancer.garpInterval: {e}"))?,
    };
    let tcp_idle_timeout = duration(
        "loadBalancer.tcpIdleTimeout",
        lb.tcp_idle_timeout,
        defaults_lb.tcp_idle_timeout,
    )?;
    let limit = |field: &str, value: Option<u32>, default: usize| match value {
        None => Ok(default),
        Some(0) => Err(format!("{field}: must be at least 1")),
        Some(n) => Ok(n as usize),
    };
    let max_connections = limit(
        "loadBalancer.maxConnections",
        lb.max_connections,
        defaults_lb.max_connections,
    )?;
    let max_udp_flows = limit(
        "loadBalancer.maxUDPFlows",
        lb.max_udp_flows,
        defaults_lb.max_udp_flows,
    )?;
    if vip_lifetime < Duration::from_secs(1) {
        return Err(format!(
            "loadBalancer.vipLifetime: {vip_lifetime:?} is below the 1s an address lifetime can have"
        ));
    }
    if lb.interface.contains(['/', ' ']) || lb.interface.len() > 15 {
        return Err(format!(
            "loadBalancer.interface: {:?} is not a network interface name",
            lb.interface
        ));
    }
    Ok(LocalConfig {
        instances,
        load_balancer: LoadBalancerConfig {
            pools,
            interface: lb.interface,
            health_check,
            udp_idle_timeout,
            vip_lifetime,
            garp_interval,
            tcp_idle_timeout,
            max_connections,
            max_udp_flows,
        },
    })
}

fn threshold(field: &str, value: Option<u32>, default: u32) -> Result<u32, String> {
    match value {
        None => Ok(default),
        Some(0) => Err(format!("{field}: must be at least 1")),
        Some(n) => Ok(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
instances:
  - name: worker-1
    providerID: local://worker-1
    instanceType: bm.large
    region: eu-home
    zone: rack-1
    addresses:
      - {type: InternalIP, address: 10.0.0.11}
    state: running
  - name: worker-2
    state: stopped
loadBalancer:
  pools:
    - name: default
      addresses: ["192.168.50.0/28", "192.168.50.100-192.168.50.120"]
      namespaces: []
    - name: reserved
      addresses: [192.168.51.7]
      autoAssign: false
  interface: ""
"#;

    #[test]
    fn the_documented_example_parses() {
        let c = LocalConfig::parse(EXAMPLE.as_bytes()).unwrap();
        assert_eq!(c.instances.len(), 2);
        assert_eq!(c.instances[0].provider_id, "local://worker-1");
        assert_eq!(c.instances[1].provider_id, "local://worker-2");
        assert!(c.instances[1].stopped);
        assert_eq!(c.load_balancer.pools[0].ranges.len(), 2);
        assert!(c.load_balancer.pools[0].auto_assign);
        assert!(!c.load_balancer.pools[1].auto_assign);
        assert_eq!(c.load_balancer.garp_interval, Duration::from_secs(10));
        let off = LocalConfig::parse(b"loadBalancer: {garpInterval: 0s}").unwrap();
        assert!(off.load_balancer.garp_interval.is_zero());
        assert_eq!(c.load_balancer.health_check, HealthCheck::default());
        assert_eq!(
            c.instance("x", Some("local://worker-1")).unwrap().name,
            "worker-1"
        );
        assert_eq!(c.instance("worker-2", None).unwrap().name, "worker-2");
        assert!(c.instance("worker-1", Some("local://other")).is_none());
    }

    #[test]
    fn an_empty_file_is_an_empty_inventory() {
        assert_eq!(LocalConfig::parse(b"").unwrap(), LocalConfig::default());
    }

    #[test]
    fn bad_fields_are_named_by_path() {
        let cases = [
            ("instances: [{zone: a}]", "instances[0].name: required"),
            (
                "instances: [{name: a}, {name: a}]",
                "instances[1].name: \"a\" is listed twice",
            ),
            (
                "instances: [{name: a, providerID: 'aws:///x'}]",
                "instances[0].providerID: \"aws:///x\" must start with \"local://\"",
            ),
            (
                "instances: [{name: a, addresses: [{type: Internal, address: 1.2.3.4}]}]",
                "instances[0].addresses[0].type: \"Internal\" is not one of",
            ),
            (
                "instances: [{name: a, addresses: [{type: InternalIP, address: nope}]}]",
                "instances[0].addresses[0].address: \"nope\" is not an IP address",
            ),
            (
                "instances: [{name: a, state: paused}]",
                "instances[0].state: \"paused\" is not running or stopped",
            ),
            (
                "loadBalancer: {pools: [{name: p, addresses: ['10.0.0.1/24']}]}",
                "loadBalancer.pools[0].addresses[0]: \"10.0.0.1/24\": host bits are set",
            ),
            (
                "loadBalancer: {pools: [{name: p, addresses: []}]}",
                "loadBalancer.pools[0].addresses: a pool needs at least one address",
            ),
            (
                "loadBalancer: {garpInterval: often}",
                "loadBalancer.garpInterval: ",
            ),
            (
                "loadBalancer: {pools: [{name: p, addresses: ['10.0.0.0/30']}, {name: q, addresses: ['10.0.0.3']}]}",
                "loadBalancer.pools[1].addresses[0]: 10.0.0.3 overlaps 10.0.0.0-10.0.0.3 of loadBalancer.pools[0] (\"p\")",
            ),
            (
                "loadBalancer: {healthCheck: {interval: often}}",
                "loadBalancer.healthCheck.interval: invalid duration \"often\"",
            ),
            (
                "loadBalancer: {healthCheck: {interval: 99999999999999999999h}}",
                "loadBalancer.healthCheck.interval: invalid duration \"99999999999999999999h\": out of range",
            ),
            (
                "loadBalancer: {healthCheck: {timeout: 0s}}",
                "loadBalancer.healthCheck.timeout: \"0s\" must be greater than zero",
            ),
            (
                "loadBalancer: {healthCheck: {unhealthyThreshold: 0}}",
                "loadBalancer.healthCheck.unhealthyThreshold: must be at least 1",
            ),
        ];
        for (input, want) in cases {
            let err = LocalConfig::parse(input.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{input}\n got: {err}\nwant: {want}");
        }
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let err = LocalConfig::parse(b"loadBalancer: {pool: []}")
            .unwrap_err()
            .to_string();
        assert!(err.contains("pool"), "{err}");
        let err = LocalConfig::parse(b"instances: [{name: a, zones: b}]")
            .unwrap_err()
            .to_string();
        assert!(err.contains("zones"), "{err}");
    }
}
