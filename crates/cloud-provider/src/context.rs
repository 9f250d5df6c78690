//! What a provider is handed when it starts ([`crate::CloudProvider::initialize`]):
//! upstream's `ControllerClientBuilder`, `InformerUser.SetInformers` and
//! event broadcaster in one value, so a provider sees the cluster through
//! the same caches and clients as the controllers instead of one-off hooks.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, ObjectReference, Service};
use kube::Resource;

use crate::error::{CloudError, Result};

/// `Normal` or `Warning`, as core/v1 Events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    /// All is well.
    Normal,
    /// Something a person should look at.
    Warning,
}

impl EventType {
    /// `Normal` or `Warning`, as an Event's `type`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// A read-only cache of one kind of object, filled by a watch.
pub trait ObjectCache<K>: Send + Sync {
    /// The object `name` in `namespace` (`""` for cluster-scoped objects).
    fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>>;
    /// Every object, in no particular order.
    fn list(&self) -> Vec<Arc<K>>;
}

/// Writes Events. Recording never fails the caller: the Event is queued and
/// written in the background, aggregated and rate-limited as client-go's
/// recorder does.
pub trait EventRecorder: Send + Sync {
    /// Records an Event about the object `about` refers to.
    fn record(&self, about: ObjectReference, type_: EventType, reason: &str, message: String);
}

/// Makes Events recorders and Kubernetes clients for a provider.
pub trait ClusterAccess: Send + Sync {
    /// A recorder whose Events name `component` as their source.
    fn event_recorder(&self, component: &str) -> Arc<dyn EventRecorder>;
    /// A client with its own User-Agent (ending in `name`), held to the
    /// CCM's `--kube-api-qps`/`--kube-api-burst` in a bucket of its own.
    fn client(&self, name: &str) -> Result<kube::Client>;
}

/// What a provider sees of the cluster.
///
/// The caches are the controllers' own and fill once their first list is in;
/// the controllers call no provider method before that, so inside those
/// calls the caches are complete.
#[derive(Clone)]
pub struct ProviderContext {
    cluster_name: String,
    nodes: Arc<dyn ObjectCache<Node>>,
    services: Arc<dyn ObjectCache<Service>>,
    access: Arc<dyn ClusterAccess>,
    metrics: prometheus::Registry,
}

impl std::fmt::Debug for ProviderContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderContext")
            .field("cluster_name", &self.cluster_name)
            .finish_non_exhaustive()
    }
}

impl ProviderContext {
    /// `metrics`: the registry the application serves on /metrics.
    pub fn new(
        cluster_name: impl Into<String>,
        nodes: Arc<dyn ObjectCache<Node>>,
        services: Arc<dyn ObjectCache<Service>>,
        access: Arc<dyn ClusterAccess>,
        metrics: prometheus::Registry,
    ) -> Self {
        Self {
            cluster_name: cluster_name.into(),
            nodes,
            services,
            access,
            metrics,
        }
    }

    /// A context over fixed lists of objects whose Events are dropped,
    /// which hands out no client and whose metrics registry nobody
    /// serves: for a provider's unit tests and for tools
    /// that read only (the preflight check).
    pub fn detached(
        cluster_name: impl Into<String>,
        nodes: Vec<Node>,
        services: Vec<Service>,
    ) -> Self {
        Self::new(
            cluster_name,
            Arc::new(Snapshot::of(nodes)),
            Arc::new(Snapshot::of(services)),
            Arc::new(Detached),
            prometheus::Registry::new(),
        )
    }

    /// `--cluster-name`.
    pub fn cluster_name(&self) -> &str {
        &self.cluster_name
    }

    /// The Nodes, as the controllers' watch has them.
    pub fn nodes(&self) -> &dyn ObjectCache<Node> {
        self.nodes.as_ref()
    }

    /// The Services, as the controllers' watch has them.
    pub fn services(&self) -> &dyn ObjectCache<Service> {
        self.services.as_ref()
    }

    /// See [`ClusterAccess::event_recorder`].
    pub fn event_recorder(&self, component: &str) -> Recorder {
        Recorder(self.access.event_recorder(component))
    }

