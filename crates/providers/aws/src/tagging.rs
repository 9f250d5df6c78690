//! The tagging controller (cloud-provider-aws's `tagging`): tags each Node's
//! EC2 instance with `--tags`, marks the Node with the tags' checksum, and
//! takes the tags off when the Node goes. Decisions: [`crate::tagging_plan`].

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_ec2::error::ProvideErrorMetadata as _;
use aws_sdk_ec2::types::Tag;
use overcast_cloud_provider::k8s_openapi::api::core::v1::Node;
use overcast_cloud_provider::kube::{self, Api};
use overcast_cloud_provider::{
    CloudError, FlagValues, NodeController, NodeSync, NodeWork, ProviderContext, QueueSettings,
    Result,
};
use tokio::sync::{mpsc, oneshot};

use crate::AwsCloud;
use crate::metrics::{describe, timed};
use crate::tagging_plan::{
    self, AfterTagging, Answer, CLIENT_NAME, LABEL, TaggingOptions, Target, after_tagging,
    needs_tagging,
};

static ERRORS: LazyLock<prometheus::IntCounterVec> = LazyLock::new(|| {
    prometheus::IntCounterVec::new(
        prometheus::Opts::new(
            "cloudprovider_aws_tagging_controller_work_item_errors_total",
            "any error in dequeueing the work queue and processing workItem",
        ),
        &["error_type", "instance_id"],
    )
    .expect("a valid metric")
});

// Upstream's name, its misspelling included: dashboards look for it.
static INITIAL_DELAY: LazyLock<prometheus::Histogram> = LazyLock::new(|| {
    prometheus::Histogram::with_opts(
        prometheus::HistogramOpts::new(
            "tagging_controller_inital_node_tagging_delay_seconds",
            "Latency (in seconds) between node creation and its first successful tagging by TaggingController.",
        )
        .buckets(vec![1.0, 4.0, 16.0, 64.0, 256.0, 1024.0]),
    )
    .expect("a valid metric")
});

/// A CreateTags or DeleteTags call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Call {
    Create,
    Delete,
}

pub struct TaggingController {
    cloud: Arc<AwsCloud>,
    cluster: ProviderContext,
    options: TaggingOptions,
    checksum: String,
    client: kube::Client,
    /// With --tagging-controller-enable-batching: one batcher per call.
    batchers: Option<(Batcher, Batcher)>,
}

impl TaggingController {
    /// Checks the flags (an error stops the CCM, as upstream's Fatalf) and
    /// registers the metrics.
    pub fn new(cloud: Arc<AwsCloud>, flags: &FlagValues) -> Result<Self> {
        let options = tagging_plan::options(flags).map_err(|e| {
            CloudError::other(format!(
                "Tagging controller inputs are not properly set: {e}"
            ))
        })?;
        let cluster = cloud
            .cluster
            .get()
            .cloned()
            .ok_or_else(|| CloudError::other("the aws provider was not initialised"))?;
        overcast_cloud_provider::metrics::register_all(
            cluster.metrics(),
            vec![Box::new(ERRORS.clone()), Box::new(INITIAL_DELAY.clone())],
        )
        .map_err(CloudError::from_err)?;
        let client = cluster.client(CLIENT_NAME)?;
        let batchers = options.batching.then(|| {
            (
                Batcher::start(Arc::clone(&cloud), Call::Create, options.tags.clone()),
                Batcher::start(Arc::clone(&cloud), Call::Delete, options.tags.clone()),
            )
        });
        match options.rate_limit {
            Some((qps, burst)) => tracing::info!(
                "Rate limit enabled on controller with rate {qps} and burst {burst}."
            ),
            None => tracing::info!("Rate limit disabled on controller."),
        }
        Ok(Self {
            checksum: tagging_plan::checksum(&options.tags),
            cloud,
            cluster,
            options,
            client,
            batchers,
        })
    }

    async fn call(&self, call: Call, instance: &str) -> Answer {
        match &self.batchers {
            Some((create, delete)) => {
                let batcher = if call == Call::Create { create } else { delete };
                batcher.submit(instance.to_string()).await
            }
            None => {
                let ids = [instance.to_string()];
                ec2_call(&self.cloud, call, &ids, &self.options.tags).await
            }
        }
    }

