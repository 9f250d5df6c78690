//! LoadBalancer through Classic ELBs, as cloud-provider-aws serves a
//! Service without `aws-load-balancer-type: nlb` (decided in clb_plan.rs):
//! the ELB named "a"+UID, its own security group `k8s-elb-<name>` (tagged
//! for the cluster) admitting the clients, and a rule in each instance's
//! security group admitting the ELB. Names are upstream's, so an ELB
//! cloud-provider-aws made is found and kept, never made twice.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use aws_sdk_ec2::types::{
    Filter, IpPermission, IpRange, ResourceType, TagSpecification, UserIdGroupPair,
};
use aws_sdk_elasticloadbalancing as elb;
use elb::error::ProvideErrorMetadata;
use elb::types::{
    AccessLog, ConnectionDraining, ConnectionSettings, CrossZoneLoadBalancing, HealthCheck,
    Instance, Listener, LoadBalancerAttributes, LoadBalancerDescription, PolicyAttribute, Tag,
};
use overcast_cloud_provider::k8s_openapi::api::core::v1::{LoadBalancerStatus, Node, Service};
use overcast_cloud_provider::{CloudError, LoadBalancerPreview, Result};

use crate::AwsCloud;
use crate::clb_plan::*;
use crate::loadbalancer::{instance_ids, status};
use crate::metrics::{aws_err, timed};
use crate::nlb_plan::{cluster_tag_key, service_key};
use crate::sg_plan;

/// What DescribeLoadBalancers says of an ELB.
struct Described {
    dns_name: Option<String>,
    listeners: Vec<ClbListener>,
    subnets: BTreeSet<String>,
    security_groups: Vec<String>,
    instances: BTreeSet<String>,
    health_check: Option<ClbHealthCheck>,
    /// Each listener's policy names, by its port.
    listener_policies: BTreeMap<i32, Vec<String>>,
    /// Each instance port with backend policies, and their names.
    backends: BTreeMap<i32, Vec<String>>,
    /// The policies made on the ELB (`Policies.OtherPolicies`).
    policies: BTreeSet<String>,
}

fn described(lb: &LoadBalancerDescription) -> Described {
    Described {
        dns_name: lb.dns_name().map(str::to_string),
        listeners: lb
            .listener_descriptions()
            .iter()
            .filter_map(|d| d.listener())
            .map(|l| ClbListener {
                lb_port: l.load_balancer_port(),
                instance_port: l.instance_port(),
                protocol: l.protocol().to_string(),
                instance_protocol: l.instance_protocol().unwrap_or(l.protocol()).to_string(),
                certificate: l.ssl_certificate_id().map(str::to_string),
            })
            .collect(),
        listener_policies: lb
            .listener_descriptions()
            .iter()
            .filter_map(|d| {
                Some((
                    d.listener()?.load_balancer_port(),
                    d.policy_names().to_vec(),
                ))
            })
            .collect(),
        backends: lb
            .backend_server_descriptions()
            .iter()
            .filter_map(|b| Some((b.instance_port()?, b.policy_names().to_vec())))
            .collect(),
        policies: lb
            .policies()
            .map(|p| p.other_policies().iter().cloned().collect())
            .unwrap_or_default(),
        subnets: lb.subnets().iter().cloned().collect(),
        security_groups: lb.security_groups().to_vec(),
        instances: lb
            .instances()
            .iter()
            .filter_map(|i| i.instance_id().map(str::to_string))
            .collect(),
        // moto has none until one is configured; AWS always answers one.
        health_check: lb.health_check().map(|h| ClbHealthCheck {
            target: h.target().to_string(),
            healthy: h.healthy_threshold(),
            unhealthy: h.unhealthy_threshold(),
            interval: h.interval(),
            timeout: h.timeout(),
        }),
    }
}

fn listener(l: &ClbListener) -> Result<Listener> {
    Listener::builder()
        .protocol(&l.protocol)
        .load_balancer_port(l.lb_port)
        .instance_protocol(&l.instance_protocol)
        .instance_port(l.instance_port)
        .set_ssl_certificate_id(l.certificate.clone())
        .build()
        .map_err(CloudError::from_err)
}

fn instances(ids: &BTreeSet<String>) -> Vec<Instance> {
    ids.iter()
        .map(|id| Instance::builder().instance_id(id).build())
        .collect()
}

/// The all-traffic rule an instance group gets from the ELB's group.
fn from_group(elb_group: &str) -> IpPermission {
    IpPermission::builder()
        .ip_protocol("-1")
        .user_id_group_pairs(UserIdGroupPair::builder().group_id(elb_group).build())
        .build()
}

