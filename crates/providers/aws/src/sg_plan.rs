//! The instance security-group rules that let an NLB's traffic and health
//! checks reach the Nodes, as cloud-provider-aws decides them
//! (aws_loadbalancer.go, updateInstanceSecurityGroupsForNLB and
//! updateInstanceSecurityGroupForNLBTraffic/MTU, v1.36.1): a pure function
//! of the groups' current rules and the Service's NLB.
//!
//! Each rule this provider manages carries a description naming its NLB
//! (`kubernetes.io/rule/nlb/client=<name>`, `…/health=<name>`), so it is
//! found again after a restart or a crash, and only such rules are ever
//! revoked. A rule is matched by protocol, ports and CIDR, not description,
//! as upstream: where the group already allows the same (a user's rule or
//! another Service's), nothing is added.

use std::collections::{BTreeMap, BTreeSet};

use crate::nlb_plan::NlbPlan;

/// Description prefix of the rule admitting clients to the node ports.
pub const RULE_CLIENT: &str = "kubernetes.io/rule/nlb/client";
/// Description prefix of the rule admitting the NLB's health checks from its subnets.
pub const RULE_HEALTH: &str = "kubernetes.io/rule/nlb/health";
/// Description of the ICMP "fragmentation needed" rule (path MTU discovery)
/// for every client CIDR of any NLB in the group.
pub const RULE_MTU: &str = "kubernetes.io/rule/nlb/mtu";

/// One ingress rule of a group, ungrouped: one protocol, port range and
/// IPv4 CIDR (upstream manages IPv4 ranges only).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rule {
    /// As AWS reports it: `tcp`, `udp`, `icmp`, `-1`, or a number.
    pub protocol: String,
    /// For ICMP, the type and code.
    pub from: Option<i32>,
    pub to: Option<i32>,
    pub cidr: String,
    pub description: Option<String>,
}

impl Rule {
    fn new(protocol: &str, from: i32, to: i32, cidr: &str, description: &str) -> Rule {
        Rule {
            protocol: protocol.to_string(),
            from: Some(from),
            to: Some(to),
            cidr: cidr.to_string(),
            description: Some(description.to_string()),
        }
    }

    /// What identifies a rule in a group (AWS allows one per protocol,
    /// ports and source; the description is an attribute of it).
    fn same_as(&self, other: &Rule) -> bool {
        self.protocol == other.protocol
            && self.from == other.from
            && self.to == other.to
            && self.cidr == other.cidr
    }

    fn described(&self, description: &str) -> bool {
        self.description.as_deref() == Some(description)
    }
}

/// A security group as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub id: String,
    /// Carries this cluster's tag (`kubernetes.io/cluster/<id>`, or the
    /// legacy `KubernetesCluster=<id>`).
    pub tagged: bool,
    pub rules: Vec<Rule>,
}

/// What the Service's NLB needs from the groups of its target instances;
/// `None` for a deletion (every rule of this NLB revoked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// `tcp`, or `udp` when a port is UDP (the NLB's ports share one protocol).
    pub client_protocol: String,
    /// The node ports the listeners forward to.
    pub client_ports: BTreeSet<i32>,
    /// The Service's source ranges (IPv4), `0.0.0.0/0` when it names none.
    pub client_cidrs: Vec<String>,
    /// The ports health checks go to (node ports, or the health-check node port).
    pub health_ports: BTreeSet<i32>,
    /// The CIDRs of the NLB's subnets, where health checks come from.
    pub subnet_cidrs: Vec<String>,
}

impl Wanted {
    /// What the NLB of `plan` needs; the subnets' CIDRs are filled in by the
    /// caller, only when [`Wanted::needs_health_rule`].
    pub fn for_nlb(plan: &NlbPlan) -> Result<Wanted, String> {
        let mut client_ports = BTreeSet::new();
        let mut health_ports = BTreeSet::new();
        let mut client_protocol = "tcp".to_string();
        for l in &plan.listeners {
            client_ports.insert(l.node_port);
            let health = if l.health.port == "traffic-port" {
                l.node_port
            } else {
                l.health
                    .port
                    .parse()
                    .map_err(|_| format!("Invalid health check port {}", l.health.port))?
            };
            health_ports.insert(health);
            if l.protocol == "UDP" {
                client_protocol = "udp".into();
            }
        }
        Ok(Wanted {
            client_protocol,
            client_ports,
            client_cidrs: plan.client_cidrs.clone(),
            health_ports,
            subnet_cidrs: Vec::new(),
        })
    }