    /// Tags the instance of the Node as the cache has it now, then labels it.
    async fn tag(&self, work: &NodeWork, fallback: &str) -> std::result::Result<(), String> {
        let Some(node) = self.cluster.nodes().get("", &work.node) else {
            return Ok(()); // gone since: the DELETE work undoes
        };
        let labels = node.metadata.labels.as_ref();
        if !needs_tagging(labels, &self.checksum) {
            tracing::debug!(
                "Skip tagging node {} since it was already tagged earlier.",
                work.node
            );
            return Ok(());
        }
        let initial = labels.is_none_or(|l| !l.contains_key(LABEL));
        let instance = match node
            .spec
            .as_ref()
            .and_then(|s| s.provider_id.as_deref())
            .map(tagging_plan::target)
        {
            Some(Target::Instance(id)) => id,
            _ => fallback.to_string(),
        };
        let age = node_age(&node);
        match after_tagging(
            &self.call(Call::Create, &instance).await,
            &instance,
            &work.node,
            age,
        ) {
            AfterTagging::Fail(e) => return Err(e),
            AfterTagging::Skip => {
                tracing::info!(
                    "Skip tagging since EC2 instance {instance} for node {} does not exist",
                    work.node
                );
                return Ok(());
            }
            AfterTagging::Label => {}
        }
        tracing::info!(
            "Successfully tagged {instance} with {:?}. Labeling the nodes with tagging controller labels now.",
            self.options.tags
        );
        let nodes: Api<Node> = Api::all(self.client.clone());
        let patch = serde_json::json!({"metadata": {"labels": {LABEL: self.checksum}}});
        nodes
            .patch(
                &work.node,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Strategic(patch),
            )
            .await
            .map_err(|e| {
                format!(
                    "couldn't apply labels {LABEL}={} to node {}: {e}",
                    self.checksum, work.node
                )
            })?;
        tracing::info!(
            "Successfully labeled node {} with {LABEL}={}.",
            work.node,
            self.checksum
        );
        if initial {
            INITIAL_DELAY.observe(node_age(&node).as_secs_f64());
        }
        Ok(())
    }

    /// Takes this controller's tags (with their values) off the instance.
    async fn untag(&self, work: &NodeWork, instance: &str) -> std::result::Result<(), String> {
        // Deleted and made again on the same instance: its tags stay (an
        // ADD that ran first would otherwise be undone with the label left).
        let back = self.cluster.nodes().get("", &work.node).is_some_and(|n| {
            n.spec.as_ref().and_then(|s| s.provider_id.as_deref()) == Some(&work.provider_id)
        });
        if back {
            tracing::info!(
                "Skip untagging node {}: it is back on {instance}",
                work.node
            );
            return Ok(());
        }
        match self.call(Call::Delete, instance).await {
            Answer::Done => {}
            Answer::NoSuchInstance => tracing::info!(
                "Couldn't find resource when trying to untag it hence skipping it, {instance}"
            ),
            Answer::Failed(e) => {
                return Err(format!(
                    "Error in untagging EC2 instance {instance} for node {}, error: {e}",
                    work.node
                ));
            }
        }
        tracing::info!(
            "Successfully untagged {instance} with {:?}",
            self.options.tags
        );
        Ok(())
    }
}