fn ingress_permission(rule: &IngressRule) -> IpPermission {
    IpPermission::builder()
        .ip_protocol(&rule.protocol)
        .from_port(rule.from)
        .to_port(rule.to)
        .ip_ranges(IpRange::builder().cidr_ip(&rule.cidr).build())
        .build()
}

fn attributes(a: &ClbAttributes) -> LoadBalancerAttributes {
    LoadBalancerAttributes::builder()
        .cross_zone_load_balancing(
            CrossZoneLoadBalancing::builder()
                .enabled(a.cross_zone)
                .build(),
        )
        .connection_settings(
            ConnectionSettings::builder()
                .idle_timeout(a.idle_timeout)
                .build()
                .expect("idle timeout is set"),
        )
        .connection_draining(
            ConnectionDraining::builder()
                .enabled(a.draining)
                .set_timeout(a.draining_timeout)
                .build(),
        )
        .access_log(
            AccessLog::builder()
                .enabled(a.access_log)
                .set_emit_interval(a.access_log_interval)
                .set_s3_bucket_name(a.access_log_bucket.clone())
                .set_s3_bucket_prefix(a.access_log_prefix.clone())
                .build(),
        )
        .build()
}

/// Whether AWS's attributes already are what upstream sets (compared by
/// the fields it sets, not as a whole: AWS adds fields of its own).
fn attributes_match(have: &LoadBalancerAttributes, want: &ClbAttributes) -> bool {
    let cross_zone = have.cross_zone_load_balancing().map(|c| c.enabled());
    let idle = have.connection_settings().map(|c| c.idle_timeout());
    let draining = have.connection_draining().map(|d| d.enabled());
    let draining_timeout = have.connection_draining().and_then(|d| d.timeout());
    let log = have.access_log();
    cross_zone == Some(want.cross_zone)
        && idle == Some(want.idle_timeout)
        && draining == Some(want.draining)
        && (want.draining_timeout.is_none() || draining_timeout == want.draining_timeout)
        && log.map(|l| l.enabled()) == Some(want.access_log)
        && (!want.access_log
            || (log.and_then(|l| l.emit_interval()) == want.access_log_interval
                && log.and_then(|l| l.s3_bucket_name()) == want.access_log_bucket.as_deref()
                && log.and_then(|l| l.s3_bucket_prefix()) == want.access_log_prefix.as_deref()))
}

fn elb_code<E: ProvideErrorMetadata, R>(e: &elb::error::SdkError<E, R>) -> Option<&str> {
    e.as_service_error().and_then(|s| s.code())
}

fn ec2_code<E: ProvideErrorMetadata, R>(e: &aws_sdk_ec2::error::SdkError<E, R>) -> Option<&str> {
    e.as_service_error().and_then(|s| s.code())
}

impl AwsCloud {
    fn clb_settings(&self) -> ClbSettings {
        let nlb = self.nlb_settings();
        ClbSettings {
            shared_group: Some(self.config.elb_security_group.clone()).filter(|g| !g.is_empty()),
            shared_health_probe: nlb.shared_health_probe,
        }
    }

    async fn describe_clb(&self, name: &str) -> Result<Option<Described>> {
        let client = &self.clients().await?.elb_classic;
        match timed(
            "describe_load_balancers",
            client
                .describe_load_balancers()
                .load_balancer_names(name)
                .send(),
        )
        .await
        {
            Ok(reply) => Ok(reply.load_balancer_descriptions().last().map(described)),
            Err(e) if elb_code(&e) == Some("LoadBalancerNotFound") => Ok(None),
            Err(e) => Err(aws_err(format!("describing load balancer {name}"))(e)),
        }
    }

    /// The ELB's own group, by name, carrying this cluster's tag.
    pub(crate) async fn find_own_group(
        &self,
        name: &str,
        cluster_id: &str,
    ) -> Result<Option<String>> {
        let ec2 = &self.clients().await?.ec2;
        let reply = timed(
            "describe_security_groups",
            ec2.describe_security_groups()
                .filters(Filter::builder().name("group-name").values(name).build())
                .filters(
                    Filter::builder()
                        .name("tag-key")
                        .values(cluster_tag_key(cluster_id))
                        .build(),
                )
                .send(),
        )
        .await
        .map_err(aws_err(format!("describing security group {name}")))?;
        Ok(reply
            .security_groups()
            .iter()
            .find_map(|g| g.group_id().map(str::to_string)))
    }

