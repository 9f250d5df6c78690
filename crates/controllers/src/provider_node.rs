//! Runs a provider's own Node controller ([`NodeController`], as
//! cloud-provider-aws's tagging controller): the shared Node informer feeds
//! its work queue — every addition and deletion, the updates the provider
//! asks for — and workers hand each item to the provider, retrying with
//! back-off while it says so. The provider decides; this is the wiring.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use overcast_cloud_provider::{NodeController, NodeSync, NodeWork};

use crate::context::{CacheSync, Context};
use crate::informer::Change;
use crate::workqueue::{Backoff, Outcome, WorkQueue, run_workers};

/// The work a Node change calls for; `None`: nothing.
pub fn work_for(change: &Change<'_, Node>, needs_sync: impl Fn(&Node) -> bool) -> Option<NodeWork> {
    let (node, deleted) = match change {
        Change::Added(node) => (node, false),
        Change::Updated { new, .. } if needs_sync(new) => (new, false),
        Change::Updated { .. } => return None,
        Change::Deleted(node) => (node, true),
    };
    Some(NodeWork {
        node: node.metadata.name.clone().unwrap_or_default(),
        provider_id: node
            .spec
            .as_ref()
            .and_then(|s| s.provider_id.clone())
            .unwrap_or_default(),
        deleted,
    })
}

/// A token bucket (golang.org/x/time/rate's `Limiter.Reserve`): how long an
/// addition waits for its token.
#[derive(Debug)]
pub struct TokenBucket {
    qps: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// Full at the start, as rate.NewLimiter.
    pub fn new(qps: f64, burst: u32, now: Instant) -> Self {
        Self {
            qps,
            burst: f64::from(burst),
            tokens: f64::from(burst),
            last: now,
        }
    }

    /// Takes a token; the wait until it is there.
    pub fn reserve(&mut self, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.qps).min(self.burst);
        self.last = now;
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::try_from_secs_f64(-self.tokens / self.qps).unwrap_or(Duration::MAX)
        }
    }
}

/// A provider's Node controller, wired to the cluster.
pub struct ProviderNodeController {
    name: String,
    nodes_synced: CacheSync,
    queue: WorkQueue<NodeWork>,
    workers: usize,
    controller: Arc<dyn NodeController>,
    /// Retries wait for the larger of their back-off and a token of this
    /// bucket (client-go's MaxOf(ItemExponentialFailure, Bucket)).
    retry_bucket: Arc<Mutex<TokenBucket>>,
}

/// client-go's default controller bucket, for retries when the provider
/// sets no rate limit.
pub const DEFAULT_RETRY_BUCKET: (f64, u32) = (10.0, 100);

impl std::fmt::Debug for ProviderNodeController {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderNodeController")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl ProviderNodeController {
    /// Registers with the Node informer; `name` is the `--controllers` name.
    pub fn new(ctx: &Context, name: &str, controller: Arc<dyn NodeController>) -> Self {
        let settings = controller.queue();
        let queue = WorkQueue::new(
            settings.name.clone(),
            Backoff {
                base: settings.backoff.0,
                max: settings.backoff.1,
            },
        );
        let (qps, burst) = settings.rate_limit.unwrap_or(DEFAULT_RETRY_BUCKET);
        let retry_bucket = Arc::new(Mutex::new(TokenBucket::new(qps, burst, Instant::now())));
        // With a rate limit every addition takes a token of it, as upstream's
        // AddRateLimited; without one additions go straight in.
        let bucket = settings.rate_limit.map(|_| Arc::clone(&retry_bucket));
        let (q, c) = (queue.clone(), Arc::clone(&controller));
        ctx.nodes.on_change(move |change| {
            let Some(work) = work_for(&change, |n| c.needs_sync(n)) else {
                return;
            };
            match &bucket {
                None => q.add(work),
                Some(bucket) => {
                    let wait = bucket
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .reserve(Instant::now());
                    q.add_after(work, wait);
                }
            }
        });
        Self {
            name: name.to_string(),
            nodes_synced: ctx.nodes_synced(),
            queue,
            workers: settings.workers.max(1),
            controller,
            retry_bucket,
        }
    }

    /// Runs until dropped.
    pub async fn run(self) {
        self.nodes_synced.wait().await;
        tracing::info!(controller = %self.name, workers = self.workers, "starting workers");
        let queue = self.queue.clone();
        let controller = self.controller;
        let name: Arc<str> = self.name.into();
        let bucket = self.retry_bucket;
        run_workers(self.queue, self.workers, move |work: NodeWork| {
            let (queue, controller, name, bucket) = (
                queue.clone(),
                Arc::clone(&controller),
                Arc::clone(&name),
                Arc::clone(&bucket),
            );
            async move {
                let requeues = queue.requeues(&work);
                match controller.sync(&work, requeues).await {
                    NodeSync::Done => Outcome::Done,
                    NodeSync::Retry(error) => {
                        tracing::error!(controller = %name, %work, "{error}");
                        let backoff = queue.fail(&work);
                        let token = bucket
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .reserve(Instant::now());
                        Outcome::RetryAfter(backoff.max(token))
                    }
                    NodeSync::GiveUp(error) => {
                        tracing::error!(controller = %name, %work, "{error}; giving up until the Node changes");
                        Outcome::Done
                    }
                }
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NodeSpec;
    use kube::api::ObjectMeta;

    fn node(name: &str, provider_id: Option<&str>) -> Arc<Node> {
        Arc::new(Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                provider_id: provider_id.map(Into::into),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    #[test]
    fn additions_and_deletions_always_count_updates_only_when_asked() {
        let old = node("n1", None);
        let new = node("n1", Some("aws:///z/i-1"));
        let added = work_for(&Change::Added(&new), |_| false).unwrap();
        assert_eq!(
            added,
            NodeWork {
                node: "n1".into(),
                provider_id: "aws:///z/i-1".into(),
                deleted: false
            }
        );
        let update = Change::Updated {
            old: &old,
            new: &new,
        };
        assert_eq!(work_for(&update, |_| false), None);
        assert_eq!(work_for(&update, |_| true), Some(added));
        let deleted = work_for(&Change::Deleted(&old), |_| false).unwrap();
        assert!(deleted.deleted && deleted.provider_id.is_empty());
    }

    #[test]
    fn the_bucket_lets_a_burst_through_then_spaces_additions_at_its_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(2.0, 2, start);
        assert_eq!(bucket.reserve(start), Duration::ZERO);
        assert_eq!(bucket.reserve(start), Duration::ZERO);
        assert_eq!(bucket.reserve(start), Duration::from_millis(500));
        assert_eq!(bucket.reserve(start), Duration::from_secs(1));
        // A second later two tokens came back, both already promised.
        let later = start + Duration::from_secs(1);
        assert_eq!(bucket.reserve(later), Duration::from_millis(500));
        let mut slow = TokenBucket::new(1e-300, 1, start);
        slow.reserve(start);
        assert_eq!(slow.reserve(start), Duration::MAX);
    }
}
