//! The tagging controller's decisions, as cloud-provider-aws v1.36.1's
//! (pkg/controllers/tagging, options/tagging_controller.go): its flags and
//! their checks, the tag set's checksum that marks a Node done, the
//! instance a provider ID names, and what each answer from EC2 leads to.

use std::collections::BTreeMap;
use std::time::Duration;

use md5::{Digest as _, Md5};
use overcast_cloud_provider::{ControllerFlag, ControllerSpec, FlagKind, FlagValues};

/// Its name in `--controllers`; off unless named.
pub const CONTROLLER: &str = "tagging";
/// Its Kubernetes client's and work queue's name.
pub const CLIENT_NAME: &str = "tagging-controller";
/// The Node label holding the checksum of the tags last applied.
pub const LABEL: &str = "k8s.io/cloud-provider-aws";
/// Failures retried before a work item is given up (10 attempts).
pub const MAX_REQUEUES: u32 = 9;
/// A Node younger than this whose instance EC2 does not know yet is
/// retried (EC2 is eventually consistent); an older one is skipped.
pub const NEW_NODE_GRACE: Duration = Duration::from_secs(5 * 60);
/// The resources it can tag.
pub const SUPPORTED_RESOURCES: [&str; 1] = ["instance"];

const TAGS: &str = "tags";
const RESOURCES: &str = "resources";
const RATE_LIMIT: &str = "tagging-controller-rate-limit";
const BURST_LIMIT: &str = "tagging-controller-burst-limit";
const WORKERS: &str = "tagging-controller-concurrent-node-syncs";
const BATCHING: &str = "tagging-controller-enable-batching";

/// The controller and its flags, with upstream's names, defaults and help.
pub fn spec() -> ControllerSpec {
    let flag = ControllerFlag::new;
    ControllerSpec::new(CONTROLLER, "Tagging controller flags")
        .disabled_by_default()
        .flag(flag(
            TAGS,
            FlagKind::Repeated,
            "Tags to apply to AWS resources in the tagging controller, in a form of key=value.",
        ))
        .flag(flag(
            RESOURCES,
            FlagKind::Repeated,
            "AWS resources name to add/remove tags in the tagging controller.",
        ))
        .flag(
            flag(
                RATE_LIMIT,
                FlagKind::Value,
                "Steady-state rate limit (per sec) at which the controller processes items in its queue. A value of zero (default) disables rate limiting.",
            )
            .default_value("0"),
        )
        .flag(
            flag(
                BURST_LIMIT,
                FlagKind::Value,
                "Burst limit at which the controller processes items in its queue. A value of zero (default) disables rate limiting.",
            )
            .default_value("0"),
        )
        .flag(
            flag(
                WORKERS,
                FlagKind::Value,
                "The number of workers concurrently synchronizing nodes",
            )
            .default_value("1"),
        )
        .flag(
            flag(
                BATCHING,
                FlagKind::Switch,
                "Enables batching create and delete tag calls.",
            )
            .default_value("false"),
        )
        .check_flags(check_syntax)
}

/// What the flags say, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct TaggingOptions {
    pub tags: BTreeMap<String, String>,
    /// `(qps, burst)` when both are above zero (upstream's condition).
    pub rate_limit: Option<(f64, u32)>,
    pub workers: usize,
    pub batching: bool,
}

/// The flags' syntax, checked whether or not the controller runs (pflag's
/// parse errors).
fn check_syntax(values: &FlagValues) -> Result<(), String> {
    parse_tags(values.all(TAGS))?;
    number::<f64>(values, RATE_LIMIT)?;
    number::<i64>(values, BURST_LIMIT)?;
    number::<i64>(values, WORKERS)?;
    Ok(())
}

fn number<T: std::str::FromStr + Default>(values: &FlagValues, flag: &str) -> Result<T, String> {
    match values.get(flag) {
        None => Ok(T::default()),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| format!("invalid argument {v:?} for \"--{flag}\" flag: not a number")),
    }
}

