//! LoadBalancer through ELBv2 Network Load Balancers, as cloud-provider-aws
//! (for Services annotated `aws-load-balancer-type: nlb`). Every resource is
//! named deterministically (the LB "a"+UID, target groups by a hash of what
//! defines them) and tagged with the cluster and the Service, so a restart
//! finds them and deletion finds every one, even after a crash mid-way.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use aws_sdk_ec2::types::Filter;
use aws_sdk_elasticloadbalancingv2 as elbv2;
use elbv2::error::ProvideErrorMetadata;
use elbv2::types::{
    Action, ActionTypeEnum, Certificate, Listener, LoadBalancerAttribute, LoadBalancerSchemeEnum,
    LoadBalancerTypeEnum, ProtocolEnum, SubnetMapping, Tag, TargetDescription,
    TargetGroupAttribute, TargetTypeEnum,
};
use overcast_cloud_provider::k8s_openapi::api::core::v1::{
    LoadBalancerIngress, LoadBalancerStatus, Node, Service,
};
use overcast_cloud_provider::{CloudError, LoadBalancer, LoadBalancerPreview, Result};

use crate::AwsCloud;
use crate::instances::instance_id_from_provider_id;
use crate::metrics::{aws_err, timed};
use crate::nlb_plan::*;

use crate::sg_plan;

fn code<E: ProvideErrorMetadata, R>(e: &elbv2::error::SdkError<E, R>) -> Option<&str> {
    e.as_service_error().and_then(|s| s.code())
}

fn tags(map: &BTreeMap<String, String>) -> Vec<Tag> {
    map.iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

/// Attributes as AWS reports them (key, value), by key.
fn attribute_map<'a>(
    pairs: impl Iterator<Item = (Option<&'a str>, Option<&'a str>)>,
) -> BTreeMap<String, String> {
    pairs
        .filter_map(|(k, v)| Some((k?.to_string(), v.unwrap_or_default().to_string())))
        .collect()
}

pub(crate) fn status(dns_name: Option<&str>) -> LoadBalancerStatus {
    LoadBalancerStatus {
        ingress: dns_name.filter(|d| !d.is_empty()).map(|d| {
            vec![LoadBalancerIngress {
                hostname: Some(d.to_string()),
                ..Default::default()
            }]
        }),
    }
}

/// The instance IDs behind the Nodes (those with an AWS provider ID).
pub(crate) fn instance_ids(nodes: &[&Node], filter: &BTreeMap<String, String>) -> BTreeSet<String> {
    nodes
        .iter()
        .filter(|n| node_selected(n, filter))
        .filter_map(|n| n.spec.as_ref()?.provider_id.as_deref())
        .filter_map(|pid| instance_id_from_provider_id(pid).ok())
        .collect()
}

struct Found {
    arn: String,
    dns_name: Option<String>,
    state: Option<String>,
    /// Its subnets, where health checks come from.
    subnets: Vec<String>,
    /// The Elastic IP allocations and private addresses of its subnets.
    allocations: Vec<String>,
    private_addresses: Vec<String>,
    /// Its security groups (none unless made with some).
    security_groups: Vec<String>,
}

/// An NLB's addresses of one kind over its zones, sorted.
fn addresses_of(
    lb: &elbv2::types::LoadBalancer,
    pick: impl Fn(&elbv2::types::LoadBalancerAddress) -> Option<&str>,
) -> Vec<String> {
    let mut out: Vec<String> = lb
        .availability_zones()
        .iter()
        .flat_map(|z| z.load_balancer_addresses())
        .filter_map(|a| pick(a).map(str::to_string))
        .collect();
    out.sort();
    out
}

fn subnets_of(lb: &elbv2::types::LoadBalancer) -> Vec<String> {
    lb.availability_zones()
        .iter()
        .filter_map(|z| z.subnet_id().map(str::to_string))
        .collect()
}

impl Found {
    /// The DNS name goes into the status while the NLB is provisioning or
    /// active, as upstream.
    fn status(&self) -> LoadBalancerStatus {
        match self.state.as_deref() {
            None | Some("active" | "provisioning") => status(self.dns_name.as_deref()),
            Some(_) => status(None),
        }
    }
}

impl AwsCloud {
    pub(crate) fn nlb_settings(&self) -> NlbSettings {
        let c = &self.config;
        NlbSettings {
            security_group_ingress: !c.disable_security_group_ingress,
            own_groups: c.nlb_security_groups,
            shared_health_probe: c.shared_health_probe.then(|| {
                let port = if c.shared_health_probe_port == 0 {
                    10256
                } else {
                    c.shared_health_probe_port
                };
                let path = if c.shared_health_probe_path.is_empty() {
                    "/healthz".to_string()
                } else {
                    c.shared_health_probe_path.clone()
                };
                (port, path)
            }),
        }
    }

    pub(crate) fn cluster_id_required(&self) -> Result<&str> {
        self.config.cluster_id().ok_or_else(|| {
            CloudError::other("no cluster ID: set [Global] KubernetesClusterID in --cloud-config")
        })
    }

