//! Leader migration (KEP-2436): controllers listed in a
//! LeaderMigrationConfiguration run under a second Lease that the old
//! kube-controller-manager also takes, so the two never run them at once.

use std::path::Path;

use serde::Deserialize;

use crate::controllers;

/// This component's name in `controllerLeaders[].component`.
pub const COMPONENT: &str = "cloud-controller-manager";
pub const DEFAULT_LEADER_NAME: &str = "cloud-provider-extraction-migration";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationConfig {
    pub leader_name: String,
    pub controller_leaders: Vec<ControllerLeader>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControllerLeader {
    pub name: String,
    pub component: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct File {
    api_version: String,
    kind: String,
    #[serde(default)]
    leader_name: String,
    #[serde(default)]
    resource_lock: Option<String>,
    #[serde(default)]
    controller_leaders: Vec<ControllerLeader>,
}

/// Where a controller runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Under the main lock.
    NonMigrated,
    /// Under the migration lock.
    Migrated,
    /// Listed for another component: not run here.
    Unowned,
}

impl MigrationConfig {
    /// Upstream's `DefaultLeaderMigrationConfiguration`
    /// (k8s.io/controller-manager pkg/leadermigration/config/default.go),
    /// names as upstream spells them. Matched literally, as every upstream
    /// controller manager matches them, only `cloud-node-lifecycle-controller`
    /// names a controller: route and service run under the main lock, in
    /// the Go components as here.
    pub fn default_config() -> Self {
        Self {
            leader_name: DEFAULT_LEADER_NAME.to_string(),
            controller_leaders: [
                "route-controller",
                "service-controller",
                "cloud-node-lifecycle-controller",
            ]
            .into_iter()
            .map(|n| ControllerLeader {
                name: n.to_string(),
                component: "*".to_string(),
            })
            .collect(),
        }
    }

    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("--leader-migration-config={}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("--leader-migration-config={}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let file: File = overcast_cloud_provider::yaml::parse_yaml(text)?;
        let versions = [
            "controllermanager.config.k8s.io/v1",
            "controllermanager.config.k8s.io/v1beta1",
            "controllermanager.config.k8s.io/v1alpha1",
        ];
        if !versions.contains(&file.api_version.as_str()) {
            return Err(format!(
                "apiVersion {:?} is not one of {}",
                file.api_version,
                versions.join(", ")
            ));
        }
        if file.kind != "LeaderMigrationConfiguration" {
            return Err(format!(
                "kind {:?} must be LeaderMigrationConfiguration",
                file.kind
            ));
        }
        if file.leader_name.is_empty() {
            return Err("leaderName: required".into());
        }
        match (
            file.api_version.ends_with("/v1"),
            file.resource_lock.as_deref(),
        ) {
            (true, Some(_)) => return Err("resourceLock: not allowed in v1 (always leases)".into()),
            (false, Some("leases") | None) => {}
            (false, Some(other)) => {
                return Err(format!(
                    "resourceLock: {other:?} is not supported; use leases"
                ));
            }
            (true, None) => {}
        }
        for (i, c) in file.controller_leaders.iter().enumerate() {
            if c.name.is_empty() {
                return Err(format!("controllerLeaders[{i}].name: required"));
            }
            if c.component.is_empty() {
                return Err(format!("controllerLeaders[{i}].component: required"));
            }
        }
        let config = Self {
            leader_name: file.leader_name,
            controller_leaders: file.controller_leaders,
        };
        config.check_versions()?;
        Ok(config)
    }

    /// The last entry named `name`: upstream builds a map from the list, so
    /// a later entry for a name replaces an earlier one.
    fn entry(&self, name: &str) -> Option<(usize, &ControllerLeader)> {
        self.controller_leaders
            .iter()
            .enumerate()
            .rfind(|(_, c)| c.name == name)
    }

    /// A file must mean the same to every version of its peers. Controller
    /// managers before v1.28 register our controllers under the names that
    /// are aliases now (`route`, `service`, `cloud-node-lifecycle`,
    /// `nodeipam`, `cloud-node`) and compare entries with those; from v1.28
    /// they compare the canonical names (`node-route-controller`, ...). An
    /// entry under only one of the two is read by one generation and not the
    /// other, so one peer runs the controller under the migration Lease while
    /// the other runs it under its main Lease: refused, asking for both.
    fn check_versions(&self) -> Result<(), String> {
        for canonical in controllers::KNOWN {
            let legacy = controllers::short_name(canonical);
            match (self.entry(legacy), self.entry(canonical)) {
                (Some((i, _)), None) => {
                    return Err(format!(
                        "controllerLeaders[{i}].name {legacy:?} is what controller managers before v1.28 call {canonical}; from v1.28 they compare {canonical:?} (kube-controller-manager v1.34 runs the controller under its main Lease with this file, beside whoever holds the migration Lease); list both names with the same component, in every component's configuration, so every version reads it alike"
                    ));
                }
                (Some((i, old)), Some((j, new))) if old.component != new.component => {
                    return Err(format!(
                        "controllerLeaders[{i}] ({legacy:?}) and controllerLeaders[{j}] ({canonical:?}) name one controller for different components ({:?}, {:?}): controller managers before and after v1.28 would place it differently",
                        old.component, new.component
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Where the controller with this canonical name runs: its canonical
    /// entry, compared literally as upstream's `NewLeaderMigrator` does from
    /// v1.28 (a file naming it the older way too has been checked to agree).
    pub fn placement(&self, canonical: &str) -> Placement {
        match self.entry(canonical) {
            None => Placement::NonMigrated,
            Some((_, c)) if c.component == "*" || c.component == COMPONENT => Placement::Migrated,
            Some(_) => Placement::Unowned,
        }
    }

    /// Entries that look meant for one of this component's controllers but
    /// match it in no version of any controller manager (upstream's own
    /// default `route-controller` and `service-controller`, or `node-ipam`):
    /// harmless, as every peer ignores them too, and worth a warning.
    pub fn misnamed(&self) -> Vec<String> {
        self.controller_leaders
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let meant = controllers::canonical(&c.name)
                    .filter(|m| *m != c.name && controllers::short_name(m) != c.name)?;
                Some(format!(
                    "controllerLeaders[{i}].name {:?} names {meant} in no version of any controller manager, so it migrates nothing: every component runs {meant} under its own main Lease; to migrate it, list {meant:?} and {:?} in every component's configuration",
                    c.name,
                    controllers::short_name(meant)
                ))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use overcast_cloud_provider::names::controllers::*;

    #[test]
    fn the_default_migrates_only_lifecycle_as_upstream_reads_it() {
        let c = MigrationConfig::default_config();
        assert_eq!(c.placement(CLOUD_NODE_LIFECYCLE), Placement::Migrated);
        assert_eq!(c.placement(NODE_ROUTE), Placement::NonMigrated);
        assert_eq!(c.placement(SERVICE_LB), Placement::NonMigrated);
        assert_eq!(c.placement(CLOUD_NODE), Placement::NonMigrated);
        assert_eq!(c.placement(NODE_IPAM), Placement::NonMigrated);
        let warned = c.misnamed();
        assert_eq!(warned.len(), 2, "{warned:?}");
        assert!(
            warned[0].contains("\"route-controller\"")
                && warned[0].contains("list \"node-route-controller\" and \"route\""),
            "{warned:?}"
        );
        assert!(
            warned[1]
                .contains("every component runs service-lb-controller under its own main Lease")
        );
    }

    #[test]
    fn a_file_must_name_a_controller_as_old_and_new_peers_read_it() {
        let file = |entries: &str| {
            format!(
                "apiVersion: controllermanager.config.k8s.io/v1\nkind: LeaderMigrationConfiguration\nleaderName: x\ncontrollerLeaders:\n{entries}"
            )
        };
        // Canonical only: what v1.28 and later read.
        let c = MigrationConfig::parse(&file("  - {name: node-ipam-controller, component: \"*\"}\n  - {name: garbage-collector-controller, component: kube-controller-manager}\n")).unwrap();
        assert_eq!(c.placement(NODE_IPAM), Placement::Migrated);
        assert_eq!(c.placement(SERVICE_LB), Placement::NonMigrated);
        // Both names, one component: every version agrees.
        let c = MigrationConfig::parse(&file("  - {name: nodeipam, component: \"*\"}\n  - {name: node-ipam-controller, component: \"*\"}\n")).unwrap();
        assert_eq!(c.placement(NODE_IPAM), Placement::Migrated);
        // The old name alone: an old peer migrates it, a new one does not.
        let e = MigrationConfig::parse(&file("  - {name: node-ipam-controller, component: \"*\"}\n  - {name: service, component: \"*\"}\n")).unwrap_err();
        assert!(e.starts_with("controllerLeaders[1].name \"service\" is what controller managers before v1.28 call service-lb-controller"), "{e}");
        assert!(e.contains("list both names"), "{e}");
        let e = MigrationConfig::parse(&file("  - {name: route, component: kube-controller-manager}\n  - {name: node-route-controller, component: \"*\"}\n")).unwrap_err();
        assert!(e.contains("different components"), "{e}");
        // As upstream's map: the last entry for a name wins.
        let c = MigrationConfig::parse(&file("  - {name: service-lb-controller, component: kube-controller-manager}\n  - {name: service-lb-controller, component: \"*\"}\n  - {name: service, component: \"*\"}\n")).unwrap();
        assert_eq!(c.placement(SERVICE_LB), Placement::Migrated);
        // A spelling no version reads: accepted, ignored as by every peer, warned.
        let c = MigrationConfig::parse(&file("  - {name: service-controller, component: \"*\"}\n"))
            .unwrap();
        assert_eq!(c.placement(SERVICE_LB), Placement::NonMigrated);
        assert_eq!(c.misnamed().len(), 1);
    }

    #[test]
    fn v1_and_v1alpha1_files() {
        let v1 = "apiVersion: controllermanager.config.k8s.io/v1\nkind: LeaderMigrationConfiguration\nleaderName: cloud-provider-extraction-migration\ncontrollerLeaders:\n  - name: node-route-controller\n    component: kube-controller-manager\n  - name: service-lb-controller\n    component: cloud-controller-manager\n";
        let c = MigrationConfig::parse(v1).unwrap();
        assert_eq!(c.placement(NODE_ROUTE), Placement::Unowned);
        assert_eq!(c.placement(SERVICE_LB), Placement::Migrated);
        let alpha = "apiVersion: controllermanager.config.k8s.io/v1alpha1\nkind: LeaderMigrationConfiguration\nleaderName: x\nresourceLock: leases\ncontrollerLeaders: []\n";
        assert!(MigrationConfig::parse(alpha).is_ok());
    }

    #[test]
    fn invalid_files_name_the_field() {
        let base =
            "apiVersion: controllermanager.config.k8s.io/v1\nkind: LeaderMigrationConfiguration\n";
        assert_eq!(
            MigrationConfig::parse(base).unwrap_err(),
            "leaderName: required"
        );
        let no_component = format!(
            "{base}leaderName: x\ncontrollerLeaders:\n  - name: route\n    component: \"\"\n"
        );
        assert_eq!(
            MigrationConfig::parse(&no_component).unwrap_err(),
            "controllerLeaders[0].component: required"
        );
        let lock = format!("{base}leaderName: x\nresourceLock: leases\n");
        assert!(
            MigrationConfig::parse(&lock)
                .unwrap_err()
                .starts_with("resourceLock")
        );
        let alpha_endpoints = "apiVersion: controllermanager.config.k8s.io/v1alpha1\nkind: LeaderMigrationConfiguration\nleaderName: x\nresourceLock: endpoints\n";
        assert!(
            MigrationConfig::parse(alpha_endpoints)
                .unwrap_err()
                .contains("leases")
        );
        assert!(
            MigrationConfig::parse("apiVersion: v1\nkind: Pod\n")
                .unwrap_err()
                .contains("apiVersion")
        );
    }
}
