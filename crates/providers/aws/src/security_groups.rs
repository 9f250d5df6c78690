//! The instance security-group rules of an NLB (decided in sg_plan.rs):
//! reads the groups, instances and subnets, then revokes and authorizes.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_ec2::types::{Filter, IpPermission, IpRange};
use overcast_cloud_provider::{CloudError, Result};

use crate::AwsCloud;
use crate::metrics::{aws_err, timed};
use crate::nlb_plan::{NlbPlan, cluster_tag_key};
use crate::sg_plan::{self, Group, GroupChange, Rule, Wanted};

/// The legacy cluster tag upstream still honours (`KubernetesCluster=<id>`).
const LEGACY_CLUSTER_TAG: &str = "KubernetesCluster";

fn permission(rule: &Rule) -> IpPermission {
    let mut range = IpRange::builder().cidr_ip(&rule.cidr);
    if let Some(d) = &rule.description {
        range = range.description(d);
    }
    IpPermission::builder()
        .ip_protocol(&rule.protocol)
        .set_from_port(rule.from)
        .set_to_port(rule.to)
        .ip_ranges(range.build())
        .build()
}

impl AwsCloud {
    /// Every security group visible to the provider, its IPv4 rules
    /// ungrouped (as upstream's getTaggedSecurityGroups reads all of them).
    pub(crate) async fn security_groups(&self, cluster_id: &str) -> Result<Vec<Group>> {
        let ec2 = &self.clients().await?.ec2;
        let cluster_key = cluster_tag_key(cluster_id);
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let reply = timed(
                "describe_security_groups",
                ec2.describe_security_groups()
                    .set_next_token(token.take())
                    .send(),
            )
            .await
            .map_err(aws_err("describing security groups".into()))?;
            for g in reply.security_groups() {
                let Some(id) = g.group_id().filter(|id| !id.is_empty()) else {
                    continue;
                };
                let tagged = g.tags().iter().any(|t| {
                    t.key() == Some(cluster_key.as_str())
                        || (t.key() == Some(LEGACY_CLUSTER_TAG) && t.value() == Some(cluster_id))
                });
                let rules = g
                    .ip_permissions()
                    .iter()
                    .flat_map(|p| {
                        p.ip_ranges().iter().filter_map(|r| {
                            Some(Rule {
                                protocol: p.ip_protocol().unwrap_or_default().to_string(),
                                from: p.from_port(),
                                to: p.to_port(),
                                cidr: r.cidr_ip()?.to_string(),
                                description: r.description().map(str::to_string),
                            })
                        })
                    })
                    .collect();
                out.push(Group {
                    id: id.to_string(),
                    tagged,
                    rules,
                });
            }
            match reply.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => break,
            }
        }
        Ok(out)
    }

    /// Instance ID → its security group IDs; unknown instances are absent.
    pub(crate) async fn instance_groups(
        &self,
        ids: &BTreeSet<String>,
    ) -> Result<BTreeMap<String, Vec<String>>> {
        let ec2 = &self.clients().await?.ec2;
        let mut out = BTreeMap::new();
        let ids: Vec<String> = ids.iter().cloned().collect();
        for chunk in ids.chunks(200) {
            let mut token = None;
            loop {
                // A filter, not InstanceIds: an ID no longer known is no error.
                let reply = timed(
                    "describe_instance",
                    ec2.describe_instances()
                        .filters(
                            Filter::builder()
                                .name("instance-id")
                                .set_values(Some(chunk.to_vec()))
                                .build(),
                        )
                        .set_next_token(token.take())
                        .send(),
                )
                .await
                .map_err(aws_err("describing the load balancer's instances".into()))?;
                for i in reply.reservations().iter().flat_map(|r| r.instances()) {
                    if let Some(id) = i.instance_id() {
                        let groups = i
                            .security_groups()
                            .iter()
                            .filter_map(|g| g.group_id().filter(|g| !g.is_empty()))
                            .map(str::to_string)
                            .collect();
                        out.insert(id.to_string(), groups);
                    }
                }
                match reply.next_token() {
                    Some(t) if !t.is_empty() => token = Some(t.to_string()),
                    _ => break,
                }
            }
        }
        Ok(out)
    }

    async fn subnet_cidrs(&self, subnets: &[String]) -> Result<Vec<String>> {
        let ec2 = &self.clients().await?.ec2;
        let reply = timed(
            "describe_subnets",
            ec2.describe_subnets()
                .set_subnet_ids(Some(subnets.to_vec()))
                .send(),
        )
        .await
        .map_err(aws_err(format!(
            "describing subnets {}",
            subnets.join(", ")
        )))?;
        let mut cidrs: Vec<String> = reply
            .subnets()
            .iter()
            .filter_map(|s| s.cidr_block().map(str::to_string))
            .collect();
        cidrs.sort();
        Ok(cidrs)
    }

    /// The rule changes that make the instances' groups admit the NLB
    /// `lb_name` as `plan` says (`None`: the NLB is gone; revoke its rules).
    /// Nothing when `DisableSecurityGroupIngress` is set, as upstream.
    pub(crate) async fn plan_instance_rules(
        &self,
        lb_name: &str,
        want: Option<(&NlbPlan, &BTreeSet<String>, &[String])>,
        cluster_id: &str,
    ) -> Result<BTreeMap<String, GroupChange>> {
        if self.config.disable_security_group_ingress {
            return Ok(BTreeMap::new());
        }
        let groups = self.security_groups(cluster_id).await?;
        let Some((plan, instances, lb_subnets)) = want else {
            return Ok(sg_plan::plan(&groups, &BTreeSet::new(), lb_name, None));
        };
        let tagged: BTreeSet<String> = groups
            .iter()
            .filter(|g| g.tagged)
            .map(|g| g.id.clone())
            .collect();
        let mut targets = BTreeSet::new();
        for (instance, ids) in self.instance_groups(instances).await? {
            match sg_plan::group_for_instance(&instance, &ids, &tagged)
                .map_err(CloudError::other)?
            {
                Some(id) => {
                    targets.insert(id.to_string());
                }
                None => tracing::warn!(%instance, "ignoring instance without security group"),
            }
        }
        let mut w = Wanted::for_nlb(plan).map_err(CloudError::other)?;
        if w.needs_health_rule() {
            if lb_subnets.is_empty() {
                return Err(CloudError::other(format!(
                    "did not find ensured subnets on LB {lb_name}"
                )));
            }
            w.subnet_cidrs = self.subnet_cidrs(lb_subnets).await?;
        }
        Ok(sg_plan::plan(&groups, &targets, lb_name, Some(&w)))
    }

    /// Revokes, then authorizes, group by group.
    pub(crate) async fn apply_instance_rules(
        &self,
        changes: &BTreeMap<String, GroupChange>,
    ) -> Result<()> {
        let ec2 = &self.clients().await?.ec2;
        for (group, change) in changes {
            if !change.revoke.is_empty() {
                timed(
                    "revoke_security_group_ingress",
                    ec2.revoke_security_group_ingress()
                        .group_id(group)
                        .set_ip_permissions(Some(change.revoke.iter().map(permission).collect()))
                        .send(),
                )
                .await
                .map_err(aws_err(format!("revoking ingress rules of {group}")))?;
            }
            if !change.authorize.is_empty() {
                timed(
                    "authorize_security_group_ingress",
                    ec2.authorize_security_group_ingress()
                        .group_id(group)
                        .set_ip_permissions(Some(change.authorize.iter().map(permission).collect()))
                        .send(),
                )
                .await
                .map_err(aws_err(format!("authorizing ingress rules in {group}")))?;
            }
            tracing::info!(
                %group,
                revoked = change.revoke.len(),
                authorized = change.authorize.len(),
                "changed instance security group rules"
            );
        }
        Ok(())
    }
}