/// Upstream's checks, in its order and words, when the controller starts;
/// then the limits AWS puts on tags, which upstream leaves to fail on every
/// Node.
pub fn options(values: &FlagValues) -> Result<TaggingOptions, String> {
    let tags = parse_tags(values.all(TAGS))?;
    let resources = values.all(RESOURCES);
    let rate: f64 = number(values, RATE_LIMIT)?;
    let burst: i64 = number(values, BURST_LIMIT)?;
    let workers: i64 = number(values, WORKERS)?;
    if tags.is_empty() {
        return Err("--tags must not be empty and must be a form of key=value".into());
    }
    if resources.is_empty() {
        return Err("--resources must not be empty".into());
    }
    if rate < 0.0 {
        return Err("--tagging-controller-rate-limit should not be less than zero".into());
    }
    if !rate.is_finite() {
        return Err(format!(
            "--tagging-controller-rate-limit={rate}: must be a finite number"
        ));
    }
    if burst < 0 {
        return Err("--tagging-controller-burst-limit should not be less than zero".into());
    }
    if workers <= 0 {
        return Err("--tagging-controller-concurrent-node-syncs must be a positive number".into());
    }
    if let Some(r) = resources
        .iter()
        .find(|r| !SUPPORTED_RESOURCES.contains(&r.as_str()))
    {
        return Err(format!(
            "{r} is not a supported resource. Current supported resources [{}]",
            SUPPORTED_RESOURCES.join(" ")
        ));
    }
    check_aws_limits(&tags)?;
    let burst = u32::try_from(burst).unwrap_or(u32::MAX);
    Ok(TaggingOptions {
        tags,
        rate_limit: (rate > 0.0 && burst > 0).then_some((rate, burst)),
        workers: usize::try_from(workers).unwrap_or(usize::MAX),
        batching: values.get(BATCHING) == Some("true"),
    })
}

/// EC2's tag rules (CreateTags): at most 50 tags, keys of 1–128 characters
/// not under `aws:`, values of at most 256.
fn check_aws_limits(tags: &BTreeMap<String, String>) -> Result<(), String> {
    if tags.len() > 50 {
        return Err(format!(
            "--tags: {} tags; EC2 takes at most 50 on a resource",
            tags.len()
        ));
    }
    for (key, value) in tags {
        if key.is_empty() || key.chars().count() > 128 {
            return Err(format!(
                "--tags: key {key:?}: EC2 tag keys have 1 to 128 characters"
            ));
        }
        if key.to_ascii_lowercase().starts_with("aws:") {
            return Err(format!(
                "--tags: key {key:?}: keys starting with aws: are reserved for AWS"
            ));
        }
        if value.chars().count() > 256 {
            return Err(format!(
                "--tags: the value of {key:?}: EC2 tag values have at most 256 characters"
            ));
        }
    }
    Ok(())
}

/// `--tags` as pflag's StringToString reads it: each occurrence is one
/// `key=value` when it holds one `=`, else a CSV record of them; later keys
/// win.
pub fn parse_tags(values: &[String]) -> Result<BTreeMap<String, String>, String> {
    let mut tags = BTreeMap::new();
    for value in values {
        let bad = |what: &str| {
            format!(
                "invalid argument {value:?} for \"--tags\" flag: {what} must be formatted as key=value"
            )
        };
        let pairs = match value.matches('=').count() {
            0 => return Err(bad(value)),
            1 => vec![value.trim_matches('"').to_string()],
            _ => csv_record(value)
                .map_err(|e| format!("invalid argument {value:?} for \"--tags\" flag: {e}"))?,
        };
        for pair in pairs {
            let (k, v) = pair.split_once('=').ok_or_else(|| bad(&pair))?;
            tags.insert(k.to_string(), v.to_string());
        }
    }
    Ok(tags)
}

/// One CSV record (Go's encoding/csv, strict quotes).
fn csv_record(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err("extraneous or missing \" in quoted-field".into()),
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                }
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => {}
                Some(_) => return Err("extraneous or missing \" in quoted-field".into()),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field);
                        return Ok(fields);
                    }
                    Some(',') => break,
                    Some('"') => return Err("bare \" in non-quoted-field".into()),
                    Some(c) => field.push(c),
                }
            }
        }
        fields.push(field);
    }
}

