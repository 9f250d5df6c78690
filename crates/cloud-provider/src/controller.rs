//! Controllers a provider adds beside upstream's, as cloud-provider-aws adds
//! its `tagging` controller: a name in `--controllers` (on or off by
//! default), flags of their own, and per-Node work that the CCM queues,
//! retries and runs under its Lease, with upstream's workqueue metrics.
//!
//! A provider declares the controller with a [`ControllerSpec`] (given to the
//! CCM's builder, so its flags are known before the command line is parsed)
//! and builds it in [`crate::CloudProvider::node_controller`] from the values
//! given. The provider decides; the CCM watches, queues and calls.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Node;

/// How a flag takes its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FlagKind {
    /// `--name=value` or `--name value`; given twice, the last wins.
    Value,
    /// `--name=value`, each occurrence kept in order (pflag's
    /// `StringArray`, or a `StringToString` the provider merges).
    Repeated,
    /// `--name`, `--name=true` or `--name=false` (pflag's bool).
    Switch,
}

/// One command-line flag of a provider's controller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControllerFlag {
    name: String,
    help: String,
    default: Option<String>,
    kind: FlagKind,
}

impl ControllerFlag {
    /// A flag `--<name>` of `kind`, described in `--help` by `help`.
    pub fn new(name: impl Into<String>, kind: FlagKind, help: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            help: help.into(),
            default: None,
            kind,
        }
    }

    /// The value it has when not given (shown in `--help`).
    pub fn default_value(mut self, value: impl Into<String>) -> Self {
        self.default = Some(value.into());
        self
    }

    /// Its name, without the leading `--`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its `--help` text.
    pub fn help(&self) -> &str {
        &self.help
    }

    /// Its value when not given.
    pub fn default(&self) -> Option<&str> {
        self.default.as_deref()
    }

    /// How it takes its value.
    pub fn kind(&self) -> FlagKind {
        self.kind
    }
}

/// Checks a controller's flag values as the command line is parsed.
pub type FlagCheck = fn(&FlagValues) -> std::result::Result<(), String>;

/// A controller a provider adds: its `--controllers` name, whether `*`
/// enables it, and its flags.
#[derive(Clone, Debug)]
pub struct ControllerSpec {
    name: String,
    enabled_by_default: bool,
    heading: String,
    flags: Vec<ControllerFlag>,
    check: Option<FlagCheck>,
}

impl ControllerSpec {
    /// A controller named `name` in `--controllers`, enabled by `*`, whose
    /// flags `--help` lists under `heading`.
    pub fn new(name: impl Into<String>, heading: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            enabled_by_default: true,
            heading: heading.into(),
            flags: Vec::new(),
            check: None,
        }
    }

    /// Not enabled by `*`, only by its name (upstream's
    /// `ControllersDisabledByDefault`).
    pub fn disabled_by_default(mut self) -> Self {
        self.enabled_by_default = false;
        self
    }

    /// Adds a flag. Flags are registered whether or not the controller runs,
    /// as upstream registers them.
    pub fn flag(mut self, flag: ControllerFlag) -> Self {
        self.flags.push(flag);
        self
    }

    /// A check of the flags' syntax run when the command line is parsed,
    /// whether or not the controller runs (upstream's flag parse errors):
    /// an error is a bad flag, exit 2. Checks that matter only when the
    /// controller runs belong in [`crate::CloudProvider::node_controller`].
    pub fn check_flags(mut self, check: FlagCheck) -> Self {
        self.check = Some(check);
        self
    }

    /// Its `--controllers` name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether `*` enables it.
    pub fn enabled_by_default(&self) -> bool {
        self.enabled_by_default
    }

    /// The `--help` heading of its flags.
    pub fn heading(&self) -> &str {
        &self.heading
    }

    /// Its flags.
    pub fn flags(&self) -> &[ControllerFlag] {
        &self.flags
    }

    /// Runs its flag check, if it has one.
    pub fn check(&self, values: &FlagValues) -> std::result::Result<(), String> {
        self.check.map_or(Ok(()), |check| check(values))
    }
}

