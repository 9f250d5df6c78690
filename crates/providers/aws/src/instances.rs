//! InstancesV2 on EC2, as cloud-provider-aws: an instance is found by the
//! Node's provider ID, or by its private DNS name when the Node has none; a
//! terminated (or missing) instance does not exist; a stopped one is shut
//! down.

use async_trait::async_trait;
use aws_sdk_ec2::types::{Filter, Instance, InstanceStateName};
use overcast_cloud_provider::k8s_openapi::api::core::v1::{Node, NodeAddress};
use overcast_cloud_provider::{CloudError, InstanceMetadata, InstancesV2, Result};

use crate::AwsCloud;
use crate::metrics::{aws_err, timed};

/// cloud-provider-aws's label for the availability zone's ID.
pub const LABEL_ZONE_ID: &str = "topology.k8s.aws/zone-id";

/// The instance ID in a provider ID: `aws:///<zone>/<id>`, `aws:////<id>`,
/// or a bare `i-...` (cloud-provider-aws's `MapToAWSInstanceID`).
pub fn instance_id_from_provider_id(provider_id: &str) -> std::result::Result<String, String> {
    let invalid = || format!("invalid format for AWS instance ({provider_id})");
    let path = match provider_id.strip_prefix("aws://") {
        Some(rest) => rest,
        None if provider_id.contains("://") => return Err(invalid()),
        None => provider_id,
    };
    let tokens: Vec<&str> = path.trim_matches('/').split('/').collect();
    let id = match tokens.as_slice() {
        [id] => *id,
        [_zone, id] => *id,
        _ => return Err(invalid()),
    };
    if !id.starts_with("i-") || id.len() < 3 {
        return Err(invalid());
    }
    Ok(id.to_string())
}

/// `aws:///<zone>/<id>`.
pub fn provider_id(zone: &str, id: &str) -> String {
    format!("aws:///{zone}/{id}")
}

/// The region of an availability zone ("us-east-1a" → "us-east-1"; local
/// and wavelength zones such as "us-east-1-bos-1a" keep their parent region).
pub fn region_of_zone(zone: &str) -> String {
    let mut parts = zone.splitn(4, '-');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(a), Some(b), Some(c)) => {
            let digits: String = c.chars().take_while(char::is_ascii_digit).collect();
            format!("{a}-{b}-{digits}")
        }
        _ => zone
            .trim_end_matches(|c: char| c.is_ascii_alphabetic())
            .to_string(),
    }
}

/// Node addresses as upstream's getInstanceNodeAddress: each family of
/// `NodeIPFamilies` in its order, `ipv4` the IPv4 addresses and names,
/// `ipv6` the first IPv6 address of each in-use interface.
pub fn node_addresses(instance: &Instance, families: &[String]) -> Result<Vec<NodeAddress>> {
    let mut out = Vec::new();
    for family in families {
        match family.as_str() {
            "ipv4" => out.extend(ipv4_addresses(instance)),
            "ipv6" => out.extend(ipv6_addresses(instance)?),
            _ => {}
        }
    }
    Ok(out)
}

/// upstream's extractIPv6NodeAddresses: an InternalIP per in-use interface
/// with an IPv6 address (its first), in the order EC2 lists them.
fn ipv6_addresses(instance: &Instance) -> Result<Vec<NodeAddress>> {
    let mut out = Vec::new();
    for interface in instance.network_interfaces() {
        if interface.status().map(|s| s.as_str()) != Some("in-use") {
            continue;
        }
        let Some(first) = interface
            .ipv6_addresses()
            .first()
            .and_then(|a| a.ipv6_address())
        else {
            continue;
        };
        let ip: std::net::Ipv6Addr = first.parse().map_err(|_| {
            CloudError::other(format!(
                "EC2 instance had invalid IPv6 address: {} ({first:?})",
                instance.instance_id().unwrap_or_default()
            ))
        })?;
        out.push(NodeAddress {
            type_: "InternalIP".into(),
            address: ip.to_string(),
        });
    }
    Ok(out)
}

/// upstream's extractIPv4NodeAddresses: InternalIPs of in-use interfaces by
/// device index (or the primary private IP), ExternalIP, InternalDNS and
/// Hostname from the private DNS name, ExternalDNS.
fn ipv4_addresses(instance: &Instance) -> Vec<NodeAddress> {
    let mut out = Vec::new();
    let mut push = |type_: &str, address: &str| {
        if !address.is_empty() {
            out.push(NodeAddress {
                type_: type_.to_string(),
                address: address.to_string(),
            });
        }
    };
    let interfaces = instance.network_interfaces();
    if interfaces.is_empty() {
        push(
            "InternalIP",
            instance.private_ip_address().unwrap_or_default(),
        );
    } else {
        let mut sorted: Vec<_> = interfaces.iter().collect();
        sorted.sort_by_key(|i| i.attachment().and_then(|a| a.device_index()).unwrap_or(0));
        for interface in sorted {
            if interface.status().map(|s| s.as_str()) != Some("in-use") {
                continue;
            }
            for ip in interface.private_ip_addresses() {
                push("InternalIP", ip.private_ip_address().unwrap_or_default());
            }
        }
    }
    push(
        "ExternalIP",
        instance.public_ip_address().unwrap_or_default(),
    );
    let private_dns = instance.private_dns_name().unwrap_or_default();
    push("InternalDNS", private_dns);
    push("Hostname", private_dns);
    push(
        "ExternalDNS",
        instance.public_dns_name().unwrap_or_default(),
    );
    out
}

