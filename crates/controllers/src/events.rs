//! Kubernetes Events (core/v1), as upstream's controllers record them: a source
//! component per controller, and client-go's EventCorrelator with its
//! default options (tools/record/events_cache.go, v0.34): similar Events
//! aggregated, repeats folded into one object whose count grows, and at most
//! 25 Events per source and object, then one per five minutes, so a
//! flapping object cannot flood etcd.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource};

pub use overcast_cloud_provider::EventType;
use overcast_cloud_provider::object_reference;

#[derive(Clone)]
pub struct Recorder {
    writer: Arc<Writer>,
    /// Events wait here for the one task that writes them, as in client-go's
    /// broadcaster; started on first use.
    queue: Arc<std::sync::OnceLock<tokio::sync::mpsc::Sender<Event>>>,
}

/// client-go's broadcaster queue length: beyond it, Events are dropped (with
/// a log line) rather than competing with the controllers' own writes.
const QUEUE: usize = 1000;

/// client-go's recordToSink: at most this many tries of one Event, 10 s
/// apart (the first wait jittered), for errors other than the apiserver's
/// own refusals.
const MAX_TRIES: u32 = 12;
const RETRY_SLEEP: std::time::Duration = std::time::Duration::from_secs(10);

/// Writes Events; owned by the queue's task, so dropping every Recorder ends it.
struct Writer {
    client: Client,
    component: String,
    correlator: Mutex<Correlator>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("component", &self.writer.component)
            .finish_non_exhaustive()
    }
}

impl Recorder {
    /// `component` is the event source, e.g. `cloud-node-controller`.
    pub fn new(client: Client, component: impl Into<String>) -> Self {
        Self {
            writer: Arc::new(Writer {
                client,
                component: component.into(),
                correlator: Mutex::new(Correlator::default()),
            }),
            queue: Arc::new(std::sync::OnceLock::new()),
        }
    }

    /// Records an event about `obj` in the background; failures are logged,
    /// never returned, as for upstream's recorder.
    pub fn publish<K>(&self, obj: &K, type_: EventType, reason: &str, message: impl Into<String>)
    where
        K: Resource<DynamicType = ()>,
    {
        self.publish_about(object_reference(obj), type_, reason, message.into());
    }

    fn publish_about(
        &self,
        reference: ObjectReference,
        type_: EventType,
        reason: &str,
        message: String,
    ) {
        let event = new_event(
            reference,
            &self.writer.component,
            type_,
            reason,
            message,
            Timestamp::now(),
        );
        let queue = self.queue.get_or_init(|| {
            let (tx, mut rx) = tokio::sync::mpsc::channel::<Event>(QUEUE);
            let writer = Arc::clone(&self.writer);
            tokio::spawn(async move {
                while let Some(event) = rx.recv().await {
                    writer.record(event).await;
                }
            });
            tx
        });
        if queue.try_send(event).is_err() {
            tracing::warn!(
                reason,
                "event queue full; dropping the event as client-go's broadcaster does"
            );
        }
    }
}

/// The Event client-go's recorder makes (makeEvent/generateEvent): named
/// `<object>.<hex nanoseconds>`, in the object's namespace or `default`.
fn new_event(
    reference: ObjectReference,
    component: &str,
    type_: EventType,
    reason: &str,
    message: String,
    now: Timestamp,
) -> Event {
    // Events about cluster-scoped objects (Nodes) live in "default", as upstream's do.
    let namespace = reference
        .namespace
        .clone()
        .filter(|ns| !ns.is_empty())
        .unwrap_or_else(|| "default".to_string());
    let now = Time(now);
    Event {
        metadata: ObjectMeta {
            name: Some(event_name(
                reference.name.as_deref().unwrap_or_default(),
                &now,
            )),
            namespace: Some(namespace),
            ..Default::default()
        },
        involved_object: reference,
        reason: Some(reason.to_string()),
        message: Some(message),
        type_: Some(type_.as_str().to_string()),
        source: Some(EventSource {
            component: Some(component.to_string()),
            host: None,
        }),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        count: Some(1),
        reporting_component: Some(component.to_string()),
        reporting_instance: Some(String::new()),
        ..Default::default()
    }
}

fn event_name(object: &str, now: &Time) -> String {
    format!("{object}.{:x}", now.0.as_nanosecond())
}