    async fn find_load_balancer(&self, name: &str) -> Result<Option<Found>> {
        let elb = &self.clients().await?.elb;
        match timed(
            "describe_load_balancers",
            elb.describe_load_balancers().names(name).send(),
        )
        .await
        {
            Ok(reply) => Ok(reply.load_balancers().first().map(|lb| Found {
                arn: lb.load_balancer_arn().unwrap_or_default().to_string(),
                dns_name: lb.dns_name().map(str::to_string),
                state: lb
                    .state()
                    .and_then(|s| s.code())
                    .map(|c| c.as_str().to_string()),
                subnets: subnets_of(lb),
                allocations: addresses_of(lb, |a| a.allocation_id()),
                private_addresses: addresses_of(lb, |a| a.private_ipv4_address()),
                security_groups: lb.security_groups().to_vec(),
            })),
            Err(e) if code(&e) == Some("LoadBalancerNotFound") => Ok(None),
            Err(e) => Err(aws_err(format!("describing load balancer {name}"))(e)),
        }
    }

    /// The VPC: configured, else the one of the first Node's instance.
    pub(crate) async fn vpc_id(&self, nodes: &[&Node]) -> Result<String> {
        if !self.config.vpc.is_empty() {
            return Ok(self.config.vpc.clone());
        }
        let ec2 = &self.clients().await?.ec2;
        let Some(id) = instance_ids(nodes, &BTreeMap::new()).into_iter().next() else {
            return Err(CloudError::other(
                "cannot tell the VPC: no [Global] VPC in --cloud-config and no Node with an AWS provider ID",
            ));
        };
        let reply = timed(
            "describe_instance",
            ec2.describe_instances().instance_ids(&id).send(),
        )
        .await
        .map_err(aws_err(format!("describing instance {id}")))?;
        reply
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .find_map(|i| i.vpc_id())
            .map(str::to_string)
            .ok_or_else(|| CloudError::other(format!("instance {id} has no VPC")))
    }

    /// Upstream's subnet discovery: subnets of the VPC that carry this
    /// cluster's tag or no cluster tag at all; for an internet-facing LB only
    /// public ones (a route to an internet gateway); one per zone, preferring
    /// the role tag, then the cluster tag, then the lowest ID.
    pub(crate) async fn discover_subnets(
        &self,
        vpc: &str,
        internal: bool,
        cluster_id: &str,
    ) -> Result<Vec<String>> {
        let ec2 = &self.clients().await?.ec2;
        let reply = timed(
            "describe_subnets",
            ec2.describe_subnets()
                .filters(Filter::builder().name("vpc-id").values(vpc).build())
                .send(),
        )
        .await
        .map_err(aws_err(format!("describing the subnets of {vpc}")))?;
        let cluster_key = cluster_tag_key(cluster_id);
        let role_key = if internal {
            "kubernetes.io/role/internal-elb"
        } else {
            "kubernetes.io/role/elb"
        };
        let mut best: BTreeMap<String, (bool, bool, String)> = BTreeMap::new();
        for subnet in reply.subnets() {
            let id = subnet.subnet_id().unwrap_or_default().to_string();
            let zone = subnet.availability_zone().unwrap_or_default().to_string();
            let has = |key: &str| subnet.tags().iter().any(|t| t.key() == Some(key));
            let ours = has(&cluster_key);
            let someone_elses = subnet.tags().iter().any(|t| {
                t.key()
                    .is_some_and(|k| k.starts_with("kubernetes.io/cluster/") && k != cluster_key)
            });
            if someone_elses && !ours {
                continue;
            }
            if !internal && !self.subnet_is_public(vpc, &id).await? {
                continue;
            }
            let candidate = (has(role_key), ours, id);
            let better = match best.get(&zone) {
                None => true,
                Some(current) => {
                    (candidate.0, candidate.1, std::cmp::Reverse(&candidate.2))
                        > (current.0, current.1, std::cmp::Reverse(&current.2))
                }
            };
            if better {
                best.insert(zone, candidate);
            }
        }
        if best.is_empty() {
            return Err(CloudError::other(format!(
                "could not find any suitable subnets for creating the ELB in {vpc}"
            )));
        }
        Ok(best.into_values().map(|(_, _, id)| id).collect())
    }

    async fn subnet_is_public(&self, vpc: &str, subnet: &str) -> Result<bool> {
        let ec2 = &self.clients().await?.ec2;
        let by_association = timed(
            "describe_route_tables",
            ec2.describe_route_tables()
                .filters(
                    Filter::builder()
                        .name("association.subnet-id")
                        .values(subnet)
                        .build(),
                )
                .send(),
        )
        .await
        .map_err(aws_err(format!("describing the route table of {subnet}")))?;
        let tables = if by_association.route_tables().is_empty() {
            timed(
                "describe_route_tables",
                ec2.describe_route_tables()
                    .filters(Filter::builder().name("vpc-id").values(vpc).build())
                    .filters(
                        Filter::builder()
                            .name("association.main")
                            .values("true")
                            .build(),
                    )
                    .send(),
            )
            .await
            .map_err(aws_err(format!("describing the main route table of {vpc}")))?
        } else {
            by_association
        };
        Ok(tables.route_tables().iter().any(|t| {
            t.routes()
                .iter()
                .any(|r| r.gateway_id().is_some_and(|g| g.starts_with("igw")))
        }))
    }