    /// upstream's ensureSecurityGroup, then setSecurityGroupIngress: the
    /// group exists in the VPC and admits exactly what the plan says.
    pub(crate) async fn ensure_own_group(&self, group: &OwnGroup, vpc: &str) -> Result<String> {
        let ec2 = &self.clients().await?.ec2;
        let found = timed(
            "describe_security_groups",
            ec2.describe_security_groups()
                .filters(
                    Filter::builder()
                        .name("group-name")
                        .values(&group.name)
                        .build(),
                )
                .filters(Filter::builder().name("vpc-id").values(vpc).build())
                .send(),
        )
        .await
        .map_err(aws_err(format!("describing security group {}", group.name)))?;
        let existing = found.security_groups().first().cloned();
        let (id, actual) = match existing {
            Some(g) => {
                let id = g.group_id().unwrap_or_default().to_string();
                let mut actual = BTreeSet::new();
                for p in g.ip_permissions() {
                    for r in p.ip_ranges() {
                        actual.insert(IngressRule {
                            protocol: p.ip_protocol().unwrap_or_default().to_string(),
                            from: p.from_port().unwrap_or(-1),
                            to: p.to_port().unwrap_or(-1),
                            cidr: r.cidr_ip().unwrap_or_default().to_string(),
                        });
                    }
                }
                (id, actual)
            }
            None => {
                let tags = group
                    .tags
                    .iter()
                    .map(|(k, v)| aws_sdk_ec2::types::Tag::builder().key(k).value(v).build());
                let created = timed(
                    "create_security_group",
                    ec2.create_security_group()
                        .group_name(&group.name)
                        .description(&group.description)
                        .vpc_id(vpc)
                        .tag_specifications(
                            TagSpecification::builder()
                                .resource_type(ResourceType::SecurityGroup)
                                .set_tags(Some(tags.collect()))
                                .build(),
                        )
                        .send(),
                )
                .await
                .map_err(aws_err(format!("creating security group {}", group.name)))?;
                let id = created.group_id().unwrap_or_default().to_string();
                if id.is_empty() {
                    return Err(CloudError::other(format!(
                        "created security group, but id was not returned: {}",
                        group.name
                    )));
                }
                tracing::info!(group = %group.name, %id, "created security group for a Classic ELB");
                (id, BTreeSet::new())
            }
        };
        let (add, remove) = ingress_changes(&actual, &group.ingress);
        if !add.is_empty() {
            timed(
                "authorize_security_group_ingress",
                ec2.authorize_security_group_ingress()
                    .group_id(&id)
                    .set_ip_permissions(Some(add.iter().map(ingress_permission).collect()))
                    .send(),
            )
            .await
            .map_err(aws_err(format!(
                "creating ingress rules for security group {id}"
            )))?;
        }
        if !remove.is_empty() {
            timed(
                "revoke_security_group_ingress",
                ec2.revoke_security_group_ingress()
                    .group_id(&id)
                    .set_ip_permissions(Some(remove.iter().map(ingress_permission).collect()))
                    .send(),
            )
            .await
            .map_err(aws_err(format!(
                "revoking ingress rules of security group {id}"
            )))?;
        }
        Ok(id)
    }

    /// The groups with an ingress rule from `elb_group`, and whether each
    /// carries the cluster's tag.
    async fn groups_admitting(
        &self,
        elb_group: &str,
        cluster_id: &str,
    ) -> Result<BTreeMap<String, bool>> {
        let ec2 = &self.clients().await?.ec2;
        let reply = timed(
            "describe_security_groups",
            ec2.describe_security_groups()
                .filters(
                    Filter::builder()
                        .name("ip-permission.group-id")
                        .values(elb_group)
                        .build(),
                )
                .send(),
        )
        .await
        .map_err(aws_err(format!(
            "describing the security groups admitting {elb_group}"
        )))?;
        let key = cluster_tag_key(cluster_id);
        Ok(reply
            .security_groups()
            .iter()
            .filter_map(|g| {
                let tagged = g.tags().iter().any(|t| t.key() == Some(key.as_str()));
                Some((g.group_id()?.to_string(), tagged))
            })
            .collect())
    }