    /// See [`ClusterAccess::client`].
    pub fn client(&self, name: &str) -> Result<kube::Client> {
        self.access.client(name)
    }

    /// The registry served on /metrics: a provider registers its
    /// collectors here (see [`crate::metrics::register_all`]). A name the
    /// registry already holds is refused with an error, never a panic.
    pub fn metrics(&self) -> &prometheus::Registry {
        &self.metrics
    }
}

/// An [`EventRecorder`] that takes the object itself.
#[derive(Clone)]
pub struct Recorder(Arc<dyn EventRecorder>);

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder").finish_non_exhaustive()
    }
}

impl Recorder {
    /// Records an Event about `about`, `reason` in UpperCamelCase as
    /// upstream's.
    pub fn publish<K>(&self, about: &K, type_: EventType, reason: &str, message: impl Into<String>)
    where
        K: Resource<DynamicType = ()>,
    {
        self.0
            .record(object_reference(about), type_, reason, message.into());
    }
}

/// The reference an Event's `involvedObject` holds.
pub fn object_reference<K: Resource<DynamicType = ()>>(obj: &K) -> ObjectReference {
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

/// A fixed list of objects as an [`ObjectCache`].
#[derive(Debug)]
pub struct Snapshot<K> {
    by_key: HashMap<(String, String), Arc<K>>,
}

impl<K: Resource> Snapshot<K> {
    /// A cache holding `objects`, found by namespace and name.
    pub fn of(objects: Vec<K>) -> Self {
        let by_key = objects
            .into_iter()
            .map(|o| {
                let meta = o.meta();
                let key = (
                    meta.namespace.clone().unwrap_or_default(),
                    meta.name.clone().unwrap_or_default(),
                );
                (key, Arc::new(o))
            })
            .collect();
        Self { by_key }
    }
}

impl<K: Send + Sync> ObjectCache<K> for Snapshot<K> {
    fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        self.by_key
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    fn list(&self) -> Vec<Arc<K>> {
        self.by_key.values().cloned().collect()
    }
}

struct Detached;

struct Dropped;

impl EventRecorder for Dropped {
    fn record(&self, _: ObjectReference, _: EventType, _: &str, _: String) {}
}

impl ClusterAccess for Detached {
    fn event_recorder(&self, _component: &str) -> Arc<dyn EventRecorder> {
        Arc::new(Dropped)
    }

    fn client(&self, name: &str) -> Result<kube::Client> {
        Err(CloudError::other(format!(
            "no Kubernetes client for {name}: this provider context is detached from a cluster"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn service(namespace: &str, name: &str) -> Service {
        Service {
            metadata: ObjectMeta {
                namespace: Some(namespace.into()),
                name: Some(name.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn a_snapshot_finds_objects_by_namespace_and_name() {
        let cache = Snapshot::of(vec![service("a", "web"), service("b", "web")]);
        assert_eq!(cache.list().len(), 2);
        let found = cache.get("b", "web").unwrap();
        assert_eq!(found.metadata.namespace.as_deref(), Some("b"));
        assert!(cache.get("c", "web").is_none());
    }

    #[test]
    fn a_detached_context_refuses_clients_naming_who_asked() {
        let ctx = ProviderContext::detached("kubernetes", vec![], vec![]);
        let Err(err) = ctx.client("aws-cloud-provider") else {
            panic!("a detached context handed out a client");
        };
        let err = err.to_string();
        assert!(
            err.contains("aws-cloud-provider") && err.contains("detached"),
            "{err}"
        );
    }

    #[test]
    fn an_event_refers_to_its_object_by_kind_and_uid() {
        let mut svc = service("shop", "web");
        svc.metadata.uid = Some("u-1".into());
        let reference = object_reference(&svc);
        assert_eq!(reference.kind.as_deref(), Some("Service"));
        assert_eq!(reference.api_version.as_deref(), Some("v1"));
        assert_eq!(reference.uid.as_deref(), Some("u-1"));
    }
}