    /// Every target group tagged for this Service in this cluster: (ARN, name).
    async fn service_target_groups(
        &self,
        service: &str,
        cluster_id: &str,
    ) -> Result<Vec<(String, String)>> {
        let elb = &self.clients().await?.elb;
        let mut all = Vec::new();
        let mut marker = None;
        loop {
            let reply = timed(
                "describe_target_groups",
                elb.describe_target_groups()
                    .set_marker(marker.take())
                    .send(),
            )
            .await
            .map_err(aws_err("listing target groups".into()))?;
            for tg in reply.target_groups() {
                all.push((
                    tg.target_group_arn().unwrap_or_default().to_string(),
                    tg.target_group_name().unwrap_or_default().to_string(),
                ));
            }
            match reply.next_marker() {
                Some(m) if !m.is_empty() => marker = Some(m.to_string()),
                _ => break,
            }
        }
        let cluster_key = cluster_tag_key(cluster_id);
        let mut mine = Vec::new();
        for chunk in all.chunks(20) {
            let reply = timed(
                "describe_tags",
                elb.describe_tags()
                    .set_resource_arns(Some(chunk.iter().map(|(arn, _)| arn.clone()).collect()))
                    .send(),
            )
            .await
            .map_err(aws_err("reading target group tags".into()))?;
            for d in reply.tag_descriptions() {
                let tag = |key: &str| {
                    d.tags()
                        .iter()
                        .find(|t| t.key() == Some(key))
                        .and_then(|t| t.value())
                };
                if tag(TAG_SERVICE_NAME) == Some(service) && tag(&cluster_key).is_some() {
                    let arn = d.resource_arn().unwrap_or_default();
                    if let Some(found) = chunk.iter().find(|(a, _)| a == arn) {
                        mine.push(found.clone());
                    }
                }
            }
        }
        Ok(mine)
    }

    /// The instances a target group holds, those draining left out.
    async fn registered_targets(&self, arn: &str, name: &str) -> Result<BTreeSet<String>> {
        let elb = &self.clients().await?.elb;
        let health = timed(
            "describe_target_health",
            elb.describe_target_health().target_group_arn(arn).send(),
        )
        .await
        .map_err(aws_err(format!("reading the targets of {name}")))?;
        Ok(health
            .target_health_descriptions()
            .iter()
            .filter(|d| {
                d.target_health()
                    .and_then(|h| h.state())
                    .is_none_or(|s| s.as_str() != "draining")
            })
            .filter_map(|d| d.target()?.id().map(str::to_string))
            .collect())
    }

    /// upstream's reconcileLBAttributes: what differs from the plan's.
    async fn lb_attribute_changes(
        &self,
        arn: &str,
        plan: &NlbPlan,
    ) -> Result<Vec<(String, String)>> {
        let elb = &self.clients().await?.elb;
        let reply = timed(
            "describe_load_balancer_attributes",
            elb.describe_load_balancer_attributes()
                .load_balancer_arn(arn)
                .send(),
        )
        .await
        .map_err(aws_err(format!("reading the attributes of {}", plan.name)))?;
        let current = attribute_map(reply.attributes().iter().map(|a| (a.key(), a.value())));
        Ok(plan.attributes.changes(&current))
    }

    /// upstream's ensureTargetGroupAttributes, only with the annotation.
    async fn target_group_attribute_changes(
        &self,
        arn: &str,
        plan: &NlbPlan,
    ) -> Result<Vec<(String, String)>> {
        let Some(annotated) = &plan.target_group_attributes else {
            return Ok(Vec::new());
        };
        let elb = &self.clients().await?.elb;
        let reply = timed(
            "describe_target_group_attributes",
            elb.describe_target_group_attributes()
                .target_group_arn(arn)
                .send(),
        )
        .await
        .map_err(aws_err(format!(
            "reading the attributes of target group {arn}"
        )))?;
        let current = attribute_map(reply.attributes().iter().map(|a| (a.key(), a.value())));
        Ok(target_group_attribute_changes(annotated, &current))
    }

