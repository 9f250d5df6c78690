//! Controller names, their aliases, and `--controllers` (upstream's
//! `IsControllerEnabled`).

use overcast_cloud_provider::names::controllers::*;

/// The controllers overcast-ccm runs, by upstream's canonical name.
pub const KNOWN: [&str; 5] = [
    CLOUD_NODE,
    CLOUD_NODE_LIFECYCLE,
    SERVICE_LB,
    NODE_ROUTE,
    NODE_IPAM,
];

/// The canonical name of a controller name or alias; `None` if unknown.
pub fn canonical(name: &str) -> Option<&'static str> {
    Some(match name {
        CLOUD_NODE | CLOUD_NODE_ALIAS => CLOUD_NODE,
        CLOUD_NODE_LIFECYCLE | CLOUD_NODE_LIFECYCLE_ALIAS => CLOUD_NODE_LIFECYCLE,
        SERVICE_LB | SERVICE_LB_ALIAS | "service-controller" => SERVICE_LB,
        NODE_ROUTE | NODE_ROUTE_ALIAS | "route-controller" => NODE_ROUTE,
        NODE_IPAM | NODE_IPAM_ALIAS | "node-ipam" => NODE_IPAM,
        _ => return None,
    })
}

/// The short name upstream uses in `running_managed_controllers` and health
/// checks (the alias).
pub fn short_name(canonical: &str) -> &'static str {
    match canonical {
        CLOUD_NODE => CLOUD_NODE_ALIAS,
        CLOUD_NODE_LIFECYCLE => CLOUD_NODE_LIFECYCLE_ALIAS,
        SERVICE_LB => SERVICE_LB_ALIAS,
        NODE_ROUTE => NODE_ROUTE_ALIAS,
        _ => NODE_IPAM_ALIAS,
    }
}

/// A parsed `--controllers` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    entries: Vec<(bool, Option<&'static str>)>, // (enabled, name; None = "*")
}

impl Selection {
    /// Parses `*`, `name` and `-name` entries; unknown names are an error.
    pub fn parse(list: &[String]) -> Result<Self, String> {
        let mut entries = Vec::new();
        for raw in list.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
            if raw == "*" {
                entries.push((true, None));
                continue;
            }
            let (enabled, name) = match raw.strip_prefix('-') {
                Some(n) => (false, n),
                None => (true, raw),
            };
            let canonical = canonical(name).ok_or_else(|| {
                format!(
                    "--controllers: {name:?} is not in the list of known controllers ({}, or their aliases cloud-node, cloud-node-lifecycle, service, route, node-ipam)",
                    KNOWN.join(", ")
                )
            })?;
            entries.push((enabled, Some(canonical)));
        }
        Ok(Self { entries })
    }

    /// First explicit mention wins; otherwise enabled iff `*` is listed.
    pub fn is_enabled(&self, canonical: &str) -> bool {
        for (enabled, name) in &self.entries {
            if *name == Some(canonical) {
                return *enabled;
            }
        }
        self.entries.iter().any(|(_, n)| n.is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(s: &str) -> Result<Selection, String> {
        Selection::parse(&s.split(',').map(String::from).collect::<Vec<_>>())
    }

    #[test]
    fn star_minus_and_aliases() {
        let s = sel("*,-route").unwrap();
        assert!(s.is_enabled(CLOUD_NODE));
        assert!(!s.is_enabled(NODE_ROUTE));
        let s = sel("-node-route-controller,*").unwrap();
        assert!(!s.is_enabled(NODE_ROUTE));
        let s = sel("cloud-node,service").unwrap();
        assert!(s.is_enabled(CLOUD_NODE) && s.is_enabled(SERVICE_LB));
        assert!(!s.is_enabled(CLOUD_NODE_LIFECYCLE));
        let s = sel("route,-route").unwrap();
        assert!(s.is_enabled(NODE_ROUTE), "the first mention wins");
    }

    #[test]
    fn unknown_names_are_refused_with_the_flag_name() {
        let err = sel("*,-bogus").unwrap_err();
        assert!(
            err.starts_with("--controllers: \"bogus\" is not in the list of known controllers"),
            "{err}"
        );
    }
}