/// The label value marking a Node tagged with `tags`: the MD5 of the sorted
/// `key=value` strings joined by `,` (upstream's getChecksumOfTags).
pub fn checksum(tags: &BTreeMap<String, String>) -> String {
    let mut pairs: Vec<String> = tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.sort();
    Md5::digest(pairs.join(",").as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether a Node's label says it still needs the tags.
pub fn needs_tagging(labels: Option<&BTreeMap<String, String>>, checksum: &str) -> bool {
    labels.and_then(|l| l.get(LABEL)).map(String::as_str) != Some(checksum)
}

/// What a provider ID names, for tagging.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// An EC2 instance.
    Instance(String),
    /// A Fargate pod's Node: nothing to tag.
    Fargate(String),
    /// Not an AWS instance (no provider ID yet, another cloud's): the
    /// message upstream logs.
    Invalid(String),
}

/// Upstream's `MapToAWSInstanceID`: the last path segment of
/// `aws://<zone>/.../<id>` (or a bare ID), `i-...` or `fargate-...`.
pub fn target(provider_id: &str) -> Target {
    let invalid = || Target::Invalid(format!("Invalid format for AWS instance ({provider_id})"));
    let path = match provider_id.strip_prefix("aws://") {
        // After the scheme comes the URL's host (the zone, usually empty).
        Some(rest) => match rest.find('/') {
            Some(i) => &rest[i..],
            None => "",
        },
        None if provider_id.contains("://") => {
            return Target::Invalid(format!("Invalid scheme for AWS instance ({provider_id})"));
        }
        None => provider_id,
    };
    let id = path
        .trim_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default();
    if id.starts_with("fargate-") {
        Target::Fargate(id.to_string())
    } else if id.starts_with("i-") {
        Target::Instance(id.to_string())
    } else {
        invalid()
    }
}

/// How EC2 answered a tag call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    Done,
    /// `InvalidInstanceID.NotFound`.
    NoSuchInstance,
    Failed(String),
}

/// What follows a CreateTags answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AfterTagging {
    /// Label the Node.
    Label,
    /// The instance is gone; leave the Node unlabelled, no retry.
    Skip,
    /// Retry with this error.
    Fail(String),
}

/// A Node whose instance EC2 does not know is retried while young
/// (upstream's newNodeEventualConsistencyGracePeriod).
pub fn after_tagging(
    answer: &Answer,
    instance: &str,
    node: &str,
    node_age: Duration,
) -> AfterTagging {
    match answer {
        Answer::Done => AfterTagging::Label,
        Answer::NoSuchInstance if node_age < NEW_NODE_GRACE => AfterTagging::Fail(format!(
            "EC2 instance {instance} for node {node} does not exist, but node is within eventual consistency grace period"
        )),
        Answer::NoSuchInstance => AfterTagging::Skip,
        Answer::Failed(e) => AfterTagging::Fail(format!(
            "Error in tagging EC2 instance {instance} for node {node}, error: {e}"
        )),
    }
}