    /// upstream's updateInstanceSecurityGroupsForLoadBalancer: each
    /// instance's group admits the ELB's group; groups no instance needs
    /// any more lose the rule (untagged ones only when `deleting`).
    async fn sync_instance_rules(
        &self,
        elb_group: &str,
        targets: &BTreeSet<String>,
        cluster_id: &str,
        deleting: bool,
    ) -> Result<()> {
        if self.config.disable_security_group_ingress {
            return Ok(());
        }
        let mut wanted = BTreeSet::new();
        if !targets.is_empty() {
            let tagged: BTreeSet<String> = self
                .security_groups(cluster_id)
                .await?
                .into_iter()
                .filter(|g| g.tagged)
                .map(|g| g.id)
                .collect();
            for (instance, ids) in self.instance_groups(targets).await? {
                match sg_plan::group_for_instance(&instance, &ids, &tagged)
                    .map_err(CloudError::other)?
                {
                    Some(id) => {
                        wanted.insert(id.to_string());
                    }
                    None => tracing::warn!(%instance, "ignoring instance without security group"),
                }
            }
        }
        let referencing = self.groups_admitting(elb_group, cluster_id).await?;
        let (add, remove) = node_rule_changes(&referencing, &wanted, deleting);
        let ec2 = &self.clients().await?.ec2;
        for group in &add {
            if Some(group) == self.clb_settings().shared_group.as_ref() {
                continue;
            }
            timed(
                "authorize_security_group_ingress",
                ec2.authorize_security_group_ingress()
                    .group_id(group)
                    .ip_permissions(from_group(elb_group))
                    .send(),
            )
            .await
            .map_err(aws_err(format!(
                "error authorizing security group ingress in {group} from {elb_group}"
            )))?;
        }
        for group in &remove {
            match timed(
                "revoke_security_group_ingress",
                ec2.revoke_security_group_ingress()
                    .group_id(group)
                    .ip_permissions(from_group(elb_group))
                    .send(),
            )
            .await
            {
                Ok(_) => {}
                Err(e) if ec2_code(&e) == Some("InvalidPermission.NotFound") => {}
                Err(e) => {
                    return Err(aws_err(format!(
                        "revoking the ingress from {elb_group} in {group}"
                    ))(e));
                }
            }
        }
        if !add.is_empty() || !remove.is_empty() {
            tracing::info!(%elb_group, ?add, ?remove, "changed instance security group rules for a Classic ELB");
        }
        Ok(())
    }

    /// CreateLoadBalancerPolicy with one attribute, as upstream makes both
    /// of its policies (createProxyProtocolPolicy, ensureSSLNegotiationPolicy).
    async fn create_policy(
        &self,
        what: &str,
        lb: &str,
        policy: &str,
        type_name: &str,
        (attribute, value): (&str, &str),
    ) -> Result<()> {
        let client = &self.clients().await?.elb_classic;
        timed(
            "create_load_balancer_policy",
            client
                .create_load_balancer_policy()
                .load_balancer_name(lb)
                .policy_name(policy)
                .policy_type_name(type_name)
                .policy_attributes(
                    PolicyAttribute::builder()
                        .attribute_name(attribute)
                        .attribute_value(value)
                        .build(),
                )
                .send(),
        )
        .await
        .map_err(aws_err(format!(
            "error creating {what} on load balancer {lb}"
        )))?;
        Ok(())
    }

    /// upstream's proxy-protocol sync: the policy made once, then each
    /// listener's backend set to it (or cleared) where that differs.
    async fn sync_proxy_protocol(&self, plan: &ClbPlan, lb: &Described) -> Result<bool> {
        let changes = backend_policy_changes(&lb.backends, &plan.listeners, plan.proxy_protocol);
        if changes.is_empty() {
            return Ok(false);
        }
        let client = &self.clients().await?.elb_classic;
        if plan.proxy_protocol && !lb.policies.contains(PROXY_PROTOCOL_POLICY) {
            self.create_policy(
                "proxy protocol policy",
                &plan.name,
                PROXY_PROTOCOL_POLICY,
                "ProxyProtocolPolicyType",
                ("ProxyProtocol", "true"),
            )
            .await?;
        }
        for (port, names) in changes {
            timed(
                "set_load_balancer_policies_for_backend_server",
                client
                    .set_load_balancer_policies_for_backend_server()
                    .load_balancer_name(&plan.name)
                    .instance_port(port)
                    .set_policy_names(Some(names.clone()))
                    .send(),
            )
            .await
            .map_err(aws_err(format!(
                "error adjusting AWS loadbalancer backend policies of port {port} on {}",
                plan.name
            )))?;
            tracing::info!(name = %plan.name, port, policies = ?names, "set the backend policies of a Classic ELB");
        }
        Ok(true)
    }

