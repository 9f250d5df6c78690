//! Kubernetes Events (core/v1), as upstream's controllers record them: a source
//! component per controller, and repeats of the same event folded into one
//! object whose count grows (client-go's event correlator, simplified).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource};

/// `Normal` or `Warning`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// Folded events remembered at most; past that the memory starts afresh.
const REMEMBERED: usize = 4096;

#[derive(Clone)]
pub struct Recorder {
    writer: Arc<Writer>,
    /// Events wait here for the one task that writes them, as in client-go's
    /// broadcaster; started on first use.
    queue: Arc<std::sync::OnceLock<tokio::sync::mpsc::Sender<Pending>>>,
}

/// client-go's broadcaster queue length: beyond it, Events are dropped (with
/// a log line) rather than competing with the controllers' own writes.
const QUEUE: usize = 1000;

type Pending = (ObjectReference, EventType, String, String);

/// Writes Events; owned by the queue's task, so dropping every Recorder ends it.
struct Writer {
    client: Client,
    component: String,
    seen: Mutex<HashMap<Identity, Seen>>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("component", &self.writer.component)
            .finish_non_exhaustive()
    }
}

/// (object UID, reason, message): events that count as repeats of each other.
type Identity = (String, String, String);

#[derive(Clone, Debug)]
struct Seen {
    namespace: String,
    name: String,
    count: i32,
}

impl Recorder {
    /// `component` is the event source, e.g. `cloud-node-controller`.
    pub fn new(client: Client, component: impl Into<String>) -> Self {
        Self {
            writer: Arc::new(Writer {
                client,
                component: component.into(),
                seen: Mutex::new(HashMap::new()),
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
        let reference = object_reference(obj);
        let queue = self.queue.get_or_init(|| {
            let (tx, mut rx) = tokio::sync::mpsc::channel::<Pending>(QUEUE);
            let writer = Arc::clone(&self.writer);
            tokio::spawn(async move {
                while let Some((reference, type_, reason, message)) = rx.recv().await {
                    if let Err(e) = writer.record(reference.clone(), type_, &reason, &message).await {
                        tracing::warn!(object = ?reference.name, reason, error = %e, "could not record event");
                    }
                }
            });
            tx
        });
        let message = message.into();
        if queue
            .try_send((reference, type_, reason.to_string(), message))
            .is_err()
        {
            tracing::warn!(
                reason,
                "event queue full; dropping the event as client-go's broadcaster does"
            );
        }
    }
}

impl Writer {
    async fn record(
        &self,
        reference: ObjectReference,
        type_: EventType,
        reason: &str,
        message: &str,
    ) -> Result<(), kube::Error> {
        let now = Time(Timestamp::now());
        let identity = (
            reference.uid.clone().unwrap_or_default(),
            reason.to_string(),
            message.to_string(),
        );
        let previous = self
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&identity)
            .cloned();
        if let Some(seen) = previous {
            let count = seen.count + 1;
            let api: Api<Event> = Api::namespaced(self.client.clone(), &seen.namespace);
            let patch = serde_json::json!({"count": count, "lastTimestamp": now});
            if api
                .patch(&seen.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .is_ok()
            {
                self.remember(identity, Seen { count, ..seen });
                return Ok(());
            }
        }
        // Events about cluster-scoped objects (Nodes) live in "default", as upstream's do.
        let namespace = reference
            .namespace
            .clone()
            .filter(|ns| !ns.is_empty())
            .unwrap_or_else(|| "default".to_string());
        let nanos = now.0.as_nanosecond();
        let event = Event {
            metadata: ObjectMeta {
                name: Some(format!(
                    "{}.{:x}",
                    reference.name.as_deref().unwrap_or("object"),
                    nanos
                )),
                namespace: Some(namespace.clone()),
                ..Default::default()
            },
            involved_object: reference,
            reason: Some(reason.to_string()),
            message: Some(message.to_string()),
            type_: Some(type_.as_str().to_string()),
            source: Some(EventSource {
                component: Some(self.component.clone()),
                host: None,
            }),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            count: Some(1),
            reporting_component: Some(self.component.clone()),
            reporting_instance: Some(self.component.clone()),
            ..Default::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        let created = api.create(&PostParams::default(), &event).await?;
        self.remember(
            identity,
            Seen {
                namespace,
                name: created.metadata.name.unwrap_or_default(),
                count: 1,
            },
        );
        Ok(())
    }

    fn remember(&self, identity: Identity, seen: Seen) {
        let mut map = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= REMEMBERED {
            map.clear();
        }
        map.insert(identity, seen);
    }
}

fn object_reference<K: Resource<DynamicType = ()>>(obj: &K) -> ObjectReference {
    let meta = obj.meta();
    ObjectReference {
        api_version: Some(K::api_version(&()).into_owned()),
        kind: Some(K::kind(&()).into_owned()),
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        ..Default::default()
    }
}
