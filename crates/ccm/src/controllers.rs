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
/// checks (the alias); a provider's controller goes by its own name.
pub fn short_name(canonical: &str) -> &str {
    match canonical {
        CLOUD_NODE => CLOUD_NODE_ALIAS,
        CLOUD_NODE_LIFECYCLE => CLOUD_NODE_LIFECYCLE_ALIAS,
        SERVICE_LB => SERVICE_LB_ALIAS,
        NODE_ROUTE => NODE_ROUTE_ALIAS,
        NODE_IPAM => NODE_IPAM_ALIAS,
        other => other,
    }
}

/// A parsed `--controllers` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    entries: Vec<(bool, Option<String>)>, // (enabled, name; None = "*")
    /// Provider controllers `*` leaves off (upstream's ControllersDisabledByDefault).
    disabled_by_default: Vec<String>,
}

/// A controller a provider adds: its name, and whether `*` enables it.
pub type Extra<'a> = (&'a str, bool);

impl Selection {
    /// Parses `*`, `name` and `-name` entries; names are upstream's (or their
    /// aliases) or those of `extra`; unknown names are an error.
    pub fn parse(list: &[String], extra: &[Extra<'_>]) -> Result<Self, String> {
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
            let known = canonical(name).map(str::to_string).or_else(|| {
                extra
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(n, _)| n.to_string())
            });
            let Some(known) = known else {
                let mut all: Vec<&str> = KNOWN.to_vec();
                all.extend(extra.iter().map(|(n, _)| *n));
                return Err(format!(
                    "--controllers: {name:?} is not in the list of known controllers ({}, or their aliases cloud-node, cloud-node-lifecycle, service, route, node-ipam)",
                    all.join(", ")
                ));
            };
            entries.push((enabled, Some(known)));
        }
        let disabled_by_default = extra
            .iter()
            .filter(|(_, on)| !on)
            .map(|(n, _)| n.to_string())
            .collect();
        Ok(Self {
            entries,
            disabled_by_default,
        })
    }

    /// First explicit mention wins; otherwise enabled iff `*` is listed and
    /// the controller is not off by default (upstream's IsControllerEnabled).
    pub fn is_enabled(&self, name: &str) -> bool {
        for (enabled, listed) in &self.entries {
            if listed.as_deref() == Some(name) {
                return *enabled;
            }
        }
        self.entries.iter().any(|(_, n)| n.is_none())
            && !self.disabled_by_default.iter().any(|n| n == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(s: &str) -> Result<Selection, String> {
        Selection::parse(
            &s.split(',').map(String::from).collect::<Vec<_>>(),
            &[("tagging", false), ("extra", true)],
        )
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
    fn a_provider_controller_off_by_default_needs_its_name() {
        assert!(!sel("*").unwrap().is_enabled("tagging"));
        assert!(sel("*").unwrap().is_enabled("extra"));
        assert!(sel("*,tagging").unwrap().is_enabled("tagging"));
        assert!(sel("tagging").unwrap().is_enabled("tagging"));
        assert!(!sel("-tagging,tagging").unwrap().is_enabled("tagging"));
        assert!(!sel("*,-extra").unwrap().is_enabled("extra"));
        let err = sel("*,taging").unwrap_err();
        assert!(
            err.contains("node-ipam-controller, tagging, extra"),
            "{err}"
        );
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