    /// Upstream leaves the health rule out when the client rule already
    /// admits it: everyone, over TCP, on the same ports.
    pub fn needs_health_rule(&self) -> bool {
        !(self.client_cidrs.len() == 1
            && self.client_cidrs[0] == "0.0.0.0/0"
            && self.client_protocol == "tcp"
            && self.health_ports == self.client_ports)
    }
}

/// The calls for one group: revoke first, then authorize.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupChange {
    pub revoke: Vec<Rule>,
    pub authorize: Vec<Rule>,
}

impl GroupChange {
    pub fn is_empty(&self) -> bool {
        self.revoke.is_empty() && self.authorize.is_empty()
    }
}

/// Which group of an instance gets the rules (upstream's
/// findSecurityGroupForInstance): the one tagged for the cluster, else the
/// only one it has. `Ok(None)`: the instance has no group (skipped, as
/// upstream warns); an error when the choice is ambiguous.
pub fn group_for_instance<'a>(
    instance: &str,
    groups: &'a [String],
    tagged: &BTreeSet<String>,
) -> Result<Option<&'a str>, String> {
    let (ours, others): (Vec<&String>, Vec<&String>) =
        groups.iter().partition(|g| tagged.contains(*g));
    match (ours.as_slice(), others.as_slice()) {
        ([one], _) => Ok(Some(one.as_str())),
        ([], [one]) => Ok(Some(one.as_str())),
        ([], []) => Ok(None),
        ([], many) => Err(format!(
            "Multiple untagged security groups found for instance {instance} ({}); ensure the k8s security group is tagged",
            join(many)
        )),
        (many, _) => Err(format!(
            "Multiple tagged security groups found for instance {instance} ({}); ensure only the k8s security group is tagged",
            join(many)
        )),
    }
}