    /// upstream's ensureSSLNegotiationPolicy and setSSLNegotiationPolicy:
    /// the policy `k8s-SSLNegotiationPolicy-<value>` made once, then set on
    /// each TLS listener that does not have just it.
    async fn sync_ssl_policy(&self, plan: &ClbPlan, lb: &Described) -> Result<()> {
        let Some(reference) = &plan.ssl_policy else {
            return Ok(());
        };
        let name = ssl_negotiation_policy_name(reference);
        let ports = ssl_policy_changes(&lb.listeners, &lb.listener_policies, &name);
        if ports.is_empty() {
            return Ok(());
        }
        let client = &self.clients().await?.elb_classic;
        if !lb.policies.contains(&name) {
            self.create_policy(
                &format!("security policy {name}"),
                &plan.name,
                &name,
                "SSLNegotiationPolicyType",
                ("Reference-Security-Policy", reference),
            )
            .await?;
        }
        for port in ports {
            timed(
                "set_load_balancer_policies_of_listener",
                client
                    .set_load_balancer_policies_of_listener()
                    .load_balancer_name(&plan.name)
                    .load_balancer_port(port)
                    .policy_names(&name)
                    .send(),
            )
            .await
            .map_err(aws_err(format!(
                "error setting SSL negotiation policy '{name}' on listener {port} of load balancer {}",
                plan.name
            )))?;
            tracing::info!(name = %plan.name, port, policy = %name, "set the SSL negotiation policy of a Classic ELB listener");
        }
        Ok(())
    }

    /// upstream's removeOwnedSecurityGroups for an ELB whose own group is
    /// no longer one of `groups` (the Service names groups of its own, or
    /// `ElbSecurityGroup` came): the group loses the instances' rules that
    /// admit it, then goes. Found by name, so a kill after it left the ELB
    /// still finds it.
    async fn remove_former_own_group(
        &self,
        name: &str,
        groups: &[String],
        cluster_id: &str,
    ) -> Result<()> {
        let Some(group) = self
            .find_own_group(&format!("k8s-elb-{name}"), cluster_id)
            .await?
            .filter(|g| !groups.contains(g))
        else {
            return Ok(());
        };
        self.sync_instance_rules(&group, &BTreeSet::new(), cluster_id, true)
            .await?;
        self.delete_own_group(&group, name).await
    }

    pub(crate) async fn delete_own_group(&self, group: &str, name: &str) -> Result<()> {
        let ec2 = &self.clients().await?.ec2;
        match timed(
            "delete_security_group",
            ec2.delete_security_group().group_id(group).send(),
        )
        .await
        {
            Ok(_) => {
                tracing::info!(%group, "deleted the security group of a Classic ELB");
                Ok(())
            }
            Err(e) if ec2_code(&e) == Some("InvalidGroup.NotFound") => Ok(()),
            // The ELB's network interfaces take a while to go: retry later.
            Err(e) if ec2_code(&e) == Some("DependencyViolation") => Err(CloudError::retry(
                format!("security group {group} of load balancer {name} is still in use"),
                Duration::from_secs(5),
            )),
            Err(e) => Err(aws_err(format!(
                "error while deleting load balancer security group ({group})"
            ))(e)),
        }
    }

    async fn register_instances(
        &self,
        name: &str,
        have: &BTreeSet<String>,
        want: &BTreeSet<String>,
    ) -> Result<()> {
        let client = &self.clients().await?.elb_classic;
        let add: BTreeSet<String> = want.difference(have).cloned().collect();
        let remove: BTreeSet<String> = have.difference(want).cloned().collect();
        if !add.is_empty() {
            timed(
                "register_instances_with_load_balancer",
                client
                    .register_instances_with_load_balancer()
                    .load_balancer_name(name)
                    .set_instances(Some(instances(&add)))
                    .send(),
            )
            .await
            .map_err(aws_err(format!("registering instances with {name}")))?;
        }
        if !remove.is_empty() {
            timed(
                "deregister_instances_from_load_balancer",
                client
                    .deregister_instances_from_load_balancer()
                    .load_balancer_name(name)
                    .set_instances(Some(instances(&remove)))
                    .send(),
            )
            .await
            .map_err(aws_err(format!("deregistering instances from {name}")))?;
        }
        Ok(())
    }