    /// The VPC, looked up at most once per sync and only when something is
    /// created in it: a sync that changes nothing makes no DescribeInstances.
    async fn vpc_once<'a>(&self, slot: &'a mut Option<String>, nodes: &[&Node]) -> Result<&'a str> {
        if slot.is_none() {
            *slot = Some(self.vpc_id(nodes).await?);
        }
        Ok(slot.as_deref().unwrap_or_default())
    }

    /// The target group of one listener, created when missing; its targets
    /// made exactly `targets`.
    async fn ensure_target_group(
        &self,
        plan: &NlbPlan,
        l: &ListenerPlan,
        vpc: &mut Option<String>,
        nodes: &[&Node],
        existing: &[(String, String)],
        targets: &BTreeSet<String>,
    ) -> Result<String> {
        let elb = &self.clients().await?.elb;
        let arn = match existing.iter().find(|(_, name)| *name == l.target_group) {
            Some((arn, _)) => arn.clone(),
            None => {
                let vpc = self.vpc_once(vpc, nodes).await?;
                let mut create = elb
                    .create_target_group()
                    .name(&l.target_group)
                    .protocol(ProtocolEnum::from(l.protocol.as_str()))
                    .port(l.node_port)
                    .vpc_id(vpc)
                    .target_type(TargetTypeEnum::Instance)
                    .health_check_protocol(ProtocolEnum::from(l.health.protocol.as_str()))
                    .health_check_port(&l.health.port)
                    .health_check_interval_seconds(l.health.interval)
                    .healthy_threshold_count(l.health.healthy)
                    .unhealthy_threshold_count(l.health.unhealthy)
                    .set_tags(Some(tags(&plan.tags)));
                if let Some(path) = &l.health.path {
                    create = create.health_check_path(path);
                }
                let reply = timed("create_target_group", create.send())
                    .await
                    .map_err(aws_err(format!("creating target group {}", l.target_group)))?;
                let arn = reply
                    .target_groups()
                    .first()
                    .and_then(|t| t.target_group_arn())
                    .ok_or_else(|| CloudError::other("CreateTargetGroup returned no ARN"))?
                    .to_string();
                tracing::info!(target_group = %l.target_group, port = l.port, "created target group");
                arn
            }
        };
        let current = self.registered_targets(&arn, &l.target_group).await?;
        let target = |id: &String| {
            TargetDescription::builder()
                .id(id)
                .port(l.node_port)
                .build()
        };
        let remove: Vec<TargetDescription> = current.difference(targets).map(target).collect();
        let add: Vec<TargetDescription> = targets.difference(&current).map(target).collect();
        if !remove.is_empty() {
            timed(
                "deregister_targets",
                elb.deregister_targets()
                    .target_group_arn(&arn)
                    .set_targets(Some(remove))
                    .send(),
            )
            .await
            .map_err(aws_err(format!(
                "deregistering targets of {}",
                l.target_group
            )))?;
        }
        for chunk in add.chunks(100) {
            timed(
                "register_targets",
                elb.register_targets()
                    .target_group_arn(&arn)
                    .set_targets(Some(chunk.to_vec()))
                    .send(),
            )
            .await
            .map_err(aws_err(format!(
                "registering targets of {}",
                l.target_group
            )))?;
        }
        Ok(arn)
    }

    async fn ensure_nlb(
        &self,
        cluster_name: &str,
        service: &Service,
        nodes: &[&Node],
    ) -> Result<LoadBalancerStatus> {
        let cluster_id = self.cluster_id_required()?.to_string();
        let plan = plan(service, &cluster_id, &self.nlb_settings())?;
        let group = nlb_security_group(&plan, service, cluster_name, &cluster_id);
        let key = service_key(service);
        let elb = &self.clients().await?.elb;
        let mut vpc = None;
        let lb = match self.find_load_balancer(&plan.name).await? {
            Some(lb) => {
                // Set at creation only (AWS cannot change them, and upstream
                // ignores a change without a word).
                for (wanted, has, annotation) in [
                    (&plan.eip_allocations, &lb.allocations, ANN_EIP_ALLOCATIONS),
                    (
                        &plan.private_ipv4_addresses,
                        &lb.private_addresses,
                        ANN_PRIVATE_IPV4_ADDRESSES,
                    ),
                ] {
                    if let Some(wanted) = wanted {
                        let mut sorted = wanted.clone();
                        sorted.sort();
                        if sorted != *has {
                            tracing::warn!(
                                service = %key,
                                annotation,
                                ?wanted,
                                ?has,
                                "the NLB keeps the addresses it was made with: recreate the Service to change them"
                            );
                        }
                    }
                }
                // An NLB made before the mode was on has no group to
                // enforce the ranges in.
                if lb.security_groups.is_empty()
                    && self.config.disable_security_group_ingress
                    && !admits_everyone(&plan.client_cidrs)
                {
                    return Err(bad(
                        service,
                        format!(
                            "loadBalancerSourceRanges cannot be enforced: the NLB {} was made without a security group of its own and DisableSecurityGroupIngress is set; recreate the Service, or restrict the node security groups yourself",
                            plan.name
                        ),
                    ));
                }
                if lb.security_groups.is_empty() && self.config.nlb_security_groups {
                    tracing::info!(
                        service = %key,
                        name = %plan.name,
                        "the NLB was made without a security group and AWS cannot add one: NLBSecurityGroupMode = Managed applies once the Service is recreated"
                    );
                }
                // An NLB can only get groups when it is made (AWS), so one
                // made without keeps none, as upstream; its own group's
                // rules follow the Service whatever the mode now.
                if !lb.security_groups.is_empty()
                    && let Some(id) = self.find_own_group(&group.name, &cluster_id).await?
                    && lb.security_groups.contains(&id)
                {
                    let vpc = self.vpc_once(&mut vpc, nodes).await?;
                    self.ensure_own_group(&group, vpc).await?;
                }
                lb
            }
            None => {
                let subnets = if plan.subnets.is_empty() {
                    let vpc = self.vpc_once(&mut vpc, nodes).await?;
                    self.discover_subnets(vpc, plan.internal, &cluster_id)
                        .await?
                } else {
                    plan.subnets.clone()
                };
                let mut create = elb
                    .create_load_balancer()
                    .name(&plan.name)
                    .r#type(LoadBalancerTypeEnum::Network)
                    .set_tags(Some(tags(&plan.tags)));
                // Upstream leaves internet-facing to AWS's default; saying
                // it is the same request, explicit.
                create = create.scheme(if plan.internal {
                    LoadBalancerSchemeEnum::Internal
                } else {
                    LoadBalancerSchemeEnum::InternetFacing
                });
                if self.config.nlb_security_groups {
                    let vpc = self.vpc_once(&mut vpc, nodes).await?.to_string();
                    let id = self.ensure_own_group(&group, &vpc).await?;
                    create = create.security_groups(id);
                }
                for m in plan.subnet_mappings(&subnets)? {
                    create = create.subnet_mappings(
                        SubnetMapping::builder()
                            .subnet_id(m.subnet)
                            .set_allocation_id(m.allocation)
                            .set_private_ipv4_address(m.private_address)
                            .build(),
                    );
                }
                let reply = timed("create_load_balancer", create.send())
                    .await
                    .map_err(aws_err(format!("creating load balancer {}", plan.name)))?;
                let lb = reply
                    .load_balancers()
                    .first()
                    .ok_or_else(|| CloudError::other("CreateLoadBalancer returned nothing"))?;
                tracing::info!(service = %key, name = %plan.name, ?subnets, "created network load balancer");
                Found {
                    arn: lb.load_balancer_arn().unwrap_or_default().to_string(),
                    dns_name: lb.dns_name().map(str::to_string),
                    state: None,
                    subnets: subnets_of(lb),
                    allocations: addresses_of(lb, |a| a.allocation_id()),
                    private_addresses: addresses_of(lb, |a| a.private_ipv4_address()),
                    security_groups: lb.security_groups().to_vec(),
                }
            }
        };

        let targets = instance_ids(nodes, &plan.target_node_labels);
        let existing = self.service_target_groups(&key, &cluster_id).await?;
        let listeners = timed(
            "describe_listeners",
            elb.describe_listeners().load_balancer_arn(&lb.arn).send(),
        )
        .await
        .map_err(aws_err(format!("reading the listeners of {}", plan.name)))?;
        let mut kept_listeners = BTreeSet::new();
        let mut used_groups = BTreeSet::new();
        for l in &plan.listeners {
            let tg_arn = self
                .ensure_target_group(&plan, l, &mut vpc, nodes, &existing, &targets)
                .await?;
            used_groups.insert(tg_arn.clone());
            let forward = Action::builder()
                .r#type(ActionTypeEnum::Forward)
                .target_group_arn(&tg_arn)
                .build();
            // One listener per port (ELB allows no more), changed in place:
            // upstream keys them by port and protocol, so a port turning TLS
            // makes it create a second listener on the port, which AWS refuses.
            let current = listeners
                .listeners()
                .iter()
                .find(|x| x.port() == Some(l.port));
            let certificates = l
                .certificate
                .as_ref()
                .map(|arn| vec![Certificate::builder().certificate_arn(arn).build()]);
            match current {
                Some(x) => {
                    let arn = x.listener_arn().unwrap_or_default().to_string();
                    kept_listeners.insert(arn.clone());
                    let points_at = x
                        .default_actions()
                        .first()
                        .and_then(|a| a.target_group_arn());
                    let change = listener_change(x, l);
                    if points_at != Some(tg_arn.as_str()) || change.any() {
                        tracing::debug!(port = l.port, ?change, "changing listener");
                        // Only what differs: AWS keeps the rest as it is.
                        timed(
                            "modify_listener",
                            elb.modify_listener()
                                .listener_arn(&arn)
                                .set_protocol(
                                    change
                                        .protocol
                                        .then(|| ProtocolEnum::from(l.frontend_protocol.as_str())),
                                )
                                .set_certificates(certificates.filter(|_| change.certificate))
                                .set_ssl_policy(l.ssl_policy.clone().filter(|_| change.ssl_policy))
                                .default_actions(forward)
                                .send(),
                        )
                        .await
                        .map_err(aws_err(format!(
                            "changing listener {} to the Service's",
                            l.port
                        )))?;
                    }
                }
                None => {
                    let reply = timed(
                        "create_listener",
                        elb.create_listener()
                            .load_balancer_arn(&lb.arn)
                            .port(l.port)
                            .protocol(ProtocolEnum::from(l.frontend_protocol.as_str()))
                            .set_certificates(certificates)
                            .set_ssl_policy(l.ssl_policy.clone())
                            .default_actions(forward)
                            .set_tags(Some(tags(&plan.tags)))
                            .send(),
                    )
                    .await
                    .map_err(aws_err(format!(
                        "creating listener {}/{}",
                        l.port, l.frontend_protocol
                    )))?;
                    if let Some(arn) = reply.listeners().first().and_then(|x| x.listener_arn()) {
                        kept_listeners.insert(arn.to_string());
                    }
                }
            }
        }
        for x in listeners.listeners() {
            let arn = x.listener_arn().unwrap_or_default();
            if !kept_listeners.contains(arn) {
                timed(
                    "delete_listener",
                    elb.delete_listener().listener_arn(arn).send(),
                )
                .await
                .map_err(aws_err(format!("deleting listener {arn}")))?;
            }
        }
        // Groups of ports that went away, or that a spec change replaced.
        for (arn, name) in &existing {
            if !used_groups.contains(arn) {
                timed(
                    "delete_target_group",
                    elb.delete_target_group().target_group_arn(arn).send(),
                )
                .await
                .map_err(aws_err(format!("deleting target group {name}")))?;
            }
        }
        // One call each for all that differs, as upstream.
        let changed = self.lb_attribute_changes(&lb.arn, &plan).await?;
        if !changed.is_empty() {
            let attributes = changed
                .iter()
                .map(|(k, v)| LoadBalancerAttribute::builder().key(k).value(v).build())
                .collect();
            timed(
                "modify_load_balancer_attributes",
                elb.modify_load_balancer_attributes()
                    .load_balancer_arn(&lb.arn)
                    .set_attributes(Some(attributes))
                    .send(),
            )
            .await
            .map_err(aws_err(format!("changing {changed:?} on {}", plan.name)))?;
        }
        for arn in &used_groups {
            let changed = self.target_group_attribute_changes(arn, &plan).await?;
            if changed.is_empty() {
                continue;
            }
            let attributes = changed
                .iter()
                .map(|(k, v)| TargetGroupAttribute::builder().key(k).value(v).build())
                .collect();
            timed(
                "modify_target_group_attributes",
                elb.modify_target_group_attributes()
                    .target_group_arn(arn)
                    .set_attributes(Some(attributes))
                    .send(),
            )
            .await
            .map_err(aws_err(format!(
                "changing {changed:?} on target group {arn}"
            )))?;
        }
        // Last, as upstream: the instances admit the NLB's clients and
        // health checks once it forwards to them.
        let rules = self
            .plan_instance_rules(
                &plan.name,
                Some((&plan, &targets, &lb.subnets)),
                &cluster_id,
            )
            .await?;
        self.apply_instance_rules(&rules).await?;
        Ok(lb.status())
    }
}