fn state(instance: &Instance) -> Option<&InstanceStateName> {
    instance.state()?.name()
}

fn zone(instance: &Instance) -> &str {
    instance
        .placement()
        .and_then(|p| p.availability_zone())
        .unwrap_or_default()
}

impl AwsCloud {
    /// The Node's instance, or `None` when EC2 has none (never terminated
    /// ones found by DNS name: a new instance may reuse the name).
    async fn find_instance(&self, node: &Node) -> Result<Option<Instance>> {
        let ec2 = &self.clients().await?.ec2;
        let provider_id = node
            .spec
            .as_ref()
            .and_then(|s| s.provider_id.as_deref())
            .filter(|p| !p.is_empty());
        let request = match provider_id {
            Some(pid) => {
                let id = instance_id_from_provider_id(pid).map_err(CloudError::other)?;
                ec2.describe_instances().instance_ids(id)
            }
            None => {
                let name = node.metadata.name.as_deref().unwrap_or_default();
                ec2.describe_instances()
                    .filters(
                        Filter::builder()
                            .name("private-dns-name")
                            .values(name)
                            .build(),
                    )
                    .filters(
                        Filter::builder()
                            .name("instance-state-name")
                            .values("pending")
                            .values("running")
                            .values("shutting-down")
                            .values("stopping")
                            .values("stopped")
                            .build(),
                    )
            }
        };
        let reply = match timed("describe_instance", request.send()).await {
            Ok(r) => r,
            Err(e) => {
                let not_found = e
                    .as_service_error()
                    .and_then(|s| aws_sdk_ec2::error::ProvideErrorMetadata::code(s))
                    == Some("InvalidInstanceID.NotFound");
                if not_found {
                    return Ok(None);
                }
                return Err(aws_err(format!(
                    "describing the instance of Node {}",
                    node.metadata.name.as_deref().unwrap_or_default()
                ))(e));
            }
        };
        let mut found: Vec<Instance> = reply
            .reservations()
            .iter()
            .flat_map(|r| r.instances().iter().cloned())
            .collect();
        if found.len() > 1 {
            return Err(CloudError::other(format!(
                "Node {}: {} instances match",
                node.metadata.name.as_deref().unwrap_or_default(),
                found.len()
            )));
        }
        Ok(found.pop())
    }
}

#[async_trait]
impl InstancesV2 for AwsCloud {
    async fn instance_exists(&self, node: &Node) -> Result<bool> {
        Ok(self
            .find_instance(node)
            .await?
            .is_some_and(|i| state(&i) != Some(&InstanceStateName::Terminated)))
    }

    async fn instance_shutdown(&self, node: &Node) -> Result<bool> {
        Ok(self
            .find_instance(node)
            .await?
            .is_some_and(|i| state(&i) == Some(&InstanceStateName::Stopped)))
    }

