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
        // A file the user wrote for a migration: an entry that migrates
        // nothing is refused, where upstream would run the controller in
        // both components at once.
        match config.misnamed().into_iter().next() {
            Some(e) => Err(e),
            None => Ok(config),
        }
    }

    /// Where the controller with this canonical name runs. Names are
    /// compared literally, as upstream's `NewLeaderMigrator` does in
    /// kube-controller-manager and the Go cloud-controller-manager: a pair
    /// that read one entry differently would both run, or neither.
    pub fn placement(&self, canonical: &str) -> Placement {
        let entry = self.controller_leaders.iter().find(|c| c.name == canonical);
        match entry {
            None => Placement::NonMigrated,
            Some(c) if c.component == "*" || c.component == COMPONENT => Placement::Migrated,
            Some(_) => Placement::Unowned,
        }
    }

    /// Entries that look meant for one of this component's controllers but
    /// name none of them (an alias such as `service` or `nodeipam`, or
    /// another spelling such as upstream's default `service-controller`).
    /// No upstream component migrates through them either, so each runs the
    /// controller under its own main lock: a pair then runs it twice.
    pub fn misnamed(&self) -> Vec<String> {
        self.controller_leaders
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let meant = controllers::canonical(&c.name).filter(|m| *m != c.name)?;
                Some(format!(
                    "controllerLeaders[{i}].name {:?} is not a controller name: leader migration compares names literally (as kube-controller-manager and upstream's cloud-controller-manager do), so no component migrates {meant} and each runs it under its own main lock, beside the others; to migrate it, write {meant:?} in every component's configuration",
                    c.name
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
                && warned[0].contains("write \"node-route-controller\"")
        );
        assert!(warned[1].contains("no component migrates service-lb-controller"));
    }

    #[test]
    fn a_file_naming_an_alias_is_refused_with_the_name_to_write() {
        let file = |entries: &str| {
            format!(
                "apiVersion: controllermanager.config.k8s.io/v1\nkind: LeaderMigrationConfiguration\nleaderName: x\ncontrollerLeaders:\n{entries}"
            )
        };
        let c = MigrationConfig::parse(&file("  - {name: node-ipam-controller, component: \"*\"}\n  - {name: garbage-collector-controller, component: kube-controller-manager}\n")).unwrap();
        assert_eq!(c.placement(NODE_IPAM), Placement::Migrated);
        assert_eq!(c.placement(SERVICE_LB), Placement::NonMigrated);
        let e = MigrationConfig::parse(&file("  - {name: node-ipam-controller, component: \"*\"}\n  - {name: nodeipam, component: \"*\"}\n")).unwrap_err();
        assert!(
            e.starts_with("controllerLeaders[1].name \"nodeipam\" is not a controller name"),
            "{e}"
        );
        assert!(e.contains("write \"node-ipam-controller\""), "{e}");
        let e = MigrationConfig::parse(&file(
            "  - {name: service, component: kube-controller-manager}\n",
        ))
        .unwrap_err();
        assert!(
            e.contains("no component migrates service-lb-controller"),
            "{e}"
        );
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