/// Which of a listener's protocol, certificate and policy are not the
/// plan's. A policy the Service does not name is AWS's default and left as
/// it is (upstream compares it with "" and rewrites the listener on every
/// sync).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ListenerChange {
    protocol: bool,
    certificate: bool,
    ssl_policy: bool,
}

impl ListenerChange {
    fn any(self) -> bool {
        self.protocol || self.certificate || self.ssl_policy
    }
}

fn listener_change(x: &Listener, l: &ListenerPlan) -> ListenerChange {
    let certificate = x.certificates().first().and_then(|c| c.certificate_arn());
    ListenerChange {
        protocol: x.protocol().map(|p| p.as_str()) != Some(l.frontend_protocol.as_str()),
        certificate: certificate != l.certificate.as_deref(),
        ssl_policy: l
            .ssl_policy
            .as_deref()
            .is_some_and(|p| x.ssl_policy() != Some(p)),
    }
}

#[async_trait]
impl LoadBalancer for AwsCloud {
    async fn get_load_balancer(
        &self,
        cluster_name: &str,
        service: &Service,
    ) -> Result<Option<LoadBalancerStatus>> {
        match kind(service) {
            Kind::Nlb => {}
            Kind::Classic => return self.get_clb(service).await,
            Kind::Elsewhere => return Ok(None),
        }
        let name = self.get_load_balancer_name(cluster_name, service);
        if let Some(lb) = self.find_load_balancer(&name).await? {
            return Ok(Some(lb.status()));
        }
        // The balancer is its NLB and every part tagged for the Service: a
        // deletion that stopped between DeleteLoadBalancer and the last
        // DeleteTargetGroup (a crash, or a group still detaching) leaves
        // target groups, and the service controller must call
        // ensure_load_balancer_deleted again before it drops its finalizer.
        let Some(cluster_id) = self.config.cluster_id() else {
            return Ok(None);
        };
        let parts = self
            .service_target_groups(&service_key(service), cluster_id)
            .await?;
        // And the instance rules, then the NLB's own group, removed last.
        let left = !parts.is_empty()
            || (!self.config.disable_security_group_ingress
                && sg_plan::holds_rules_of(&self.security_groups(cluster_id).await?, &name))
            || self
                .find_own_group(&nlb_security_group_name(cluster_name, service), cluster_id)
                .await?
                .is_some();
        Ok(left.then(LoadBalancerStatus::default))
    }