impl Writer {
    async fn record(&self, event: Event) {
        let now = event
            .last_timestamp
            .clone()
            .map(|t| t.0)
            .unwrap_or_else(Timestamp::now);
        let decision = self.lock().correlate(event, now);
        let Some((event, patch)) = decision else {
            return;
        };
        for attempt in 1..=MAX_TRIES {
            match self.write(&event, patch.as_ref()).await {
                Ok(written) => {
                    self.lock().update_state(&written);
                    return;
                }
                // The apiserver's refusals are final, as client-go's.
                Err(kube::Error::Api(status)) => {
                    tracing::warn!(event = ?event.metadata.name, reason = ?event.reason, "server rejected event (will not retry): {}", status.message);
                    return;
                }
                Err(e) if attempt < MAX_TRIES => {
                    // The first wait is jittered, so clients do not retry in step.
                    let sleep = if attempt == 1 {
                        RETRY_SLEEP.mul_f64(pseudo_random_fraction())
                    } else {
                        RETRY_SLEEP
                    };
                    tracing::debug!(error = %e, "unable to write event (may retry after sleeping)");
                    tokio::time::sleep(sleep).await;
                }
                Err(e) => {
                    tracing::warn!(event = ?event.metadata.name, reason = ?event.reason, error = %e, "unable to write event (retry limit exceeded)");
                }
            }
        }
    }