fn join(ids: &[&String]) -> String {
    ids.iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The rule changes, per group ID, that make the groups admit what `wanted`
/// needs for the NLB `lb_name` in the groups of its instances (`targets`)
/// and nothing of it elsewhere. The groups considered are the cluster's
/// tagged ones, the targets', and (unlike upstream, which looks at tagged
/// groups only) any holding a rule of this NLB, so a deletion leaves none in
/// an untagged group. Groups with nothing to change are left out.
pub fn plan(
    groups: &[Group],
    targets: &BTreeSet<String>,
    lb_name: &str,
    wanted: Option<&Wanted>,
) -> BTreeMap<String, GroupChange> {
    let client = format!("{RULE_CLIENT}={lb_name}");
    let health = format!("{RULE_HEALTH}={lb_name}");
    let mut out = BTreeMap::new();
    for group in groups {
        let holds_ours = group
            .rules
            .iter()
            .any(|r| r.described(&client) || r.described(&health));
        if !(group.tagged || targets.contains(&group.id) || holds_ours) {
            continue;
        }
        let mut rules = group.rules.clone();
        let mut change = GroupChange::default();
        let empty = BTreeSet::new();
        match wanted.filter(|_| targets.contains(&group.id)) {
            Some(w) => {
                // Upstream skips the health rule's sync when the client rule
                // covers it, so a rule left from an earlier policy stays;
                // here it is revoked (docs/aws-provider.md).
                let (ports, cidrs) = if w.needs_health_rule() {
                    (&w.health_ports, w.subnet_cidrs.as_slice())
                } else {
                    (&empty, &[][..])
                };
                sync(&mut rules, &mut change, &health, "tcp", ports, cidrs);
                sync(
                    &mut rules,
                    &mut change,
                    &client,
                    &w.client_protocol,
                    &w.client_ports,
                    &w.client_cidrs,
                );
            }
            None => {
                sync(&mut rules, &mut change, &health, "tcp", &empty, &[]);
                sync(&mut rules, &mut change, &client, "tcp", &empty, &[]);
            }
        }
        if !change.is_empty() {
            sync_mtu(&mut rules, &mut change);
            out.insert(group.id.clone(), change);
        }
    }
    out
}

/// upstream's updateInstanceSecurityGroupForNLBTraffic: the rules described
/// `description` become exactly `protocol` × `ports` × `cidrs`, leaving out
/// any the group already allows under another description.
fn sync(
    rules: &mut Vec<Rule>,
    change: &mut GroupChange,
    description: &str,
    protocol: &str,
    ports: &BTreeSet<i32>,
    cidrs: &[String],
) {
    let desired: Vec<Rule> = ports
        .iter()
        .flat_map(|p| {
            cidrs
                .iter()
                .map(move |c| Rule::new(protocol, *p, *p, c, description))
        })
        .collect();
    apply(rules, change, description, desired);
}

/// upstream's updateInstanceSecurityGroupForNLBMTU: ICMP type 3 code 4 from
/// every CIDR any NLB's client rule in the group admits.
fn sync_mtu(rules: &mut Vec<Rule>, change: &mut GroupChange) {
    let mut desired: Vec<Rule> = Vec::new();
    for r in rules.iter() {
        if r.description
            .as_deref()
            .is_some_and(|d| d.contains(RULE_CLIENT))
        {
            let mtu = Rule::new("icmp", 3, 4, &r.cidr, RULE_MTU);
            if !desired.iter().any(|d| d.same_as(&mtu)) {
                desired.push(mtu);
            }
        }
    }
    apply(rules, change, RULE_MTU, desired);
}

fn apply(rules: &mut Vec<Rule>, change: &mut GroupChange, description: &str, desired: Vec<Rule>) {
    let revoke: Vec<Rule> = rules
        .iter()
        .filter(|r| r.described(description) && !desired.iter().any(|d| d.same_as(r)))
        .cloned()
        .collect();
    rules.retain(|r| !revoke.contains(r));
    let grant: Vec<Rule> = desired
        .into_iter()
        .filter(|d| !rules.iter().any(|r| r.same_as(d)))
        .collect();
    rules.extend(grant.iter().cloned());
    // A rule revoked under one description and granted under another (the
    // same protocol, ports and source) would be revoked and re-made in two
    // calls; never happens with upstream's descriptions, kept simple.
    change.revoke.extend(revoke);
    change.authorize.extend(grant);
}

/// Whether any group holds a rule of the NLB `lb_name` (its deletion is not
/// finished while one does).
pub fn holds_rules_of(groups: &[Group], lb_name: &str) -> bool {
    let client = format!("{RULE_CLIENT}={lb_name}");
    let health = format!("{RULE_HEALTH}={lb_name}");
    groups
        .iter()
        .flat_map(|g| &g.rules)
        .any(|r| r.described(&client) || r.described(&health))
}

/// One line per group for a preview (shadow mode, the preflight).
pub fn describe_changes(changes: &BTreeMap<String, GroupChange>) -> Vec<String> {
    changes
        .iter()
        .map(|(group, c)| {
            let show = |rules: &[Rule]| {
                rules
                    .iter()
                    .map(|r| {
                        let ports = match (r.from, r.to) {
                            (Some(f), Some(t)) if f == t => format!("{f}"),
                            (Some(f), Some(t)) => format!("{f}-{t}"),
                            _ => "all".into(),
                        };
                        format!("{} {} from {}", r.protocol, ports, r.cidr)
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            match (c.revoke.is_empty(), c.authorize.is_empty()) {
                (false, false) => format!(
                    "security group {group}: would revoke {} and authorize {}",
                    show(&c.revoke),
                    show(&c.authorize)
                ),
                (false, true) => {
                    format!("security group {group}: would revoke {}", show(&c.revoke))
                }
                _ => format!(
                    "security group {group}: would authorize {}",
                    show(&c.authorize)
                ),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LB: &str = "a1234";

    fn wanted(cidrs: &[&str], health_ports: &[i32]) -> Wanted {
        Wanted {
            client_protocol: "tcp".into(),
            client_ports: [30080].into(),
            client_cidrs: cidrs.iter().map(|s| s.to_string()).collect(),
            health_ports: health_ports.iter().copied().collect(),
            subnet_cidrs: vec!["10.0.1.0/24".into(), "10.0.2.0/24".into()],
        }
    }

    fn group(id: &str, tagged: bool, rules: Vec<Rule>) -> Group {
        Group {
            id: id.into(),
            tagged,
            rules,
        }
    }

    fn client(port: i32, cidr: &str) -> Rule {
        Rule::new("tcp", port, port, cidr, &format!("{RULE_CLIENT}={LB}"))
    }

    fn health(port: i32, cidr: &str) -> Rule {
        Rule::new("tcp", port, port, cidr, &format!("{RULE_HEALTH}={LB}"))
    }

    fn mtu(cidr: &str) -> Rule {
        Rule::new("icmp", 3, 4, cidr, RULE_MTU)
    }

    /// Applies a plan to the groups, as AWS would.
    fn applied(mut groups: Vec<Group>, plan: &BTreeMap<String, GroupChange>) -> Vec<Group> {
        for g in &mut groups {
            if let Some(c) = plan.get(&g.id) {
                g.rules.retain(|r| !c.revoke.contains(r));
                g.rules.extend(c.authorize.iter().cloned());
            }
        }
        groups
    }

    #[test]
    fn everyone_on_the_traffic_port_needs_one_client_rule_and_its_mtu_rule() {
        let groups = vec![group("sg-nodes", true, vec![])];
        let targets = ["sg-nodes".to_string()].into();
        let w = wanted(&["0.0.0.0/0"], &[30080]);
        assert!(!w.needs_health_rule());
        let p = plan(&groups, &targets, LB, Some(&w));
        assert_eq!(
            p["sg-nodes"],
            GroupChange {
                revoke: vec![],
                authorize: vec![client(30080, "0.0.0.0/0"), mtu("0.0.0.0/0")],
            }
        );
        // Once made, a second sync changes nothing.
        let after = applied(groups, &p);
        assert!(plan(&after, &targets, LB, Some(&w)).is_empty());
    }

    #[test]
    fn source_ranges_and_a_health_check_port_add_health_rules_from_the_subnets() {
        let groups = vec![group("sg-nodes", true, vec![])];
        let targets = ["sg-nodes".to_string()].into();
        let w = wanted(&["203.0.113.0/24"], &[32000]);
        let p = plan(&groups, &targets, LB, Some(&w));
        assert_eq!(
            p["sg-nodes"].authorize,
            vec![
                health(32000, "10.0.1.0/24"),
                health(32000, "10.0.2.0/24"),
                client(30080, "203.0.113.0/24"),
                mtu("203.0.113.0/24"),
            ]
        );
        // The range changes: the old client and MTU rules go, the new come.
        let after = applied(groups, &p);
        let w2 = wanted(&["198.51.100.0/24"], &[32000]);
        let p2 = plan(&after, &targets, LB, Some(&w2));
        assert_eq!(
            p2["sg-nodes"],
            GroupChange {
                revoke: vec![client(30080, "203.0.113.0/24"), mtu("203.0.113.0/24")],
                authorize: vec![client(30080, "198.51.100.0/24"), mtu("198.51.100.0/24")],
            }
        );
        // Back to everyone on the traffic port: the health rules go too
        // (upstream keeps them until the Service is deleted).
        let after = applied(after, &p2);
        let p3 = plan(
            &after,
            &targets,
            LB,
            Some(&wanted(&["0.0.0.0/0"], &[30080])),
        );
        assert_eq!(p3["sg-nodes"].revoke.len(), 4, "{p3:?}");
    }

    #[test]
    fn a_rule_the_group_already_allows_is_not_added_and_others_rules_are_never_revoked() {
        let users = Rule {
            description: None,
            ..client(30080, "0.0.0.0/0")
        };
        let another_lb = Rule::new(
            "tcp",
            31000,
            31000,
            "0.0.0.0/0",
            "kubernetes.io/rule/nlb/client=a999",
        );
        let groups = vec![group(
            "sg-nodes",
            true,
            vec![users.clone(), another_lb.clone(), mtu("0.0.0.0/0")],
        )];
        let targets = ["sg-nodes".to_string()].into();
        assert!(
            plan(
                &groups,
                &targets,
                LB,
                Some(&wanted(&["0.0.0.0/0"], &[30080]))
            )
            .is_empty()
        );
        // Deleted: nothing of ours to revoke, the MTU rule serves the other NLB.
        assert!(plan(&groups, &targets, LB, None).is_empty());
    }

    #[test]
    fn deletion_revokes_every_rule_of_the_nlb_wherever_it_is_and_the_mtu_rule_it_alone_needed() {
        let groups = vec![
            group(
                "sg-tagged",
                true,
                vec![client(30080, "203.0.113.0/24"), mtu("203.0.113.0/24")],
            ),
            // Untagged (an instance's only group): upstream's deletion never
            // looks here.
            group(
                "sg-default",
                false,
                vec![
                    client(30080, "203.0.113.0/24"),
                    health(32000, "10.0.1.0/24"),
                ],
            ),
            group("sg-unrelated", false, vec![mtu("203.0.113.0/24")]),
        ];
        assert!(holds_rules_of(&groups, LB));
        let p = plan(&groups, &BTreeSet::new(), LB, None);
        assert_eq!(
            p["sg-tagged"].revoke,
            vec![client(30080, "203.0.113.0/24"), mtu("203.0.113.0/24")]
        );
        assert_eq!(
            p["sg-default"].revoke,
            vec![
                health(32000, "10.0.1.0/24"),
                client(30080, "203.0.113.0/24")
            ]
        );
        assert!(!p.contains_key("sg-unrelated"));
        assert!(!holds_rules_of(&applied(groups, &p), LB));
    }

    #[test]
    fn a_group_no_target_uses_any_more_loses_the_rules() {
        let groups = vec![
            group(
                "sg-old",
                true,
                vec![client(30080, "0.0.0.0/0"), mtu("0.0.0.0/0")],
            ),
            group("sg-new", true, vec![]),
        ];
        let targets = ["sg-new".to_string()].into();
        let p = plan(
            &groups,
            &targets,
            LB,
            Some(&wanted(&["0.0.0.0/0"], &[30080])),
        );
        assert_eq!(
            p["sg-old"].revoke,
            vec![client(30080, "0.0.0.0/0"), mtu("0.0.0.0/0")]
        );
        assert_eq!(p["sg-new"].authorize.len(), 2);
    }

    #[test]
    fn udp_ports_get_a_udp_client_rule_and_tcp_health_rules() {
        let groups = vec![group("sg-nodes", true, vec![])];
        let targets = ["sg-nodes".to_string()].into();
        let w = Wanted {
            client_protocol: "udp".into(),
            ..wanted(&["0.0.0.0/0"], &[30080])
        };
        assert!(w.needs_health_rule());
        let p = plan(&groups, &targets, LB, Some(&w));
        let protocols: Vec<&str> = p["sg-nodes"]
            .authorize
            .iter()
            .map(|r| r.protocol.as_str())
            .collect();
        assert_eq!(protocols, ["tcp", "tcp", "udp", "icmp"]);
    }

    #[test]
    fn the_group_of_an_instance_is_its_tagged_one_or_its_only_one() {
        let tagged: BTreeSet<String> = ["sg-k8s".to_string()].into();
        let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            group_for_instance("i-1", &ids(&["sg-x", "sg-k8s"]), &tagged).unwrap(),
            Some("sg-k8s")
        );
        assert_eq!(
            group_for_instance("i-1", &ids(&["sg-x"]), &tagged).unwrap(),
            Some("sg-x")
        );
        assert_eq!(group_for_instance("i-1", &[], &tagged).unwrap(), None);
        let err = group_for_instance("i-1", &ids(&["sg-x", "sg-y"]), &tagged).unwrap_err();
        assert!(
            err.contains("Multiple untagged security groups found for instance i-1"),
            "{err}"
        );
        let both: BTreeSet<String> = ["sg-x".to_string(), "sg-y".to_string()].into();
        let err = group_for_instance("i-1", &ids(&["sg-x", "sg-y"]), &both).unwrap_err();
        assert!(err.contains("Multiple tagged security groups"), "{err}");
    }

    #[test]
    fn a_preview_names_each_group_and_rule() {
        let rule = |protocol: &str, from: i32, to: i32, cidr: &str| Rule {
            protocol: protocol.into(),
            from: Some(from),
            to: Some(to),
            cidr: cidr.into(),
            description: None,
        };
        let changes: BTreeMap<String, GroupChange> = [
            (
                "sg-a".to_string(),
                GroupChange {
                    revoke: vec![rule("tcp", 30080, 30080, "203.0.113.0/24")],
                    authorize: vec![rule("icmp", 3, 4, "198.51.100.0/24")],
                },
            ),
            (
                "sg-b".to_string(),
                GroupChange {
                    revoke: vec![],
                    authorize: vec![rule("udp", 30053, 30053, "0.0.0.0/0")],
                },
            ),
        ]
        .into();
        assert_eq!(
            describe_changes(&changes),
            [
                "security group sg-a: would revoke tcp 30080 from 203.0.113.0/24 and authorize icmp 3-4 from 198.51.100.0/24",
                "security group sg-b: would authorize udp 30053 from 0.0.0.0/0",
            ]
        );
    }
}
