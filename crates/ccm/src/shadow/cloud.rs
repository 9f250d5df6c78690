//! The provider in shadow mode: reads go through, every mutating call is
//! answered from a read-only preview and recorded as a divergence.
//! Initialised (the provider needs the cluster's caches to read) but never
//! shut down, and no call that acts reaches it, so a provider's data plane
//! (the local provider's listeners and VIPs) does not start beside the
//! incumbent's.

use std::sync::Arc;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{LoadBalancerStatus, Node, Service};
use overcast_cloud_provider::{
    CloudError, CloudProvider, Clusters, Instances, InstancesV2, LoadBalancer, ProviderContext,
    Result, Route, Routes, Zones,
};

use overcast_controllers::informer::key_of;

use super::{Divergence, Report};
use crate::preflight::plan::ingress_addresses;

#[derive(Debug)]
pub struct ShadowCloud {
    inner: Arc<dyn CloudProvider>,
    report: Arc<Report>,
}

impl ShadowCloud {
    pub fn new(inner: Arc<dyn CloudProvider>, report: Arc<Report>) -> Self {
        Self { inner, report }
    }

    fn balancer(&self) -> Result<&dyn LoadBalancer> {
        self.inner.load_balancer().ok_or(CloudError::NotImplemented)
    }

    fn routes_inner(&self) -> Result<&dyn Routes> {
        self.inner.routes().ok_or(CloudError::NotImplemented)
    }

    fn record(
        &self,
        controller: &str,
        kind: &str,
        object: String,
        action: &str,
        changes: Vec<String>,
    ) {
        self.report.record(Divergence {
            controller: controller.into(),
            kind: kind.into(),
            object,
            action: action.into(),
            changes,
            write: None,
        });
    }
}

#[async_trait]
impl CloudProvider for ShadowCloud {
    fn provider_name(&self) -> &str {
        self.inner.provider_name()
    }

    fn has_cluster_id(&self) -> bool {
        self.inner.has_cluster_id()
    }

    async fn initialize(&self, ctx: &ProviderContext) -> Result<()> {
        self.inner.initialize(ctx).await
    }

    async fn reload_config(&self, config: &[u8]) -> Result<()> {
        self.inner.reload_config(config).await
    }

    fn instances_v2(&self) -> Option<&dyn InstancesV2> {
        self.inner.instances_v2()
    }
    fn instances(&self) -> Option<&dyn Instances> {
        self.inner.instances()
    }
    fn load_balancer(&self) -> Option<&dyn LoadBalancer> {
        self.inner
            .load_balancer()
            .map(|_| self as &dyn LoadBalancer)
    }
    fn routes(&self) -> Option<&dyn Routes> {
        self.inner.routes().map(|_| self as &dyn Routes)
    }
    fn zones(&self) -> Option<&dyn Zones> {
        self.inner.zones()
    }
    fn clusters(&self) -> Option<&dyn Clusters> {
        self.inner.clusters()
    }
}

#[async_trait]
impl LoadBalancer for ShadowCloud {
    async fn get_load_balancer(
        &self,
        cluster_name: &str,
        service: &Service,
    ) -> Result<Option<LoadBalancerStatus>> {
        self.balancer()?
            .get_load_balancer(cluster_name, service)
            .await
    }

    fn get_load_balancer_name(&self, cluster_name: &str, service: &Service) -> String {
        self.balancer()
            .map(|b| b.get_load_balancer_name(cluster_name, service))
            .unwrap_or_default()
    }

    /// The preview: the status the Service would get (its current one when
    /// a new balancer's address cannot be known yet, so only the cloud side
    /// is reported for it).
    async fn ensure_load_balancer(
        &self,
        cluster_name: &str,
        service: &Service,
        nodes: &[&Node],
    ) -> Result<LoadBalancerStatus> {
        // The Service's current addresses first: the incumbent may have
        // given them since the start, and a preview must not hand them out.
        self.balancer()?
            .restore(cluster_name, std::slice::from_ref(service))
            .await?;
        let preview = match self
            .balancer()?
            .preview_load_balancer(cluster_name, service, nodes)
            .await
        {
            Ok(preview) => preview,
            // A Service the incumbent serves and this one would not: the
            // divergence a user most needs to see before a cut-over.
            Err(e) if !matches!(e, CloudError::NotImplemented) => {
                self.record(
                    "service-controller",
                    "LoadBalancer",
                    key_of(service),
                    "update",
                    vec![format!("could not serve it: {e}")],
                );
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        let current = service
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref());
        let object = key_of(service);
        match preview.status {
            Some(status) => {
                let (was, would) = (ingress_addresses(current), ingress_addresses(Some(&status)));
                let mut changes = preview.changes;
                if was != would {
                    changes.insert(0, format!("address: {was:?} -> {would:?}"));
                }
                // Shown as an update: an unchanged address clears it.
                self.record(
                    "service-controller",
                    "LoadBalancer",
                    object,
                    "update",
                    changes,
                );
                Ok(status)
            }
            None => {
                self.record(
                    "service-controller",
                    "LoadBalancer",
                    object,
                    "create",
                    vec!["a new load balancer".into()],
                );
                Ok(current.cloned().unwrap_or_default())
            }
        }
    }

    /// The same preview as ensure's: a provider that can tell which
    /// backends its balancer would gain or lose (aws: the targets) lists
    /// them among the changes.
    async fn update_load_balancer(
        &self,
        cluster_name: &str,
        service: &Service,
        nodes: &[&Node],
    ) -> Result<()> {
        match self
            .ensure_load_balancer(cluster_name, service, nodes)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_implemented() => {
                tracing::info!(
                    service = %key_of(service),
                    nodes = nodes.len(),
                    "shadow: would update the load balancer's backends (the provider cannot preview them)"
                );
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    async fn restore(&self, cluster_name: &str, services: &[Service]) -> Result<()> {
        self.balancer()?.restore(cluster_name, services).await
    }

    async fn ensure_load_balancer_deleted(
        &self,
        cluster_name: &str,
        service: &Service,
    ) -> Result<()> {
        self.balancer()?
            .restore(cluster_name, std::slice::from_ref(service))
            .await?;
        let exists = self
            .balancer()?
            .get_load_balancer(cluster_name, service)
            .await?
            .is_some();
        if exists {
            self.record(
                "service-controller",
                "LoadBalancer",
                key_of(service),
                "delete",
                vec!["the load balancer".into()],
            );
        }
        Ok(())
    }
}

#[async_trait]
impl Routes for ShadowCloud {
    async fn list_routes(&self, cluster_name: &str) -> Result<Vec<Route>> {
        self.routes_inner()?.list_routes(cluster_name).await
    }

    async fn create_route(
        &self,
        _cluster_name: &str,
        _name_hint: &str,
        route: &Route,
    ) -> Result<()> {
        self.record(
            "route-controller",
            "Route",
            route.destination_cidr.clone(),
            "create",
            vec![format!(
                "{} via {}",
                route.destination_cidr, route.target_node
            )],
        );
        // Answered as made: an error would have the route controller mark
        // the Node NetworkUnavailable, a change real overcast-ccm never makes.
        Ok(())
    }

    async fn delete_route(&self, _cluster_name: &str, route: &Route) -> Result<()> {
        self.record(
            "route-controller",
            "Route",
            route.destination_cidr.clone(),
            "delete",
            vec![format!(
                "{} via {}",
                route.destination_cidr, route.target_node
            )],
        );
        Ok(())
    }
}