    /// The NLB of the Service's name and what ensure would change in it,
    /// by Describe calls only: target groups it would make (a group's name
    /// hashes its settings, so a changed one is replaced: a short break on
    /// that port) or delete, listeners it would make or change. An
    /// annotation `ensure` would refuse is the same error here.
    async fn preview_load_balancer(
        &self,
        _cluster_name: &str,
        service: &Service,
        nodes: &[&Node],
    ) -> Result<LoadBalancerPreview> {
        match kind(service) {
            Kind::Nlb => {
                let cluster_id = self.cluster_id_required()?.to_string();
                let plan = plan(service, &cluster_id, &self.nlb_settings())?;
                let Some(lb) = self.find_load_balancer(&plan.name).await? else {
                    return Ok(LoadBalancerPreview::default());
                };
                let existing = self
                    .service_target_groups(&service_key(service), &cluster_id)
                    .await?;
                let elb = &self.clients().await?.elb;
                let listeners = timed(
                    "describe_listeners",
                    elb.describe_listeners().load_balancer_arn(&lb.arn).send(),
                )
                .await
                .map_err(aws_err(format!("reading the listeners of {}", plan.name)))?;
                let mut changes = Vec::new();
                for l in &plan.listeners {
                    if !existing.iter().any(|(_, name)| *name == l.target_group) {
                        changes.push(format!(
                            "target group {} for port {} would be made, replacing the port's current one",
                            l.target_group, l.port
                        ));
                    }
                    match listeners
                        .listeners()
                        .iter()
                        .find(|x| x.port() == Some(l.port))
                    {
                        None => changes.push(format!(
                            "listener {}/{} would be made",
                            l.port, l.frontend_protocol
                        )),
                        Some(x) if listener_change(x, l).any() => changes.push(format!(
                            "listener {} would change: {:?}",
                            l.port,
                            listener_change(x, l)
                        )),
                        Some(_) => {}
                    }
                }
                for (_, name) in &existing {
                    if !plan.listeners.iter().any(|l| l.target_group == *name) {
                        changes.push(format!("target group {name} would be deleted"));
                    }
                }
                for (key, value) in self.lb_attribute_changes(&lb.arn, &plan).await? {
                    changes.push(format!("attribute {key} would be set to {value:?}"));
                }
                // The groups ensure keeps: their attributes, then their targets.
                let targets = instance_ids(nodes, &plan.target_node_labels);
                let mut target_changes = Vec::new();
                for (arn, name) in &existing {
                    if !plan.listeners.iter().any(|l| l.target_group == *name) {
                        continue;
                    }
                    for (key, value) in self.target_group_attribute_changes(arn, &plan).await? {
                        changes.push(format!(
                            "target group {name}: attribute {key} would be set to {value:?}"
                        ));
                    }
                    let current = self.registered_targets(arn, name).await?;
                    let add: Vec<&String> = targets.difference(&current).collect();
                    let remove: Vec<&String> = current.difference(&targets).collect();
                    if !add.is_empty() {
                        target_changes.push(format!("target group {name}: would register {add:?}"));
                    }
                    if !remove.is_empty() {
                        target_changes
                            .push(format!("target group {name}: would deregister {remove:?}"));
                    }
                }
                changes.extend(target_changes);
                let rules = self
                    .plan_instance_rules(
                        &plan.name,
                        Some((&plan, &targets, &lb.subnets)),
                        &cluster_id,
                    )
                    .await?;
                changes.extend(sg_plan::describe_changes(&rules));
                Ok(LoadBalancerPreview {
                    status: Some(lb.status()),
                    changes,
                })
            }
            Kind::Elsewhere => Err(CloudError::ImplementedElsewhere),
            Kind::Classic => self.preview_clb(service, nodes).await,
        }
    }

