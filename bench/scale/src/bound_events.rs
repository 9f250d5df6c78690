//! The bound's Events: what a CCM's recorders write, and how. Each source
//! component has one writer behind a queue of client-go's length that drops
//! an Event when full (both CCMs do: client-go's broadcaster, and
//! crates/controllers/src/events.rs), and a repeat of an Event (same object,
//! reason and message) is a patch of the one written before, as their
//! correlators make it. The Events are shaped as overcast-ccm's.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Event, ObjectReference};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};

/// client-go's broadcaster queue length (watch.NewLongQueueBroadcaster).
const QUEUE: usize = 1000;

struct Recorded {
    about: ObjectReference,
    reason: &'static str,
    message: &'static str,
}

/// Where a source's Events wait for its writer.
#[derive(Clone)]
pub struct EventQueue(tokio::sync::mpsc::Sender<Recorded>);

impl EventQueue {
    /// The writer of `component`'s Events; it ends once every queue clone is
    /// dropped and what they queued is written.
    pub fn start(
        client: Client,
        component: &'static str,
    ) -> (Self, tokio::task::JoinHandle<anyhow::Result<()>>) {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Recorded>(QUEUE);
        let writer = tokio::spawn(async move {
            // (object uid, reason, message) -> (Event name, count)
            let mut written: HashMap<(String, &str, &str), (String, i32)> = HashMap::new();
            while let Some(r) = rx.recv().await {
                let namespace = r
                    .about
                    .namespace
                    .clone()
                    .filter(|ns| !ns.is_empty())
                    .unwrap_or_else(|| "default".into());
                let api: Api<Event> = Api::namespaced(client.clone(), &namespace);
                let key = (r.about.uid.clone().unwrap_or_default(), r.reason, r.message);
                let now = k8s_openapi::jiff::Timestamp::now();
                if let Some((name, count)) = written.get_mut(&key) {
                    *count += 1;
                    let patch = serde_json::json!({
                        "count": *count, "lastTimestamp": now.to_string(), "message": r.message,
                    });
                    api.patch(name, &PatchParams::default(), &Patch::Strategic(patch))
                        .await?;
                    continue;
                }
                let name = format!(
                    "{}.{:x}",
                    r.about.name.as_deref().unwrap_or_default(),
                    now.as_nanosecond()
                );
                let stamp = now.to_string();
                let event: Event = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": name, "namespace": namespace},
                    "involvedObject": r.about,
                    "reason": r.reason,
                    "message": r.message,
                    "type": "Normal",
                    "source": {"component": component},
                    "firstTimestamp": stamp,
                    "lastTimestamp": stamp,
                    "count": 1,
                    "reportingComponent": component,
                    "reportingInstance": "",
                }))?;
                api.create(&PostParams::default(), &event).await?;
                written.insert(key, (name, 1));
            }
            anyhow::Ok(())
        });
        (Self(tx), writer)
    }

    /// Queues a Normal Event about `about`; dropped when the queue is full.
    pub fn record(&self, about: ObjectReference, reason: &'static str, message: &'static str) {
        let _ = self.0.try_send(Recorded {
            about,
            reason,
            message,
        });
    }

    /// The `Synced` Event the cloud node controller records for a Node it
    /// initialised (the bound knows only the Node's name: it stands in for
    /// the uid).
    pub fn node_synced(&self, node: &str) {
        let about = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(node.into()),
            uid: Some(node.into()),
            ..Default::default()
        };
        self.record(about, "Synced", "Node synced successfully");
    }
}