    /// A repeat is a strategic merge patch of count, lastTimestamp and
    /// message; a patch of an Event that is gone becomes a create.
    async fn write(
        &self,
        event: &Event,
        patch: Option<&serde_json::Value>,
    ) -> Result<Event, kube::Error> {
        let namespace = event.metadata.namespace.as_deref().unwrap_or("default");
        let api: Api<Event> = Api::namespaced(self.client.clone(), namespace);
        if let Some(patch) = patch {
            let name = event.metadata.name.as_deref().unwrap_or_default();
            match api
                .patch(name, &PatchParams::default(), &Patch::Strategic(patch))
                .await
            {
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                other => return other,
            }
        }
        let mut create = event.clone();
        create.metadata.resource_version = None;
        api.create(&PostParams::default(), &create).await
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Correlator> {
        self.correlator.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A fraction in [0, 1) for jitter (retries, leader election), without a
/// random number crate.
pub fn pseudo_random_fraction() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    f64::from(nanos % 1_000_000) / 1_000_000.0
}

/// client-go's events_cache.go defaults (CorrelatorOptions left zero, as
/// every upstream CCM controller leaves them).
const CACHE_ENTRIES: usize = 4096;
const SPAM_BURST: f64 = 25.0;
const SPAM_QPS: f64 = 1.0 / 300.0;
const AGGREGATE_MAX_EVENTS: usize = 10;
const AGGREGATE_INTERVAL_SECONDS: i64 = 600;

/// client-go's EventCorrelator, decision only (no I/O): the aggregator (ten
/// distinct messages of one reason about one object within ten minutes
/// become one "(combined from similar events)" Event), the logger (a repeat
/// becomes a patch of the first Event's count), then the spam filter (25
/// Events per source, object and type, then one per five minutes; the rest
/// are dropped) — in that order, so dropped repeats still count.
#[derive(Debug, Default)]
pub struct Correlator {
    spam: Lru<String, Bucket>,
    aggregates: Lru<String, Aggregate>,
    logged: Lru<String, Logged>,
}

#[derive(Debug, Clone)]
struct Bucket {
    tokens: f64,
    at: Timestamp,
}

#[derive(Debug, Clone)]
struct Aggregate {
    messages: std::collections::HashSet<String>,
    last: Timestamp,
}

#[derive(Debug, Clone)]
struct Logged {
    count: i32,
    first: Option<Time>,
    name: String,
}

impl Correlator {
    /// What to write for `event`: the Event, and the patch when it repeats
    /// an earlier one; `None` when the spam filter drops it.
    pub fn correlate(
        &mut self,
        event: Event,
        now: Timestamp,
    ) -> Option<(Event, Option<serde_json::Value>)> {
        let (mut event, key) = self.aggregate(event, now);
        let mut patch = None;
        if let Some(seen) = self.logged.get(&key).cloned() {
            event.metadata.name = Some(seen.name.clone());
            event.first_timestamp = seen.first.clone();
            event.count = Some(seen.count + 1);
            patch = Some(serde_json::json!({
                "count": seen.count + 1,
                "lastTimestamp": event.last_timestamp,
                "message": event.message,
            }));
        }
        self.logged.put(
            key.clone(),
            Logged {
                count: event.count.unwrap_or(1),
                first: event.first_timestamp.clone(),
                name: event.metadata.name.clone().unwrap_or_default(),
            },
        );
        if !self.accept(&event, now) {
            return None;
        }
        Some((event, patch))
    }

    /// After a write: what the apiserver holds, under the written Event's
    /// own key (client-go's updateState).
    pub fn update_state(&mut self, written: &Event) {
        let logged = Logged {
            count: written.count.unwrap_or(1),
            first: written.first_timestamp.clone(),
            name: written.metadata.name.clone().unwrap_or_default(),
        };
        self.logged.put(event_key(written), logged);
    }

    fn aggregate(&mut self, event: Event, now: Timestamp) -> (Event, String) {
        let key = event_key(&event);
        let aggregate_key = aggregate_key(&event);
        let message = event.message.clone().unwrap_or_default();
        let mut record = self
            .aggregates
            .get(&aggregate_key)
            .cloned()
            .filter(|r| now.as_second() - r.last.as_second() <= AGGREGATE_INTERVAL_SECONDS)
            .unwrap_or_else(|| Aggregate {
                messages: Default::default(),
                last: now,
            });
        record.messages.insert(message.clone());
        record.last = now;
        let combine = record.messages.len() >= AGGREGATE_MAX_EVENTS;
        if combine {
            // "Do not grow our local key set any larger than max."
            if let Some(any) = record.messages.iter().next().cloned() {
                record.messages.remove(&any);
            }
        }
        self.aggregates.put(aggregate_key.clone(), record);
        if !combine {
            return (event, key);
        }
        let now = Time(now);
        let object = event.involved_object.name.clone().unwrap_or_default();
        let combined = Event {
            metadata: ObjectMeta {
                name: Some(event_name(&object, &now)),
                namespace: event.metadata.namespace.clone(),
                ..Default::default()
            },
            count: Some(1),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            involved_object: event.involved_object,
            message: Some(format!("(combined from similar events): {message}")),
            type_: event.type_,
            reason: event.reason,
            source: event.source,
            ..Default::default()
        };
        (combined, aggregate_key)
    }

    /// The passive token bucket of the event's source, object and type.
    fn accept(&mut self, event: &Event, now: Timestamp) -> bool {
        let key = spam_key(event);
        let mut bucket = self.spam.get(&key).cloned().unwrap_or(Bucket {
            tokens: SPAM_BURST,
            at: now,
        });
        let elapsed = (now.as_nanosecond() - bucket.at.as_nanosecond()).max(0) as f64 / 1e9;
        bucket.tokens = (bucket.tokens + elapsed * SPAM_QPS).min(SPAM_BURST);
        bucket.at = now;
        let accepted = bucket.tokens >= 1.0;
        if accepted {
            bucket.tokens -= 1.0;
        }
        self.spam.put(key, bucket);
        accepted
    }
}

fn source_and_object(e: &Event) -> Vec<&str> {
    let o = &e.involved_object;
    let source = e.source.as_ref();
    vec![
        source
            .and_then(|s| s.component.as_deref())
            .unwrap_or_default(),
        source.and_then(|s| s.host.as_deref()).unwrap_or_default(),
        o.kind.as_deref().unwrap_or_default(),
        o.namespace.as_deref().unwrap_or_default(),
        o.name.as_deref().unwrap_or_default(),
    ]
}

/// getEventKey: source, the whole object reference, type, reason, message.
fn event_key(e: &Event) -> String {
    let o = &e.involved_object;
    let mut parts = source_and_object(e);
    parts.extend([
        o.field_path.as_deref().unwrap_or_default(),
        o.uid.as_deref().unwrap_or_default(),
        o.api_version.as_deref().unwrap_or_default(),
        e.type_.as_deref().unwrap_or_default(),
        e.reason.as_deref().unwrap_or_default(),
        e.message.as_deref().unwrap_or_default(),
    ]);
    parts.concat()
}

/// getSpamKey: source, object (without field path), type.
fn spam_key(e: &Event) -> String {
    let o = &e.involved_object;
    let mut parts = source_and_object(e);
    parts.extend([
        o.uid.as_deref().unwrap_or_default(),
        o.api_version.as_deref().unwrap_or_default(),
        e.type_.as_deref().unwrap_or_default(),
    ]);
    parts.concat()
}

/// EventAggregatorByReasonFunc: the spam key's fields, the reason and the
/// reporting controller and instance.
fn aggregate_key(e: &Event) -> String {
    let mut key = spam_key(e);
    key += e.reason.as_deref().unwrap_or_default();
    key += e.reporting_component.as_deref().unwrap_or_default();
    key += e.reporting_instance.as_deref().unwrap_or_default();
    key
}

/// A least-recently-used map of at most CACHE_ENTRIES, as k8s.io/utils/lru.
#[derive(Debug)]
struct Lru<K, V> {
    entries: HashMap<K, (V, u64)>,
    clock: u64,
}

impl<K, V> Default for Lru<K, V> {
    fn default() -> Self {
        Self {
            entries: HashMap::new(),
            clock: 0,
        }
    }
}

impl<K: std::hash::Hash + Eq + Clone, V> Lru<K, V> {
    fn get(&mut self, key: &K) -> Option<&V> {
        self.clock += 1;
        let clock = self.clock;
        self.entries.get_mut(key).map(|(v, used)| {
            *used = clock;
            &*v
        })
    }

    fn put(&mut self, key: K, value: V) {
        self.clock += 1;
        if self.entries.len() >= CACHE_ENTRIES && !self.entries.contains_key(&key) {
            // Evicting is a scan, but only when full.
            if let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
            {
                self.entries.remove(&oldest);
            }
        }
        self.entries.insert(key, (value, self.clock));
    }
}

/// A provider's Events go through the same queue, correlator and spam
/// filter as the controllers'.
impl overcast_cloud_provider::EventRecorder for Recorder {
    fn record(&self, about: ObjectReference, type_: EventType, reason: &str, message: String) {
        self.publish_about(about, type_, reason, message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event_about(object: &str, reason: &str, message: &str, at: Timestamp) -> Event {
        let reference = ObjectReference {
            kind: Some("Service".into()),
            namespace: Some("default".into()),
            name: Some(object.into()),
            uid: Some(format!("uid-{object}")),
            api_version: Some("v1".into()),
            ..Default::default()
        };
        new_event(
            reference,
            "service-controller",
            EventType::Warning,
            reason,
            message.into(),
            at,
        )
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    #[test]
    fn repeats_patch_the_first_event_and_a_source_gets_25_then_one_per_five_minutes() {
        let mut c = Correlator::default();
        let mut written = Vec::new();
        for i in 0..40 {
            let e = event_about("web", "SyncLoadBalancerFailed", "no pool", at(i));
            if let Some((e, patch)) = c.correlate(e, at(i)) {
                written.push((
                    e.metadata.name.clone().unwrap(),
                    e.count.unwrap(),
                    patch.is_some(),
                ));
            }
        }
        assert_eq!(written.len(), 25, "the burst");
        assert!(
            !written[0].2 && written[1..].iter().all(|w| w.2),
            "a create, then patches"
        );
        assert!(
            written.iter().all(|w| w.0 == written[0].0),
            "one Event object"
        );
        assert_eq!(written[24].1, 25);
        // Five minutes on, one more gets through, counting the dropped ones.
        let e = event_about("web", "SyncLoadBalancerFailed", "no pool", at(340));
        let (e, patch) = c.correlate(e, at(340)).expect("a token after 300 s");
        assert_eq!(e.count, Some(41));
        assert_eq!(patch.unwrap()["count"], 41);
        let e = event_about("web", "SyncLoadBalancerFailed", "no pool", at(341));
        assert!(c.correlate(e, at(341)).is_none());
        // Another object, or a Normal event, has a bucket of its own.
        let other = event_about("api", "SyncLoadBalancerFailed", "no pool", at(341));
        assert!(c.correlate(other, at(341)).is_some());
    }

    #[test]
    fn ten_different_messages_of_one_reason_are_combined() {
        let mut c = Correlator::default();
        let mut names = Vec::new();
        for i in 0..12 {
            let e = event_about(
                "web",
                "UpdateLoadBalancerFailed",
                &format!("nodes changed {i}"),
                at(i),
            );
            let (e, patch) = c.correlate(e, at(i)).unwrap();
            names.push((
                e.metadata.name.clone().unwrap(),
                e.message.clone().unwrap(),
                patch.is_some(),
            ));
        }
        for (name, message, patched) in &names[..9] {
            assert!(
                !message.starts_with("(combined") && !patched,
                "{name}: {message}"
            );
        }
        assert_eq!(
            names[9].1,
            "(combined from similar events): nodes changed 9"
        );
        assert!(!names[9].2, "the first combined Event is created");
        assert_ne!(names[9].0, names[8].0);
        // A later new message patches the combined Event.
        let (name, message, patched) = &names[11];
        assert_eq!(message, "(combined from similar events): nodes changed 11");
        assert!(*patched);
        assert_eq!(name, &names[9].0);
    }

    #[test]
    fn the_aggregation_window_slides_and_resets_after_ten_quiet_minutes() {
        let mut c = Correlator::default();
        for i in 0..9 {
            let e = event_about("web", "R", &format!("m{i}"), at(i));
            c.correlate(e, at(i)).unwrap();
        }
        // Eleven minutes of quiet: the tenth distinct message is not combined.
        let e = event_about("web", "R", "m9", at(9 + 660));
        let (e, _) = c.correlate(e, at(9 + 660)).unwrap();
        assert_eq!(e.message.as_deref(), Some("m9"));
    }

    #[test]
    fn the_lru_forgets_the_least_recently_used() {
        let mut lru: Lru<usize, usize> = Lru::default();
        for i in 0..CACHE_ENTRIES {
            lru.put(i, i);
        }
        lru.get(&0);
        lru.put(CACHE_ENTRIES, 0);
        assert!(lru.get(&0).is_some(), "used recently");
        assert!(lru.get(&1).is_none(), "the oldest went");
    }
}
