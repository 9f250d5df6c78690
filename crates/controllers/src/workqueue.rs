//! A work queue with client-go's semantics: a key waiting in the queue is there
//! once however often it is added; a key being processed is never handed to a
//! second worker, and if it is added meanwhile it is processed again afterwards;
//! failures back off per key, exponentially, until the key is forgotten.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus::{Gauge, Histogram, IntCounter, IntGauge};
use tokio::sync::Notify;

use crate::metrics;

/// Per-key exponential back-off: `base * 2^failures`, at most `max`
/// (client-go's `ItemExponentialFailureRateLimiter`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The delay after `failures` earlier failures.
    pub fn delay(&self, failures: u32) -> Duration {
        let factor = 2u32.checked_pow(failures).unwrap_or(u32::MAX);
        self.base
            .checked_mul(factor)
            .unwrap_or(self.max)
            .min(self.max)
    }
}

/// A cloneable handle to one queue.
#[derive(Debug)]
pub struct WorkQueue<K> {
    inner: Arc<Inner<K>>,
}

impl<K> Clone for WorkQueue<K> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

#[derive(Debug)]
struct Inner<K> {
    name: String,
    backoff: Backoff,
    state: Mutex<State<K>>,
    ready: Notify,
    metrics: QueueMetrics,
}

/// This queue's series of upstream's workqueue_* metrics.
#[derive(Debug)]
struct QueueMetrics {
    depth: IntGauge,
    adds: IntCounter,
    retries: IntCounter,
    queue_duration: Histogram,
    work_duration: Histogram,
    unfinished: Gauge,
    longest_running: Gauge,
}

impl QueueMetrics {
    fn new(name: &str) -> Self {
        Self {
            depth: metrics::WORKQUEUE_DEPTH.with_label_values(&[name]),
            adds: metrics::WORKQUEUE_ADDS.with_label_values(&[name]),
            retries: metrics::WORKQUEUE_RETRIES.with_label_values(&[name]),
            queue_duration: metrics::WORKQUEUE_QUEUE_DURATION.with_label_values(&[name]),
            work_duration: metrics::WORKQUEUE_WORK_DURATION.with_label_values(&[name]),
            unfinished: metrics::WORKQUEUE_UNFINISHED_WORK.with_label_values(&[name]),
            longest_running: metrics::WORKQUEUE_LONGEST_RUNNING.with_label_values(&[name]),
        }
    }
}

#[derive(Debug)]
struct State<K> {
    queue: VecDeque<K>,
    dirty: HashSet<K>,
    /// Keys being processed, since when.
    processing: HashMap<K, Instant>,
    /// Keys waiting, since when (for workqueue_queue_duration_seconds).
    queued_at: HashMap<K, Instant>,
    failures: HashMap<K, u32>,
    /// Keys to be added later, and when: one timer per key, the earliest
    /// (client-go's delaying queue), however often a key is delayed.
    waiting: HashMap<K, tokio::time::Instant>,
    shut_down: bool,
}

