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
    /// Upstream's `DefaultLeaderMigrationConfiguration`. Its names (route,
    /// service, cloud-node-lifecycle) are aliases; matched through them, all
    /// three migrate, where upstream's exact-name filter migrates only
    /// cloud-node-lifecycle.
    pub fn default_config() -> Self {
        Self {
            leader_name: DEFAULT_LEADER_NAME.to_string(),
            controller_leaders: ["route", "service", "cloud-node-lifecycle"]
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
        Ok(Self {
            leader_name: file.leader_name,
            controller_leaders: file.controller_leaders,
        })
    }

    /// Where the controller with this canonical name runs. Names in the
    /// configuration are matched through their aliases.
    pub fn placement(&self, canonical: &str) -> Placement {
        let entry = self
            .controller_leaders
            .iter()
            .find(|c| controllers::canonical(&c.name) == Some(canonical));
        match entry {
            None => Placement::NonMigrated,
            Some(c) if c.component == "*" || c.component == COMPONENT => Placement::Migrated,
            Some(_) => Placement::Unowned,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use overcast_cloud_provider::names::controllers::*;

    #[test]
    fn the_default_migrates_route_service_and_lifecycle_through_aliases() {
        let c = MigrationConfig::default_config();
        assert_eq!(c.placement(NODE_ROUTE), Placement::Migrated);
        assert_eq!(c.placement(SERVICE_LB), Placement::Migrated);
        assert_eq!(c.placement(CLOUD_NODE_LIFECYCLE), Placement::Migrated);
        assert_eq!(c.placement(CLOUD_NODE), Placement::NonMigrated);
    }

    #[test]
    fn v1_and_v1alpha1_files() {
        let v1 = "apiVersion: controllermanager.config.k8s.io/v1\nkind: LeaderMigrationConfiguration\nleaderName: cloud-provider-extraction-migration\ncontrollerLeaders:\n  - name: route\n    component: kube-controller-manager\n  - name: service\n    component: cloud-controller-manager\n";
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
