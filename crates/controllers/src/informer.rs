//! A shared informer: one watch per resource feeds a cache that every controller
//! reads, and tells registered handlers what changed (with the old object on
//! updates, as client-go's handlers get it).
//!
//! Cached objects are trimmed of managedFields and the last-applied annotation:
//! no controller reads them, and they are most of an object's size.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex, RwLock};

use futures::{StreamExt, TryStreamExt};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Resource, ResourceExt};
use tokio::sync::watch;

/// What a handler is told.
#[derive(Debug)]
pub enum Change<'a, K> {
    Added(&'a Arc<K>),
    Updated { old: &'a Arc<K>, new: &'a Arc<K> },
    Deleted(&'a Arc<K>),
}

type Handler<K> = Box<dyn Fn(Change<'_, K>) + Send + Sync>;

/// `namespace/name`, or `name` for cluster-scoped objects (client-go's key).
pub fn key_of<K: Resource>(obj: &K) -> String {
    let name = obj.meta().name.as_deref().unwrap_or_default();
    match obj.meta().namespace.as_deref() {
        Some(ns) if !ns.is_empty() => format!("{ns}/{name}"),
        _ => name.to_string(),
    }
}

/// What a provider reads of the cache ([`overcast_cloud_provider::ProviderContext`]).
impl<K: Resource + Send + Sync> overcast_cloud_provider::ObjectCache<K> for Store<K> {
    fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        match namespace {
            "" => Store::get(self, name),
            ns => Store::get(self, &format!("{ns}/{name}")),
        }
    }

    fn list(&self) -> Vec<Arc<K>> {
        Store::list(self)
    }
}

/// The cache, readable from any controller.
#[derive(Debug)]
pub struct Store<K> {
    objects: RwLock<HashMap<String, Arc<K>>>,
}

impl<K> Store<K> {
    pub fn get(&self, key: &str) -> Option<Arc<K>> {
        self.objects
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }

    pub fn list(&self) -> Vec<Arc<K>> {
        self.objects
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    pub fn len(&self) -> usize {
        self.objects.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub struct Informer<K> {
    api: Api<K>,
    store: Arc<Store<K>>,
    handlers: Arc<Mutex<Vec<Handler<K>>>>,
    synced_tx: watch::Sender<bool>,
}

impl<K> Debug for Informer<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Informer")
            .field("resource", &std::any::type_name::<K>())
            .finish_non_exhaustive()
    }
}

impl<K> Informer<K>
where
    K: Resource + Clone + Debug + Send + Sync + serde::de::DeserializeOwned + 'static,
    K::DynamicType: Default,
{
    pub fn new(api: Api<K>) -> Self {
        Self {
            api,
            store: Arc::new(Store {
                objects: RwLock::new(HashMap::new()),
            }),
            handlers: Arc::new(Mutex::new(Vec::new())),
            synced_tx: watch::channel(false).0,
        }
    }

    pub fn store(&self) -> Arc<Store<K>> {
        Arc::clone(&self.store)
    }

    /// Registers a handler. Objects already cached reach it as additions, so a
    /// controller started late (after a leader-migration lock) misses nothing.
    pub fn on_change(&self, handler: impl Fn(Change<'_, K>) + Send + Sync + 'static) {
        let mut handlers = self.handlers.lock().unwrap_or_else(|p| p.into_inner());
        for obj in self.store.list() {
            handler(Change::Added(&obj));
        }
        handlers.push(Box::new(handler));
    }

    /// A receiver that turns true once the first full list is in the cache.
    pub fn synced_receiver(&self) -> watch::Receiver<bool> {
        self.synced_tx.subscribe()
    }

    /// Resolves once the first full list is in the cache.
    pub fn synced(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.synced_tx.subscribe();
        async move {
            let _ = rx.wait_for(|synced| *synced).await;
        }
    }

    /// Watches until the returned future is dropped. Watch errors are retried
    /// with kube's default back-off.
    pub async fn run(&self) {
        let stream = watcher::watcher(self.api.clone(), watcher::Config::default())
            .default_backoff()
            .map_ok(|event| event.modify(trim));
        futures::pin_mut!(stream);
        let mut relist: Option<HashMap<String, Arc<K>>> = None;
        while let Some(event) = stream.next().await {
            match event {
                Ok(Event::Init) => relist = Some(HashMap::new()),
                Ok(Event::InitApply(obj)) => {
                    if let Some(fresh) = relist.as_mut() {
                        fresh.insert(key_of(&obj), Arc::new(obj));
                    }
                }
                Ok(Event::InitDone) => {
                    if let Some(fresh) = relist.take() {
                        self.replace(fresh);
                    }
                    self.synced_tx.send_replace(true);
                }
                Ok(Event::Apply(obj)) => self.apply(obj),
                Ok(Event::Delete(obj)) => self.delete(obj),
                Err(e) => {
                    tracing::warn!(resource = %self.api.resource_url(), error = %e, "watch failed; retrying")
                }
            }
        }
    }

    fn notify(&self, change: Change<'_, K>) {
        let handlers = self.handlers.lock().unwrap_or_else(|p| p.into_inner());
        for handler in handlers.iter() {
            handler(match &change {
                Change::Added(o) => Change::Added(o),
                Change::Updated { old, new } => Change::Updated { old, new },
                Change::Deleted(o) => Change::Deleted(o),
            });
        }
    }

    fn apply(&self, obj: K) {
        let key = key_of(&obj);
        let new = Arc::new(obj);
        let old = self
            .store
            .objects
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, Arc::clone(&new));
        match old {
            Some(old) => self.notify(Change::Updated {
                old: &old,
                new: &new,
            }),
            None => self.notify(Change::Added(&new)),
        }
    }

    fn delete(&self, obj: K) {
        let key = key_of(&obj);
        let old = self
            .store
            .objects
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
        let gone = old.unwrap_or_else(|| Arc::new(obj));
        self.notify(Change::Deleted(&gone));
    }

    /// After a (re)list: the new cache replaces the old, and handlers hear of
    /// every addition, update and deletion the watch missed.
    fn replace(&self, fresh: HashMap<String, Arc<K>>) {
        let old = std::mem::replace(
            &mut *self
                .store
                .objects
                .write()
                .unwrap_or_else(|p| p.into_inner()),
            fresh.clone(),
        );
        for (key, new) in &fresh {
            match old.get(key) {
                Some(prev) if prev.resource_version() == new.resource_version() => {}
                Some(prev) => self.notify(Change::Updated { old: prev, new }),
                None => self.notify(Change::Added(new)),
            }
        }
        for (key, prev) in &old {
            if !fresh.contains_key(key) {
                self.notify(Change::Deleted(prev));
            }
        }
    }
}

/// Drops what no controller reads, to keep the cache small.
fn trim<K: Resource>(obj: &mut K) {
    let meta = obj.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}
