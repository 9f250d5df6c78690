//! Shared set-up for the controller integration tests: a real control plane of
//! the test's own (controllers watch every Node, so tests must not share one),
//! the fake cloud, and polling helpers.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Event, Node, NodeAddress, NodeCondition, NodeSpec, NodeStatus, Taint,
};
use kube::api::{ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use overcast_cloud_provider::names::TAINT_UNINITIALIZED;
use overcast_controllers::Context;
use overcast_provider_fake::FakeCloud;
use overcast_testenv::ControlPlane;

pub struct Harness {
    // Dropped first: controllers stop before the control plane does.
    tasks: tokio::task::JoinSet<()>,
    pub ctx: Context,
    pub cloud: FakeCloud,
    pub client: Client,
    pub plane: ControlPlane,
}

impl Harness {
    pub async fn start(cloud: FakeCloud) -> Self {
        let plane = ControlPlane::start()
            .await
            .expect("control plane (run `make testenv`)");
        let client = plane.client().await.expect("client");
        let ctx = Context::new(client.clone(), Arc::new(cloud.clone()), "kubernetes");
        Harness {
            plane,
            client,
            cloud,
            ctx,
            tasks: tokio::task::JoinSet::new(),
        }
    }

    /// Runs a controller (or anything) until the harness is dropped.
    pub fn spawn(&mut self, fut: impl Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(fut);
    }

    /// Starts the shared informers; call after building the controllers.
    pub async fn start_informers(&mut self) {
        let ctx = self.ctx.clone();
        self.tasks.spawn(async move { ctx.run_informers().await });
        tokio::time::timeout(Duration::from_secs(30), self.ctx.caches_synced())
            .await
            .expect("caches sync");
    }

    pub fn nodes(&self) -> Api<Node> {
        Api::all(self.client.clone())
    }

    /// Events about the named object, as "Type Reason: message".
    pub async fn events_for(&self, name: &str) -> Vec<String> {
        let events: Api<Event> = Api::all(self.client.clone());
        let list = events
            .list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
            .await
            .expect("list events");
        list.items
            .into_iter()
            .map(|e| {
                format!(
                    "{} {}: {}",
                    e.type_.unwrap_or_default(),
                    e.reason.unwrap_or_default(),
                    e.message.unwrap_or_default()
                )
            })
            .collect()
    }

    /// Creates a Node as a kubelet with `--cloud-provider=external` would:
    /// tainted uninitialized, with a Hostname address.
    pub async fn create_uninitialized_node(
        &self,
        name: &str,
        annotations: &[(&str, &str)],
    ) -> Node {
        let node = Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect::<BTreeMap<_, _>>(),
                ),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                taints: Some(vec![
                    Taint {
                        key: TAINT_UNINITIALIZED.into(),
                        value: Some("true".into()),
                        effect: "NoSchedule".into(),
                        ..Default::default()
                    },
                    Taint {
                        key: "dedicated".into(),
                        value: Some("db".into()),
                        effect: "NoExecute".into(),
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            }),
            ..Default::default()
        };
        // Created with its status in one call, as the kubelet registers itself.
        let node = Node {
            status: Some(NodeStatus {
                addresses: Some(vec![address("Hostname", name)]),
                ..Default::default()
            }),
            ..node
        };
        self.nodes()
            .create(&PostParams::default(), &node)
            .await
            .expect("create node")
    }

    /// Creates an initialised Node (providerID set, no taints).
    pub async fn create_node(&self, name: &str, provider_id: &str) -> Node {
        let node = Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                provider_id: Some(provider_id.into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.nodes()
            .create(&PostParams::default(), &node)
            .await
            .expect("create node")
    }

    /// Creates a Node with the given pod CIDR (or none).
    pub async fn create_node_with_cidr(&self, name: &str, cidr: Option<&str>) {
        let node = Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                pod_cidr: cidr.map(Into::into),
                pod_cidrs: cidr.map(|c| vec![c.to_string()]),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.nodes()
            .create(&PostParams::default(), &node)
            .await
            .expect("create node");
    }

    pub async fn set_node_status(&self, name: &str, status: NodeStatus) -> Node {
        self.nodes()
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({ "status": status })),
            )
            .await
            .expect("patch node status")
    }

    /// Sets the Node's Ready condition, as the kubelet (or its absence) would.
    pub async fn set_ready(&self, name: &str, ready: bool) -> Node {
        self.set_node_status(name, ready_status(ready)).await
    }

    /// Creates an initialised Node that is Ready or not from the start.
    pub async fn create_node_ready(&self, name: &str, provider_id: &str, ready: bool) -> Node {
        let node = Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                provider_id: Some(provider_id.into()),
                ..Default::default()
            }),
            status: Some(ready_status(ready)),
        };
        self.nodes()
            .create(&PostParams::default(), &node)
            .await
            .expect("create node")
    }
}

pub fn ready_status(ready: bool) -> NodeStatus {
    let now =
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now());
    NodeStatus {
        conditions: Some(vec![NodeCondition {
            type_: "Ready".into(),
            status: if ready { "True" } else { "False" }.into(),
            reason: Some(
                if ready {
                    "KubeletReady"
                } else {
                    "KubeletNotReady"
                }
                .into(),
            ),
            last_heartbeat_time: Some(now.clone()),
            last_transition_time: Some(now),
            ..Default::default()
        }]),
        ..Default::default()
    }
}

pub fn address(type_: &str, address: &str) -> NodeAddress {
    NodeAddress {
        type_: type_.into(),
        address: address.into(),
    }
}

pub use overcast_testenv::eventually;

/// Generous bound for things that should happen in well under a second:
/// tests must not flake on a loaded 2-core CI machine.
pub const SOON: Duration = Duration::from_secs(30);