impl<K> WorkQueue<K>
where
    K: Clone + Eq + Hash + Debug + Send + Sync + 'static,
{
    pub fn new(name: impl Into<String>, backoff: Backoff) -> Self {
        let name = name.into();
        Self {
            inner: Arc::new(Inner {
                metrics: QueueMetrics::new(&name),
                name,
                backoff,
                state: Mutex::new(State {
                    queue: VecDeque::new(),
                    dirty: HashSet::new(),
                    processing: HashMap::new(),
                    queued_at: HashMap::new(),
                    waiting: HashMap::new(),
                    failures: HashMap::new(),
                    shut_down: false,
                }),
                ready: Notify::new(),
            }),
        }
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State<K>> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds `key` unless it is already waiting.
    pub fn add(&self, key: K) {
        let mut state = self.state();
        if state.shut_down || state.dirty.contains(&key) {
            return;
        }
        self.inner.metrics.adds.inc();
        state.dirty.insert(key.clone());
        state.queued_at.insert(key.clone(), Instant::now());
        if state.processing.contains_key(&key) {
            return; // re-queued by done()
        }
        state.queue.push_back(key);
        self.inner.metrics.depth.set(state.queue.len() as i64);
        drop(state);
        self.inner.ready.notify_one();
    }

    /// Adds `key` after `delay`. A key already waiting keeps the earlier of
    /// its two times, so delaying it again and again holds one timer.
    pub fn add_after(&self, key: K, delay: Duration) {
        if delay.is_zero() {
            return self.add(key);
        }
        let now = tokio::time::Instant::now();
        // Past Instant's range: a time no process lives to see.
        let due = now
            .checked_add(delay)
            .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400));
        {
            let mut state = self.state();
            if state.shut_down || state.waiting.get(&key).is_some_and(|t| *t <= due) {
                return;
            }
            state.waiting.insert(key.clone(), due);
        }
        let queue = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(due).await;
            let mut state = queue.state();
            // An earlier time replaced this one: its own timer adds the key.
            if state.waiting.get(&key) != Some(&due) {
                return;
            }
            state.waiting.remove(&key);
            drop(state);
            queue.add(key);
        });
    }

    /// Counts one more failure for `key`; the back-off it has earned.
    pub fn fail(&self, key: &K) -> Duration {
        let mut state = self.state();
        let failures = state.failures.entry(key.clone()).or_insert(0);
        let delay = self.inner.backoff.delay(*failures);
        *failures = failures.saturating_add(1);
        drop(state);
        self.inner.metrics.retries.inc();
        delay
    }

    /// Adds `key` after its back-off, and counts one more failure for it.
    pub fn add_rate_limited(&self, key: K) {
        let delay = self.fail(&key);
        self.add_after(key, delay);
    }

    /// Clears the failure count of `key` (after a success).
    pub fn forget(&self, key: &K) {
        self.state().failures.remove(key);
    }

    /// How many failures `key` has had since it was last forgotten.
    pub fn requeues(&self, key: &K) -> u32 {
        self.state().failures.get(key).copied().unwrap_or(0)
    }

    /// Waits for the next key; `None` once the queue is shut down. The caller
    /// must call [`WorkQueue::done`] with the key when it has finished.
    pub async fn get(&self) -> Option<K> {
        loop {
            let notified = self.inner.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut state = self.state();
                if let Some(key) = state.queue.pop_front() {
                    let now = Instant::now();
                    state.dirty.remove(&key);
                    if let Some(since) = state.queued_at.remove(&key) {
                        self.inner
                            .metrics
                            .queue_duration
                            .observe(now.duration_since(since).as_secs_f64());
                    }
                    state.processing.insert(key.clone(), now);
                    self.inner.metrics.depth.set(state.queue.len() as i64);
                    let more = !state.queue.is_empty();
                    drop(state);
                    if more {
                        self.inner.ready.notify_one();
                    }
                    return Some(key);
                }
                if state.shut_down {
                    return None;
                }
            }
            notified.await;
        }
    }

    /// Marks `key` finished; if it was added while processing, it waits again.
    pub fn done(&self, key: &K) {
        let mut state = self.state();
        if let Some(since) = state.processing.remove(key) {
            self.inner
                .metrics
                .work_duration
                .observe(since.elapsed().as_secs_f64());
        }
        if state.dirty.contains(key) {
            state.queue.push_back(key.clone());
            self.inner.metrics.depth.set(state.queue.len() as i64);
            drop(state);
            self.inner.ready.notify_one();
        }
    }

    /// Keys waiting (not those being processed).
    pub fn len(&self) -> usize {
        self.state().queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Refreshes the in-progress gauges (client-go does this every 500 ms).
    pub fn update_unfinished_work_metrics(&self) {
        let state = self.state();
        let now = Instant::now();
        let (total, longest) = state
            .processing
            .values()
            .fold((0.0, 0.0f64), |(t, l), since| {
                let secs = now.duration_since(*since).as_secs_f64();
                (t + secs, l.max(secs))
            });
        self.inner.metrics.unfinished.set(total);
        self.inner.metrics.longest_running.set(longest);
    }

    /// Stops handing out keys; workers see `None` from [`WorkQueue::get`].
    pub fn shut_down(&self) {
        self.state().shut_down = true;
        self.inner.ready.notify_waiters();
    }
}

/// What a sync tells the worker loop.
#[derive(Debug)]
pub enum Outcome {
    /// Success: forget the key's failures.
    Done,
    /// Failure: retry after the key's back-off.
    Retry,
    /// Retry after exactly this delay (a provider's `RetryError`).
    RetryAfter(Duration),
}