/// After a failure: retry while fewer than [`MAX_REQUEUES`] came before.
pub fn retry(requeues: u32) -> bool {
    requeues < MAX_REQUEUES
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(pairs: &[(&str, &[&str])]) -> FlagValues {
        let mut map: BTreeMap<String, Vec<String>> = BTreeMap::from([
            (RATE_LIMIT.to_string(), vec!["0".to_string()]),
            (BURST_LIMIT.to_string(), vec!["0".to_string()]),
            (WORKERS.to_string(), vec!["1".to_string()]),
            (BATCHING.to_string(), vec!["false".to_string()]),
        ]);
        for (k, v) in pairs {
            map.insert(k.to_string(), v.iter().map(|s| s.to_string()).collect());
        }
        FlagValues::new(map)
    }

    fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_checksum_is_upstreams() {
        // cloud-provider-aws tagging_controller_test.go: key1=value1.
        assert_eq!(
            checksum(&tags(&[("key1", "value1")])),
            "9767c4972ba72e87ab553bad2afde741"
        );
        // The pairs are sorted as strings: "a-b=2" before "a=1".
        let two = tags(&[("a", "1"), ("a-b", "2")]);
        let by_hand: String = Md5::digest(b"a-b=2,a=1")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(checksum(&two), by_hand);
        let sum = checksum(&two);
        assert!(needs_tagging(None, &sum));
        let labelled = BTreeMap::from([(LABEL.to_string(), sum.clone())]);
        assert!(!needs_tagging(Some(&labelled), &sum));
        assert!(needs_tagging(Some(&labelled), "other"));
    }

    #[test]
    fn tags_are_read_as_pflags_string_to_string() {
        let parse = |v: &[&str]| parse_tags(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(parse(&["a=b,c"]).unwrap(), tags(&[("a", "b,c")]));
        assert_eq!(
            parse(&["k1=v1,k2=v2", "k2=later", "\"q=x\""]).unwrap(),
            tags(&[("k1", "v1"), ("k2", "later"), ("q", "x")])
        );
        assert_eq!(
            parse(&["k=,\"j=a,b\""]).unwrap(),
            tags(&[("k", ""), ("j", "a,b")])
        );
        assert_eq!(
            parse(&["novalue"]).unwrap_err(),
            "invalid argument \"novalue\" for \"--tags\" flag: novalue must be formatted as key=value"
        );
        // Upstream's own doc example is refused by pflag too.
        let err = parse(&["Key1=Val1,Key2=Val2,KeyNoVal1=,KeyNoVal2"]).unwrap_err();
        assert!(
            err.ends_with("KeyNoVal2 must be formatted as key=value"),
            "{err}"
        );
        assert!(parse(&["a=1,b=\"2"]).is_err(), "a bare quote, as Go's csv");
    }

    #[test]
    fn options_are_checked_in_upstreams_order_and_words() {
        let err = |v: &[(&str, &[&str])]| options(&values(v)).unwrap_err();
        assert_eq!(
            err(&[]),
            "--tags must not be empty and must be a form of key=value"
        );
        assert_eq!(err(&[(TAGS, &["a=b"])]), "--resources must not be empty");
        assert_eq!(
            err(&[
                (TAGS, &["a=b"]),
                (RESOURCES, &["instance"]),
                (RATE_LIMIT, &["-1"])
            ]),
            "--tagging-controller-rate-limit should not be less than zero"
        );
        assert_eq!(
            err(&[
                (TAGS, &["a=b"]),
                (RESOURCES, &["instance"]),
                (BURST_LIMIT, &["-1"])
            ]),
            "--tagging-controller-burst-limit should not be less than zero"
        );
        assert_eq!(
            err(&[
                (TAGS, &["a=b"]),
                (RESOURCES, &["instance"]),
                (WORKERS, &["0"])
            ]),
            "--tagging-controller-concurrent-node-syncs must be a positive number"
        );
        assert_eq!(
            err(&[(TAGS, &["a=b"]), (RESOURCES, &["instance", "foo"])]),
            "foo is not a supported resource. Current supported resources [instance]"
        );
        assert!(err(&[(TAGS, &["aws:x=1"]), (RESOURCES, &["instance"])]).contains("reserved"));
        let ok = options(&values(&[
            (TAGS, &["team=a"]),
            (RESOURCES, &["instance"]),
            (RATE_LIMIT, &["2.5"]),
        ]))
        .unwrap();
        assert_eq!(ok.rate_limit, None, "a rate without a burst limits nothing");
        let ok = options(&values(&[
            (TAGS, &["team=a"]),
            (RESOURCES, &["instance"]),
            (RATE_LIMIT, &["2.5"]),
            (BURST_LIMIT, &["3"]),
            (WORKERS, &["4"]),
            (BATCHING, &["true"]),
        ]))
        .unwrap();
        assert_eq!(ok.rate_limit, Some((2.5, 3)));
        assert_eq!((ok.workers, ok.batching), (4, true));
        assert!(check_syntax(&values(&[(WORKERS, &["two"])])).is_err());
    }

    #[test]
    fn a_provider_id_names_an_instance_a_fargate_pod_or_nothing() {
        assert_eq!(
            target("aws:///us-east-1a/i-0abc"),
            Target::Instance("i-0abc".into())
        );
        assert_eq!(target("aws:////i-0abc"), Target::Instance("i-0abc".into()));
        assert_eq!(target("i-0abc"), Target::Instance("i-0abc".into()));
        assert_eq!(
            target(
                "aws:///us-west-2a/2ea696a557-9e55466d21eb4f83a99a9aa396bbd134/fargate-ip-10-0-55-27.us-west-2.compute.internal"
            ),
            Target::Fargate("fargate-ip-10-0-55-27.us-west-2.compute.internal".into())
        );
        assert_eq!(
            target(""),
            Target::Invalid("Invalid format for AWS instance ()".into())
        );
        assert!(matches!(target("gce://p/z/vm"), Target::Invalid(e) if e.contains("scheme")));
    }

    #[test]
    fn a_missing_instance_is_retried_only_while_its_node_is_new() {
        let young = Duration::from_secs(60);
        let old = Duration::from_secs(600);
        assert_eq!(
            after_tagging(&Answer::Done, "i-1", "n", old),
            AfterTagging::Label
        );
        assert!(matches!(
            after_tagging(&Answer::NoSuchInstance, "i-1", "n", young),
            AfterTagging::Fail(e) if e.contains("within eventual consistency grace period")
        ));
        assert_eq!(
            after_tagging(&Answer::NoSuchInstance, "i-1", "n", old),
            AfterTagging::Skip
        );
        assert!(retry(8) && !retry(9), "ten attempts in all");
    }
}