    /// upstream's EnsureLoadBalancer for a Classic ELB.
    pub(crate) async fn ensure_clb(
        &self,
        service: &Service,
        nodes: &[&Node],
    ) -> Result<LoadBalancerStatus> {
        let cluster_id = self.cluster_id_required()?.to_string();
        let plan = plan_classic(service, &cluster_id, &self.clb_settings())?;
        let key = service_key(service);
        let client = &self.clients().await?.elb_classic;
        let targets = instance_ids(nodes, &plan.target_node_labels);
        let vpc = self.vpc_id(nodes).await?;
        let own_id = match &plan.own_group {
            Some(own) => Some(self.ensure_own_group(own, &vpc).await?),
            None => None,
        };
        let groups = plan.security_groups(own_id.as_deref());
        // The group the instances admit: the ELB's own, the shared one,
        // or the first of the Service's.
        let group = groups.first().cloned().ok_or_else(|| {
            CloudError::other(format!(
                "load balancer {} would have no security group",
                plan.name
            ))
        })?;
        let subnets = if plan.subnets.is_empty() {
            self.discover_subnets(&vpc, plan.internal, &cluster_id)
                .await?
        } else {
            plan.subnets.clone()
        };
        let listeners: Vec<Listener> =
            plan.listeners.iter().map(listener).collect::<Result<_>>()?;
        let lb = match self.describe_clb(&plan.name).await? {
            None => {
                let tags = plan
                    .tags
                    .iter()
                    .map(|(k, v)| Tag::builder().key(k).value(v).build())
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(CloudError::from_err)?;
                let mut create = client
                    .create_load_balancer()
                    .load_balancer_name(&plan.name)
                    .set_listeners(Some(listeners))
                    .set_subnets(Some(subnets.clone()))
                    .set_security_groups(Some(groups.clone()))
                    .set_tags(Some(tags));
                // Upstream leaves internet-facing to AWS's default.
                if plan.internal {
                    create = create.scheme("internal");
                }
                timed("create_load_balancer", create.send())
                    .await
                    .map_err(aws_err(format!("creating load balancer {}", plan.name)))?;
                tracing::info!(service = %key, name = %plan.name, ?subnets, "created classic load balancer");
                let made = self.describe_clb(&plan.name).await?.ok_or_else(|| {
                    CloudError::other(format!(
                        "load balancer {} vanished after creation",
                        plan.name
                    ))
                })?;
                if self.sync_proxy_protocol(&plan, &made).await? {
                    self.describe_clb(&plan.name).await?.unwrap_or(made)
                } else {
                    made
                }
            }
            Some(lb) => {
                let wanted: BTreeSet<String> = subnets.iter().cloned().collect();
                let detach: Vec<String> = lb.subnets.difference(&wanted).cloned().collect();
                let attach: Vec<String> = wanted.difference(&lb.subnets).cloned().collect();
                if !detach.is_empty() {
                    timed(
                        "detach_load_balancer_from_subnets",
                        client
                            .detach_load_balancer_from_subnets()
                            .load_balancer_name(&plan.name)
                            .set_subnets(Some(detach))
                            .send(),
                    )
                    .await
                    .map_err(aws_err(format!("detaching {} from subnets", plan.name)))?;
                }
                if !attach.is_empty() {
                    timed(
                        "attach_load_balancer_to_subnets",
                        client
                            .attach_load_balancer_to_subnets()
                            .load_balancer_name(&plan.name)
                            .set_subnets(Some(attach))
                            .send(),
                    )
                    .await
                    .map_err(aws_err(format!("attaching {} to subnets", plan.name)))?;
                }
                let detached = detached_groups(&lb.security_groups, &groups);
                if !detached.is_empty() {
                    // The new group admitted first; the old ones' rules
                    // revoked while the ELB still names them, so a kill in
                    // between leaves them to be found again (upstream
                    // revokes after, and a kill there leaks the rules).
                    self.sync_instance_rules(&group, &targets, &cluster_id, false)
                        .await?;
                    for old in &detached {
                        self.sync_instance_rules(old, &BTreeSet::new(), &cluster_id, false)
                            .await?;
                    }
                }
                let attached: BTreeSet<&String> = lb.security_groups.iter().collect();
                if attached != groups.iter().collect::<BTreeSet<_>>() {
                    timed(
                        "apply_security_groups_to_load_balancer",
                        client
                            .apply_security_groups_to_load_balancer()
                            .load_balancer_name(&plan.name)
                            .set_security_groups(Some(groups.clone()))
                            .send(),
                    )
                    .await
                    .map_err(aws_err(format!(
                        "applying security groups to {}",
                        plan.name
                    )))?;
                }
                let (remove, add) = listener_changes(&lb.listeners, &plan.listeners);
                let listeners_changed = !remove.is_empty() || !add.is_empty();
                // One port per call: moto mishandles several in one.
                for port in remove {
                    timed(
                        "delete_load_balancer_listeners",
                        client
                            .delete_load_balancer_listeners()
                            .load_balancer_name(&plan.name)
                            .load_balancer_ports(port)
                            .send(),
                    )
                    .await
                    .map_err(aws_err(format!(
                        "deleting listener {port} of {}",
                        plan.name
                    )))?;
                }
                if !add.is_empty() {
                    timed(
                        "create_load_balancer_listeners",
                        client
                            .create_load_balancer_listeners()
                            .load_balancer_name(&plan.name)
                            .set_listeners(Some(add.iter().map(listener).collect::<Result<_>>()?))
                            .send(),
                    )
                    .await
                    .map_err(aws_err(format!("creating listeners of {}", plan.name)))?;
                }
                if !plan.additional_tags.is_empty() {
                    let tags = plan
                        .additional_tags
                        .iter()
                        .map(|(k, v)| Tag::builder().key(k).value(v).build())
                        .collect::<std::result::Result<Vec<_>, _>>()
                        .map_err(CloudError::from_err)?;
                    timed(
                        "add_tags",
                        client
                            .add_tags()
                            .load_balancer_names(&plan.name)
                            .set_tags(Some(tags))
                            .send(),
                    )
                    .await
                    .map_err(aws_err(format!("adding tags to {}", plan.name)))?;
                }
                // Listeners made again lost their policies: read them anew.
                let lb = if listeners_changed {
                    self.describe_clb(&plan.name).await?.unwrap_or(lb)
                } else {
                    lb
                };
                if self.sync_proxy_protocol(&plan, &lb).await? {
                    self.describe_clb(&plan.name).await?.unwrap_or(lb)
                } else {
                    lb
                }
            }
        };

        let have = timed(
            "describe_load_balancer_attributes",
            client
                .describe_load_balancer_attributes()
                .load_balancer_name(&plan.name)
                .send(),
        )
        .await
        .map_err(aws_err(format!("reading the attributes of {}", plan.name)))?;
        if !have
            .load_balancer_attributes()
            .is_some_and(|a| attributes_match(a, &plan.attributes))
        {
            timed(
                "modify_load_balancer_attributes",
                client
                    .modify_load_balancer_attributes()
                    .load_balancer_name(&plan.name)
                    .load_balancer_attributes(attributes(&plan.attributes))
                    .send(),
            )
            .await
            .map_err(aws_err(format!(
                "Unable to update load balancer attributes during attribute sync of {}",
                plan.name
            )))?;
        }
        if lb.health_check.as_ref() != Some(&plan.health_check) {
            let hc = &plan.health_check;
            timed(
                "configure_health_check",
                client
                    .configure_health_check()
                    .load_balancer_name(&plan.name)
                    .health_check(
                        HealthCheck::builder()
                            .target(&hc.target)
                            .healthy_threshold(hc.healthy)
                            .unhealthy_threshold(hc.unhealthy)
                            .interval(hc.interval)
                            .timeout(hc.timeout)
                            .build()
                            .map_err(CloudError::from_err)?,
                    )
                    .send(),
            )
            .await
            .map_err(aws_err(format!(
                "error configuring load balancer health check for {:?}",
                plan.name
            )))?;
        }
        self.sync_ssl_policy(&plan, &lb).await?;
        self.sync_instance_rules(&group, &targets, &cluster_id, false)
            .await?;
        self.register_instances(&plan.name, &lb.instances, &targets)
            .await?;
        // Last, once the ELB serves through its new groups.
        if plan.own_group.is_none() {
            self.remove_former_own_group(&plan.name, &groups, &cluster_id)
                .await?;
        }
        Ok(status(lb.dns_name.as_deref()))
    }