    /// Annotations cloud-provider-aws takes without a word and this
    /// provider refuses (the Service's sync fails naming them): TLS
    /// settings without a certificate, a Classic ELB backend protocol
    /// upstream does not know, both of which upstream ignores.
    fn unhonoured_annotations(&self, service: &Service) -> Vec<String> {
        if kind(service) == Kind::Elsewhere {
            return Vec::new();
        }
        let mut found: Vec<String> = crate::nlb_plan::tls_settings_without_certificate(service)
            .into_iter()
            .map(|key| {
                format!(
                    "{key} without {ANN_SSL_CERT} has no effect on cloud-provider-aws; overcast refuses the Service's sync until one of the two is set right"
                )
            })
            .collect();
        if kind(service) == Kind::Classic {
            found.extend(
                crate::clb_plan::ignored_backend_protocol(service).map(|why| {
                    format!("{why}; overcast refuses the Service's sync until it is fixed")
                }),
            );
        }
        found
    }

    async fn ensure_load_balancer(
        &self,
        cluster_name: &str,
        service: &Service,
        nodes: &[&Node],
    ) -> Result<LoadBalancerStatus> {
        match kind(service) {
            Kind::Nlb => self.ensure_nlb(cluster_name, service, nodes).await,
            Kind::Elsewhere => Err(CloudError::ImplementedElsewhere),
            Kind::Classic => self.ensure_clb(service, nodes).await,
        }
    }