    async fn instance_metadata(&self, node: &Node) -> Result<Option<InstanceMetadata>> {
        let Some(instance) = self.find_instance(node).await? else {
            return Err(CloudError::InstanceNotFound);
        };
        let zone = zone(&instance).to_string();
        let id = instance.instance_id().unwrap_or_default();
        // As upstream: the region is the cloud's, not parsed from the zone.
        let region = self.clients().await?.region.clone();
        let mut additional_labels = std::collections::BTreeMap::new();
        if let Some(zone_id) = self.zone_id(&zone).await? {
            additional_labels.insert(LABEL_ZONE_ID.to_string(), zone_id);
        }
        Ok(Some(InstanceMetadata {
            provider_id: provider_id(&zone, id),
            instance_type: instance
                .instance_type()
                .map(|t| t.as_str().to_string())
                .unwrap_or_default(),
            node_addresses: node_addresses(&instance, &self.config.node_ip_families)?,
            region,
            zone,
            additional_labels,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ec2::types::{
        InstanceIpv6Address, InstanceNetworkInterface, InstanceNetworkInterfaceAttachment,
        InstancePrivateIpAddress, NetworkInterfaceStatus,
    };

    #[test]
    fn provider_ids_in_every_form() {
        for (pid, want) in [
            ("aws:///us-east-1a/i-0abc", Ok("i-0abc")),
            ("aws:////i-0abc", Ok("i-0abc")),
            ("i-0abc", Ok("i-0abc")),
            ("aws:///us-east-1a/vol-1", Err(())),
            ("gce://p/z/i-1", Err(())),
            ("aws:///a/b/i-1", Err(())),
        ] {
            let got = instance_id_from_provider_id(pid);
            match want {
                Ok(id) => assert_eq!(got.unwrap(), id, "{pid}"),
                Err(()) => assert!(got.unwrap_err().contains(pid), "{pid}"),
            }
        }
    }

    #[test]
    fn regions_of_zones() {
        assert_eq!(region_of_zone("us-east-1a"), "us-east-1");
        assert_eq!(region_of_zone("eu-central-1c"), "eu-central-1");
        assert_eq!(region_of_zone("us-east-1-bos-1a"), "us-east-1");
        assert_eq!(region_of_zone("ap-southeast-2b"), "ap-southeast-2");
    }

    #[test]
    fn addresses_in_upstream_order() {
        let nic = |index: i32, status: &str, ips: &[&str]| {
            InstanceNetworkInterface::builder()
                .attachment(
                    InstanceNetworkInterfaceAttachment::builder()
                        .device_index(index)
                        .build(),
                )
                .status(NetworkInterfaceStatus::from(status))
                .set_private_ip_addresses(Some(
                    ips.iter()
                        .map(|ip| {
                            InstancePrivateIpAddress::builder()
                                .private_ip_address(*ip)
                                .build()
                        })
                        .collect(),
                ))
                .build()
        };
        let instance = Instance::builder()
            .network_interfaces(nic(1, "in-use", &["10.0.1.5"]))
            .network_interfaces(nic(0, "in-use", &["10.0.0.5", "10.0.0.6"]))
            .network_interfaces(nic(2, "detaching", &["10.0.2.5"]))
            .private_ip_address("10.0.0.5")
            .public_ip_address("203.0.113.9")
            .private_dns_name("ip-10-0-0-5.ec2.internal")
            .public_dns_name("ec2-203-0-113-9.compute-1.amazonaws.com")
            .build();
        let got: Vec<(String, String)> = node_addresses(&instance, &["ipv4".into()])
            .unwrap()
            .into_iter()
            .map(|a| (a.type_, a.address))
            .collect();
        let want = [
            ("InternalIP", "10.0.0.5"),
            ("InternalIP", "10.0.0.6"),
            ("InternalIP", "10.0.1.5"),
            ("ExternalIP", "203.0.113.9"),
            ("InternalDNS", "ip-10-0-0-5.ec2.internal"),
            ("Hostname", "ip-10-0-0-5.ec2.internal"),
            ("ExternalDNS", "ec2-203-0-113-9.compute-1.amazonaws.com"),
        ];
        assert_eq!(got, want.map(|(t, a)| (t.to_string(), a.to_string())));
    }

    #[test]
    fn ipv6_addresses_come_in_the_families_order_first_per_interface() {
        let nic = |status: &str, v6: &[&str]| {
            InstanceNetworkInterface::builder()
                .status(NetworkInterfaceStatus::from(status))
                .set_ipv6_addresses(Some(
                    v6.iter()
                        .map(|ip| InstanceIpv6Address::builder().ipv6_address(*ip).build())
                        .collect(),
                ))
                .private_ip_addresses(
                    InstancePrivateIpAddress::builder()
                        .private_ip_address("10.0.0.5")
                        .build(),
                )
                .build()
        };
        let instance = Instance::builder()
            .network_interfaces(nic("in-use", &["2001:db8:0:0::0:5", "2001:db8::6"]))
            .network_interfaces(nic("detaching", &["2001:db8::7"]))
            .network_interfaces(nic("in-use", &[]))
            .private_dns_name("ip-10-0-0-5.ec2.internal")
            .build();
        let got = |families: &[&str]| -> Vec<String> {
            let families: Vec<String> = families.iter().map(|f| f.to_string()).collect();
            node_addresses(&instance, &families)
                .unwrap()
                .into_iter()
                .map(|a| format!("{} {}", a.type_, a.address))
                .collect()
        };
        assert_eq!(
            got(&["ipv6", "ipv4"]),
            [
                "InternalIP 2001:db8::5",
                "InternalIP 10.0.0.5",
                "InternalIP 10.0.0.5",
                "InternalDNS ip-10-0-0-5.ec2.internal",
                "Hostname ip-10-0-0-5.ec2.internal",
            ]
        );
        assert_eq!(got(&["ipv6"]), ["InternalIP 2001:db8::5"]);
        let bad = Instance::builder()
            .instance_id("i-1")
            .network_interfaces(nic("in-use", &["2001:db8::zz"]))
            .build();
        let err = node_addresses(&bad, &["ipv6".into()])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("EC2 instance had invalid IPv6 address: i-1"),
            "{err}"
        );
    }
}