/// Runs `workers` tasks that take keys from `queue` and pass them to `sync`,
/// until the queue shuts down.
pub async fn run_workers<K, F, Fut>(queue: WorkQueue<K>, workers: usize, sync: F)
where
    K: Clone + Eq + Hash + Debug + Send + Sync + 'static,
    F: Fn(K) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Outcome> + Send,
{
    let mut tasks = tokio::task::JoinSet::new();
    let gauges = queue.clone();
    let _metrics_ticker = AbortOnDrop(tokio::spawn(async move {
        let mut ticker = tokio::time::interval(Duration::from_millis(500));
        loop {
            ticker.tick().await;
            gauges.update_unfinished_work_metrics();
        }
    }));
    for _ in 0..workers.max(1) {
        let queue = queue.clone();
        let sync = sync.clone();
        tasks.spawn(async move {
            while let Some(key) = queue.get().await {
                match sync(key.clone()).await {
                    Outcome::Done => queue.forget(&key),
                    Outcome::Retry => queue.add_rate_limited(key.clone()),
                    Outcome::RetryAfter(delay) => queue.add_after(key.clone(), delay),
                }
                queue.done(&key);
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// Aborts a background task when the future that owns it is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue() -> WorkQueue<String> {
        WorkQueue::new(
            "test",
            Backoff {
                base: Duration::from_millis(5),
                max: Duration::from_secs(1000),
            },
        )
    }

    #[test]
    fn backoff_doubles_per_failure_up_to_the_cap() {
        let b = Backoff {
            base: Duration::from_secs(5),
            max: Duration::from_secs(300),
        };
        let delays: Vec<u64> = (0..8).map(|f| b.delay(f).as_secs()).collect();
        assert_eq!(delays, [5, 10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(b.delay(200), Duration::from_secs(300));
    }

    #[tokio::test]
    async fn a_key_added_twice_waits_once() {
        let q = queue();
        q.add("a".into());
        q.add("a".into());
        q.add("b".into());
        assert_eq!(q.len(), 2);
        assert_eq!(q.get().await.as_deref(), Some("a"));
        assert_eq!(q.get().await.as_deref(), Some("b"));
    }

    #[tokio::test]
    async fn a_key_added_while_processing_comes_back_after_done_not_before() {
        let q = queue();
        q.add("a".into());
        let key = q.get().await.unwrap();
        q.add("a".into());
        assert!(q.is_empty(), "must not be handed to a second worker");
        q.done(&key);
        assert_eq!(q.len(), 1);
        assert_eq!(q.get().await.as_deref(), Some("a"));
    }

    #[tokio::test]
    async fn failures_count_until_forgotten() {
        let q = queue();
        q.add_rate_limited("a".into());
        q.add_rate_limited("a".into());
        assert_eq!(q.requeues(&"a".to_string()), 2);
        q.forget(&"a".to_string());
        assert_eq!(q.requeues(&"a".to_string()), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn add_after_delivers_later() {
        let q = queue();
        q.add_after("a".into(), Duration::from_secs(5));
        tokio::task::yield_now().await;
        assert!(q.is_empty());
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert_eq!(q.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_delayed_again_keeps_one_timer_at_the_earlier_time() {
        let q = queue();
        q.add_after("a".into(), Duration::from_secs(50));
        q.add_after("a".into(), Duration::from_secs(5));
        for _ in 0..1000 {
            q.add_after("a".into(), Duration::from_secs(3600));
        }
        assert_eq!(q.state().waiting.len(), 1);
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert_eq!(q.len(), 1, "added at the earlier time");
        assert_eq!(q.get().await, Some("a".to_string()));
        q.done(&"a".to_string());
        tokio::time::sleep(Duration::from_secs(100)).await;
        assert!(q.is_empty(), "the later timers were dropped, not re-added");
    }

    #[tokio::test]
    async fn shut_down_wakes_waiting_workers() {
        let q = queue();
        let waiter = tokio::spawn({
            let q = q.clone();
            async move { q.get().await }
        });
        tokio::task::yield_now().await;
        q.shut_down();
        assert_eq!(waiter.await.unwrap(), None);
    }

    #[tokio::test]
    async fn workers_retry_failed_keys_until_they_succeed() {
        let q = queue();
        let attempts = Arc::new(Mutex::new(0));
        q.add("a".into());
        let runner = tokio::spawn(run_workers(q.clone(), 2, {
            let attempts = attempts.clone();
            let q = q.clone();
            move |_key: String| {
                let attempts = attempts.clone();
                let q = q.clone();
                async move {
                    let mut n = attempts.lock().unwrap();
                    *n += 1;
                    if *n < 3 {
                        Outcome::Retry
                    } else {
                        q.shut_down();
                        Outcome::Done
                    }
                }
            }
        }));
        tokio::time::timeout(Duration::from_secs(10), runner)
            .await
            .expect("workers finish")
            .unwrap();
        assert_eq!(*attempts.lock().unwrap(), 3);
        assert_eq!(q.requeues(&"a".to_string()), 0, "success forgets failures");
    }
}