/// Since the Node's creation (unknown: as if long ago).
fn node_age(node: &Node) -> Duration {
    let Some(created) = node.metadata.creation_timestamp.as_ref() else {
        return Duration::MAX;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    Duration::from_millis(u64::try_from(now - created.0.as_millisecond()).unwrap_or(0))
}

#[async_trait]
impl NodeController for TaggingController {
    fn queue(&self) -> QueueSettings {
        QueueSettings {
            workers: self.options.workers,
            rate_limit: self.options.rate_limit,
            ..QueueSettings::named(CLIENT_NAME)
        }
    }

    fn needs_sync(&self, node: &Node) -> bool {
        needs_tagging(node.metadata.labels.as_ref(), &self.checksum)
    }

    async fn sync(&self, work: &NodeWork, requeues: u32) -> NodeSync {
        let instance = match tagging_plan::target(&work.provider_id) {
            Target::Instance(id) => id,
            Target::Fargate(id) => {
                tracing::info!("Skip processing the node {id} since it is a fargate node");
                return NodeSync::Done;
            }
            Target::Invalid(e) => {
                // Dropped, as upstream: the Node's next update (a
                // providerID set) queues it again.
                tracing::warn!(
                    "error in getting instanceID for node {}, error: {e}",
                    work.node
                );
                return NodeSync::Done;
            }
        };
        let result = if work.deleted {
            self.untag(work, &instance).await
        } else {
            self.tag(work, &instance).await
        };
        let Err(error) = result else {
            return NodeSync::Done;
        };
        if tagging_plan::retry(requeues) {
            ERRORS.with_label_values(&["total_errors", &instance]).inc();
            NodeSync::Retry(format!(
                "error processing work item '{work}': {error}, requeuing count {requeues}"
            ))
        } else {
            ERRORS
                .with_label_values(&["errors_after_retries_exhausted", &instance])
                .inc();
            NodeSync::GiveUp(format!(
                "error processing work item {work}: {error}, requeuing count exceeded"
            ))
        }
    }
}

/// One CreateTags/DeleteTags call for `ids` with `tags` (DeleteTags with
/// the values: AWS removes a tag only while it still has the value set).
async fn ec2_call(
    cloud: &AwsCloud,
    call: Call,
    ids: &[String],
    tags: &BTreeMap<String, String>,
) -> Answer {
    let ec2 = match cloud.clients().await {
        Ok(c) => &c.ec2,
        Err(e) => return Answer::Failed(e.to_string()),
    };
    let tags: Vec<Tag> = tags
        .iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect();
    let (code, error) = match call {
        Call::Create => {
            let request = ec2
                .create_tags()
                .set_resources(Some(ids.to_vec()))
                .set_tags(Some(tags));
            match timed("create_tags", request.send()).await {
                Ok(_) => return Answer::Done,
                Err(e) => (e.code().map(str::to_string), describe(&e)),
            }
        }
        Call::Delete => {
            let request = ec2
                .delete_tags()
                .set_resources(Some(ids.to_vec()))
                .set_tags(Some(tags));
            match timed("delete_tags", request.send()).await {
                Ok(_) => return Answer::Done,
                Err(e) => (e.code().map(str::to_string), describe(&e)),
            }
        }
    };
    if code.as_deref() == Some("InvalidInstanceID.NotFound") {
        Answer::NoSuchInstance
    } else {
        Answer::Failed(error)
    }
}

/// Gathers the instances of many Nodes into one call (upstream's batcher:
/// a batch goes after 100 ms without a new instance, after 1 s, or at 50),
/// and when the batch call fails, calls for each instance alone.
struct Batcher {
    requests: mpsc::UnboundedSender<(String, oneshot::Sender<Answer>)>,
}

const BATCH_IDLE: Duration = Duration::from_millis(100);
const BATCH_MAX_WAIT: Duration = Duration::from_secs(1);
const BATCH_MAX_ITEMS: usize = 50;
const BATCH_CALLS: usize = 100;

impl Batcher {
    /// Its task ends when the controller (the sender) is dropped.
    fn start(cloud: Arc<AwsCloud>, call: Call, tags: BTreeMap<String, String>) -> Self {
        let (requests, mut rx) = mpsc::unbounded_channel::<(String, oneshot::Sender<Answer>)>();
        let calls = Arc::new(tokio::sync::Semaphore::new(BATCH_CALLS));
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                let deadline = tokio::time::Instant::now() + BATCH_MAX_WAIT;
                while batch.len() < BATCH_MAX_ITEMS {
                    let idle = tokio::time::Instant::now() + BATCH_IDLE;
                    match tokio::time::timeout_at(idle.min(deadline), rx.recv()).await {
                        Ok(Some(next)) => batch.push(next),
                        Ok(None) | Err(_) => break,
                    }
                }
                // Each batch's calls run on their own (at most 100 at once),
                // so the next batch gathers meanwhile, as upstream's.
                let Ok(permit) = Arc::clone(&calls).acquire_owned().await else {
                    return;
                };
                let (cloud, tags) = (Arc::clone(&cloud), tags.clone());
                tokio::spawn(async move {
                    send_batch(&cloud, call, &tags, batch).await;
                    drop(permit);
                });
            }
        });
        Self { requests }
    }

    async fn submit(&self, instance: String) -> Answer {
        let (reply, answer) = oneshot::channel();
        if self.requests.send((instance, reply)).is_err() {
            return Answer::Failed("the tag batcher has stopped".into());
        }
        answer
            .await
            .unwrap_or_else(|_| Answer::Failed("the tag batcher has stopped".into()))
    }
}

/// One call for the batch; when it fails, one call per instance (the
/// answer of each goes to its own caller).
async fn send_batch(
    cloud: &Arc<AwsCloud>,
    call: Call,
    tags: &BTreeMap<String, String>,
    batch: Vec<(String, oneshot::Sender<Answer>)>,
) {
    let ids: Vec<String> = batch.iter().map(|(id, _)| id.clone()).collect();
    tracing::debug!(?call, size = ids.len(), "batched tag call");
    let answer = ec2_call(cloud, call, &ids, tags).await;
    if answer == Answer::Done || batch.len() == 1 {
        for (_, reply) in batch {
            let _ = reply.send(answer.clone());
        }
        return;
    }
    tracing::warn!("Error occurred trying to batch tag resources, trying individually, {answer:?}");
    let mut singles = tokio::task::JoinSet::new();
    for (id, reply) in batch {
        let (cloud, tags) = (Arc::clone(cloud), tags.clone());
        singles.spawn(async move {
            let _ = reply.send(ec2_call(&cloud, call, &[id], &tags).await);
        });
    }
    while singles.join_next().await.is_some() {}
}