    /// upstream's UpdateLoadBalancer for a Classic ELB: the instances and
    /// their groups' rules only.
    pub(crate) async fn update_clb(&self, service: &Service, nodes: &[&Node]) -> Result<()> {
        let cluster_id = self.cluster_id_required()?.to_string();
        let plan = plan_classic(service, &cluster_id, &self.clb_settings())?;
        let Some(lb) = self.describe_clb(&plan.name).await? else {
            return Err(CloudError::other(format!(
                "Load balancer not found: {}",
                plan.name
            )));
        };
        self.sync_ssl_policy(&plan, &lb).await?;
        let targets = instance_ids(nodes, &plan.target_node_labels);
        self.register_instances(&plan.name, &lb.instances, &targets)
            .await?;
        if let Some(group) = plan.source_group(&lb.security_groups) {
            self.sync_instance_rules(&group, &targets, &cluster_id, false)
                .await?;
        }
        Ok(())
    }

    /// Whether anything made for the Service's Classic ELB remains: the ELB,
    /// or its own security group (a deletion stopped between the two).
    pub(crate) async fn get_clb(&self, service: &Service) -> Result<Option<LoadBalancerStatus>> {
        let name = overcast_cloud_provider::default_load_balancer_name(service);
        if let Some(lb) = self.describe_clb(&name).await? {
            return Ok(Some(status(lb.dns_name.as_deref())));
        }
        let Some(cluster_id) = self.config.cluster_id() else {
            return Ok(None);
        };
        // A group the Service names stays when it goes (delete_clb).
        let plan = plan_classic(service, cluster_id, &self.clb_settings()).ok();
        let left = self
            .find_own_group(&format!("k8s-elb-{name}"), cluster_id)
            .await?
            .filter(|g| !plan.as_ref().is_some_and(|p| p.names_group(g)));
        Ok(left.map(|_| LoadBalancerStatus::default()))
    }

