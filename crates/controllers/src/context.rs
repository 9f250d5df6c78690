//! What every controller is built from: the client, the cloud, and the shared
//! informers over Nodes and Services.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Service};
use kube::{Api, Client};
use overcast_cloud_provider::CloudProvider;

use crate::informer::Informer;

#[derive(Clone)]
pub struct Context {
    pub client: Client,
    pub cloud: Arc<dyn CloudProvider>,
    /// `--cluster-name`, passed to the cloud's LoadBalancer and Routes calls.
    pub cluster_name: String,
    pub nodes: Arc<Informer<Node>>,
    pub services: Arc<Informer<Service>>,
}

impl Context {
    pub fn new(
        client: Client,
        cloud: Arc<dyn CloudProvider>,
        cluster_name: impl Into<String>,
    ) -> Self {
        Self {
            nodes: Arc::new(Informer::new(Api::all(client.clone()))),
            services: Arc::new(Informer::new(Api::all(client.clone()))),
            client,
            cloud,
            cluster_name: cluster_name.into(),
        }
    }

    /// Runs the shared watches until dropped. Build the controllers (which
    /// register their handlers) before calling this.
    pub async fn run_informers(&self) {
        tokio::join!(self.nodes.run(), self.services.run());
    }

    /// Resolves once both caches hold their first full list.
    pub async fn caches_synced(&self) {
        tokio::join!(self.nodes.synced(), self.services.synced());
    }

    /// Resolves (through [`CacheSync::wait`]) once the Node cache is filled.
    /// Controllers wait for it before their first decision: an empty cache
    /// would read as "no Nodes" and delete routes or empty balancers.
    pub fn nodes_synced(&self) -> CacheSync {
        CacheSync(vec![self.nodes.synced_receiver()])
    }

    /// Likewise for both the Node and the Service caches.
    pub fn all_synced(&self) -> CacheSync {
        CacheSync(vec![
            self.nodes.synced_receiver(),
            self.services.synced_receiver(),
        ])
    }
}

/// Waits until a controller's caches are filled.
#[derive(Debug, Clone)]
pub struct CacheSync(Vec<tokio::sync::watch::Receiver<bool>>);

impl CacheSync {
    pub async fn wait(self) {
        for mut rx in self.0 {
            let _ = rx.wait_for(|synced| *synced).await;
        }
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("cloud", &self.cloud.provider_name())
            .field("cluster_name", &self.cluster_name)
            .finish_non_exhaustive()
    }
}