/// The values given for a controller's flags, as written: by flag name
/// (without `--`), each occurrence in order; a flag not given has its
/// default, if any.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlagValues {
    values: BTreeMap<String, Vec<String>>,
}

impl FlagValues {
    /// Values by flag name.
    pub fn new(values: BTreeMap<String, Vec<String>>) -> Self {
        Self { values }
    }

    /// The last value of `name` (`None`: not given and no default).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values
            .get(name)
            .and_then(|v| v.last())
            .map(String::as_str)
    }

    /// Every value of `name`, in the order given.
    pub fn all(&self, name: &str) -> &[String] {
        self.values.get(name).map_or(&[], Vec::as_slice)
    }
}

/// One Node's work for a provider's controller, compared whole: the queue
/// holds one of each, as upstream's comparable work items.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NodeWork {
    /// The Node's name.
    pub node: String,
    /// Its `spec.providerID` when the change was seen ("" if none).
    pub provider_id: String,
    /// The Node was deleted (the work is to undo, without the Node).
    pub deleted: bool,
}

impl std::fmt::Display for NodeWork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let action = if self.deleted { "DELETE" } else { "ADD" };
        write!(f, "[Node: {}, Action: {action}]", self.node)
    }
}

/// What a sync answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeSync {
    /// Done (or nothing to do): the work's failures are forgotten.
    Done,
    /// Failed; queue it again after its back-off.
    Retry(String),
    /// Failed for the last time: forget it until the Node changes again.
    GiveUp(String),
}

/// The queue a provider's controller asks for.
#[derive(Clone, Debug, PartialEq)]
pub struct QueueSettings {
    /// The workqueue's name (its `workqueue_*` metrics' `name` label).
    pub name: String,
    /// Workers syncing at once (at least 1).
    pub workers: usize,
    /// Every addition waits for a token of a bucket filled at `qps` up to
    /// `burst`; `None`: additions are not limited.
    pub rate_limit: Option<(f64, u32)>,
    /// The back-off of a retried work item: `base * 2^failures`, at most `max`.
    pub backoff: (Duration, Duration),
}

impl QueueSettings {
    /// One worker, no rate limit, client-go's default back-off (5 ms to 1000 s).
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            workers: 1,
            rate_limit: None,
            backoff: (Duration::from_millis(5), Duration::from_secs(1000)),
        }
    }
}

/// A provider's controller of Nodes. The CCM queues a [`NodeWork`] for
/// every Node added (and every Node in the cache when it starts), for every
/// update that [`NodeController::needs_sync`] admits, and for every Node
/// deleted; it calls [`NodeController::sync`] from its workers only while it
/// leads, never in shadow mode.
#[async_trait]
pub trait NodeController: Send + Sync {
    /// The queue to run it with.
    fn queue(&self) -> QueueSettings;

    /// Whether an update leaving `node` as it is needs a sync (additions
    /// and deletions always do).
    fn needs_sync(&self, _node: &Node) -> bool {
        true
    }

    /// Does the work; `requeues` is how often it failed before, since it
    /// last succeeded or was given up.
    async fn sync(&self, work: &NodeWork, requeues: u32) -> NodeSync;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_value_wins_and_all_are_kept() {
        let values = FlagValues::new(BTreeMap::from([(
            "tags".to_string(),
            vec!["a=1".to_string(), "b=2".to_string()],
        )]));
        assert_eq!(values.get("tags"), Some("b=2"));
        assert_eq!(values.all("tags"), ["a=1", "b=2"]);
        assert_eq!(values.get("other"), None);
        assert!(values.all("other").is_empty());
    }

    #[test]
    fn work_reads_as_upstreams_work_item() {
        let work = NodeWork {
            node: "n1".into(),
            provider_id: "aws:///z/i-1".into(),
            deleted: true,
        };
        assert_eq!(work.to_string(), "[Node: n1, Action: DELETE]");
    }
}