    /// As upstream for NLBs: the whole ensure again (idempotent).
    async fn update_load_balancer(
        &self,
        cluster_name: &str,
        service: &Service,
        nodes: &[&Node],
    ) -> Result<()> {
        match kind(service) {
            Kind::Nlb => self
                .ensure_load_balancer(cluster_name, service, nodes)
                .await
                .map(|_| ()),
            Kind::Elsewhere => Err(CloudError::ImplementedElsewhere),
            Kind::Classic => self.update_clb(service, nodes).await,
        }
    }

    /// Deletes the NLB (its listeners go with it), then every target group
    /// tagged for the Service, found by tag so none is left behind.
    async fn ensure_load_balancer_deleted(
        &self,
        cluster_name: &str,
        service: &Service,
    ) -> Result<()> {
        match kind(service) {
            Kind::Nlb => {}
            Kind::Classic => return self.delete_clb(service).await,
            Kind::Elsewhere => return Ok(()),
        }
        let Some(cluster_id) = self.config.cluster_id().map(str::to_string) else {
            return Ok(());
        };
        let elb = &self.clients().await?.elb;
        let name = self.get_load_balancer_name(cluster_name, service);
        // The groups attached to the NLB go with it, as upstream's delete
        // takes them (by LoadBalancerArn), whether or not they carry this
        // Service's tags (an NLB adopted from an older cloud-provider-aws);
        // asked before the NLB goes, since only it links them.
        let mut groups: BTreeMap<String, String> = BTreeMap::new();
        if let Some(lb) = self.find_load_balancer(&name).await? {
            let attached = timed(
                "describe_target_groups",
                elb.describe_target_groups()
                    .load_balancer_arn(&lb.arn)
                    .send(),
            )
            .await
            .map_err(aws_err(format!("listing the target groups of {name}")))?;
            for tg in attached.target_groups() {
                groups.insert(
                    tg.target_group_arn().unwrap_or_default().to_string(),
                    tg.target_group_name().unwrap_or_default().to_string(),
                );
            }
            timed(
                "delete_load_balancer",
                elb.delete_load_balancer().load_balancer_arn(&lb.arn).send(),
            )
            .await
            .map_err(aws_err(format!("deleting load balancer {name}")))?;
            tracing::info!(service = %service_key(service), %name, "deleted network load balancer");
        }
        groups.extend(
            self.service_target_groups(&service_key(service), &cluster_id)
                .await?,
        );
        for (arn, tg) in groups {
            match timed(
                "delete_target_group",
                elb.delete_target_group().target_group_arn(&arn).send(),
            )
            .await
            {
                Ok(_) => {}
                // Still detaching from the deleted LB: retry later.
                Err(e) if code(&e) == Some("ResourceInUse") => {
                    return Err(CloudError::retry(
                        format!("target group {tg} is still in use"),
                        std::time::Duration::from_secs(5),
                    ));
                }
                Err(e) => return Err(aws_err(format!("deleting target group {tg}"))(e)),
            }
        }
        let rules = self.plan_instance_rules(&name, None, &cluster_id).await?;
        self.apply_instance_rules(&rules).await?;
        // The NLB's own group (NLBSecurityGroupMode = Managed), found by
        // name and cluster tag, so a deletion stopped after the NLB went
        // still removes it; whatever the mode now, as upstream.
        let own = nlb_security_group_name(cluster_name, service);
        match self.find_own_group(&own, &cluster_id).await? {
            Some(group) => self.delete_own_group(&group, &name).await,
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use overcast_cloud_provider::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn annotated(pairs: &[(&str, &str)]) -> Service {
        Service {
            metadata: ObjectMeta {
                annotations: Some(
                    pairs
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn the_preflight_hears_of_tls_settings_refused_without_a_certificate() {
        let cloud = AwsCloud::from_config(None).unwrap();
        let proxy = "service.beta.kubernetes.io/aws-load-balancer-proxy-protocol";
        assert!(
            cloud
                .unhonoured_annotations(&annotated(&[(proxy, "*")]))
                .is_empty(),
            "the proxy protocol is served"
        );
        for kind in [None, Some("nlb")] {
            let mut pairs = vec![(ANN_SSL_PORTS, "443")];
            pairs.extend(kind.map(|k| (ANN_TYPE, k)));
            let found = cloud.unhonoured_annotations(&annotated(&pairs));
            assert_eq!(found.len(), 1, "{kind:?}");
            assert!(found[0].starts_with(ANN_SSL_PORTS), "{found:?}");
            pairs.push((ANN_SSL_CERT, "arn:cert"));
            assert!(cloud.unhonoured_annotations(&annotated(&pairs)).is_empty());
        }
        let typo = annotated(&[(ANN_BACKEND_PROTOCOL, "htttp")]);
        let found = cloud.unhonoured_annotations(&typo);
        assert!(
            found.len() == 1 && found[0].contains(r#""htttp" is not http"#),
            "{found:?}"
        );
    }
}