    /// upstream's EnsureLoadBalancerDeleted for a Classic ELB: the
    /// instances' rules from its groups, the ELB, then its own group. The
    /// group is found by name too, so a deletion interrupted after the ELB
    /// went still removes it (upstream leaks it then); a group the Service
    /// names is never deleted, even the ELB's own.
    pub(crate) async fn delete_clb(&self, service: &Service) -> Result<()> {
        let Some(cluster_id) = self.config.cluster_id().map(str::to_string) else {
            return Ok(());
        };
        let name = overcast_cloud_provider::default_load_balancer_name(service);
        let lb = self.describe_clb(&name).await?;
        let attached = lb
            .as_ref()
            .map(|l| l.security_groups.clone())
            .unwrap_or_default();
        let plan = plan_classic(service, &cluster_id, &self.clb_settings()).ok();
        let own = self
            .find_own_group(&format!("k8s-elb-{name}"), &cluster_id)
            .await?
            .filter(|g| !plan.as_ref().is_some_and(|p| p.names_group(g)));
        // The group the instances admit, and the ELB's own if it is
        // another (left from before the Service named groups of its own).
        let source = plan
            .as_ref()
            .and_then(|p| p.source_group(&attached))
            .or_else(|| attached.first().cloned());
        let mut admitted: Vec<(String, bool)> = Vec::new();
        if let Some(source) = &source {
            admitted.push((source.clone(), own.as_ref() == Some(source)));
        }
        if let Some(own) = own.as_ref().filter(|o| source.as_ref() != Some(*o)) {
            admitted.push((own.clone(), true));
        }
        for (group, ours) in &admitted {
            self.sync_instance_rules(group, &BTreeSet::new(), &cluster_id, *ours)
                .await?;
        }
        let client = &self.clients().await?.elb_classic;
        if lb.is_some() {
            timed(
                "delete_load_balancer",
                client
                    .delete_load_balancer()
                    .load_balancer_name(&name)
                    .send(),
            )
            .await
            .map_err(aws_err(format!("deleting load balancer {name}")))?;
            tracing::info!(service = %service_key(service), %name, "deleted classic load balancer");
        }
        match own {
            Some(group) => self.delete_own_group(&group, &name).await,
            None => Ok(()),
        }
    }

    /// What ensure would change, by Describe calls only: a new ELB, or the
    /// listeners, health check and instances it would change.
    pub(crate) async fn preview_clb(
        &self,
        service: &Service,
        nodes: &[&Node],
    ) -> Result<LoadBalancerPreview> {
        let cluster_id = self.cluster_id_required()?.to_string();
        let plan = plan_classic(service, &cluster_id, &self.clb_settings())?;
        let Some(lb) = self.describe_clb(&plan.name).await? else {
            return Ok(LoadBalancerPreview::default());
        };
        let mut changes = Vec::new();
        let (remove, add) = listener_changes(&lb.listeners, &plan.listeners);
        for port in remove {
            changes.push(format!("listener {port} would be deleted"));
        }
        for l in add {
            changes.push(format!(
                "listener {}/{} -> {} would be made",
                l.lb_port, l.protocol, l.instance_port
            ));
        }
        for (port, names) in
            backend_policy_changes(&lb.backends, &plan.listeners, plan.proxy_protocol)
        {
            changes.push(format!(
                "backend port {port} would get the policies {names:?}"
            ));
        }
        if let Some(reference) = &plan.ssl_policy {
            let name = ssl_negotiation_policy_name(reference);
            for port in ssl_policy_changes(&plan.listeners, &lb.listener_policies, &name) {
                changes.push(format!("listener {port} would get the policy {name}"));
            }
        }
        if lb.health_check.as_ref() != Some(&plan.health_check) {
            changes.push(format!(
                "health check would be {}",
                plan.health_check.target
            ));
        }
        let targets = instance_ids(nodes, &plan.target_node_labels);
        let register: Vec<&String> = targets.difference(&lb.instances).collect();
        let deregister: Vec<&String> = lb.instances.difference(&targets).collect();
        if !register.is_empty() {
            changes.push(format!("would register {register:?}"));
        }
        if !deregister.is_empty() {
            changes.push(format!("would deregister {deregister:?}"));
        }
        Ok(LoadBalancerPreview {
            status: Some(status(lb.dns_name.as_deref())),
            changes,
        })
    }
}
