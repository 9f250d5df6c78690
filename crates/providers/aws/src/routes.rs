//! Routes for pod CIDRs in the cluster's VPC route table, as
//! cloud-provider-aws (aws_routes.go): the table is the configured
//! RouteTableID or the one table tagged for the cluster; a route sends a
//! Node's pod CIDR to its instance, whose source/destination check is
//! turned off.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_ec2::types::{AttributeBooleanValue, Filter, RouteState, RouteTable};
use overcast_cloud_provider::k8s_openapi::api::core::v1::Node;
use overcast_cloud_provider::{CloudError, Result, Route, Routes};

use crate::AwsCloud;
use crate::instances::instance_id_from_provider_id;
use crate::metrics::{aws_err, timed};
use crate::nlb_plan::cluster_tag_key;

impl AwsCloud {
    fn cluster(&self) -> Result<&overcast_cloud_provider::ProviderContext> {
        self.cluster.get().ok_or_else(|| {
            CloudError::other("the aws provider was not initialized: it has no Nodes to route to")
        })
    }

    /// Instance ID → the Node running it, by the Nodes' provider IDs: one
    /// pass over the cache per listing, not one per route.
    fn nodes_by_instance(&self) -> Result<HashMap<String, String>> {
        Ok(self
            .cluster()?
            .nodes()
            .list()
            .iter()
            .filter_map(|node| Some((instance_of(node)?, node.metadata.name.clone()?)))
            .collect())
    }

    fn instance_of_node(&self, node: &str) -> Result<Option<String>> {
        Ok(self
            .cluster()?
            .nodes()
            .get("", node)
            .and_then(|node| instance_of(&node)))
    }

    async fn route_table(&self, cluster_name: &str) -> Result<RouteTable> {
        let ec2 = &self.clients().await?.ec2;
        let mut request = ec2.describe_route_tables();
        if !self.config.route_table_id.is_empty() {
            request = request.filters(
                Filter::builder()
                    .name("route-table-id")
                    .values(&self.config.route_table_id)
                    .build(),
            );
        }
        let reply = timed("describe_route_tables", request.send())
            .await
            .map_err(aws_err("describing route tables".into()))?;
        let cluster_id = self.config.cluster_id().unwrap_or_default();
        let cluster_key = cluster_tag_key(cluster_id);
        let mut tables: Vec<RouteTable> = reply
            .route_tables()
            .iter()
            .filter(|t| {
                !self.config.route_table_id.is_empty()
                    || t.tags().iter().any(|tag| {
                        tag.key() == Some(cluster_key.as_str())
                            || (tag.key() == Some("KubernetesCluster")
                                && tag.value() == Some(cluster_id))
                    })
            })
            .cloned()
            .collect();
        match tables.len() {
            1 => Ok(tables.remove(0)),
            0 => Err(CloudError::other(format!(
                "unable to find route table for AWS cluster: {cluster_name}"
            ))),
            _ => Err(CloudError::other(format!(
                "found multiple matching AWS route tables for AWS cluster: {cluster_name}"
            ))),
        }
    }
}

#[async_trait]
impl Routes for AwsCloud {
    async fn list_routes(&self, cluster_name: &str) -> Result<Vec<Route>> {
        let table = self.route_table(cluster_name).await?;
        let nodes = self.nodes_by_instance()?;
        let mut out = Vec::new();
        for r in table.routes() {
            let Some(cidr) = r.destination_cidr_block().filter(|c| !c.is_empty()) else {
                continue;
            };
            let name = format!("{cluster_name}-{cidr}");
            if r.state() == Some(&RouteState::Blackhole) {
                out.push(Route {
                    name,
                    destination_cidr: cidr.to_string(),
                    blackhole: true,
                    ..Default::default()
                });
                continue;
            }
            let Some(instance) = r.instance_id() else {
                continue;
            };
            // An instance no current Node runs on: the route is stale (its
            // Node was deleted), and the route controller deletes it when
            // it lies in the cluster CIDR. Upstream fails the whole listing
            // here, which leaves every route stuck until the instance goes.
            let node = nodes.get(instance).cloned().unwrap_or_default();
            out.push(Route {
                name,
                target_node: node,
                destination_cidr: cidr.to_string(),
                ..Default::default()
            });
        }
        Ok(out)
    }

    async fn create_route(
        &self,
        cluster_name: &str,
        _name_hint: &str,
        route: &Route,
    ) -> Result<()> {
        let instance = self.instance_of_node(&route.target_node)?.ok_or_else(|| {
            CloudError::other(format!(
                "Node {} has no AWS provider ID to route to",
                route.target_node
            ))
        })?;
        let ec2 = &self.clients().await?.ec2;
        timed(
            "modify_instance_attribute",
            ec2.modify_instance_attribute()
                .instance_id(&instance)
                .source_dest_check(AttributeBooleanValue::builder().value(false).build())
                .send(),
        )
        .await
        .map_err(aws_err(format!(
            "turning off the source/destination check of {instance}"
        )))?;
        let table = self.route_table(cluster_name).await?;
        let table_id = table.route_table_id().unwrap_or_default().to_string();
        let blackholed = table.routes().iter().any(|r| {
            r.destination_cidr_block() == Some(route.destination_cidr.as_str())
                && r.state() == Some(&RouteState::Blackhole)
        });
        if blackholed {
            timed(
                "delete_route",
                ec2.delete_route()
                    .route_table_id(&table_id)
                    .destination_cidr_block(&route.destination_cidr)
                    .send(),
            )
            .await
            .map_err(aws_err(format!(
                "deleting the blackholed route {}",
                route.destination_cidr
            )))?;
        }
        timed(
            "create_route",
            ec2.create_route()
                .route_table_id(&table_id)
                .destination_cidr_block(&route.destination_cidr)
                .instance_id(&instance)
                .send(),
        )
        .await
        .map_err(aws_err(format!(
            "creating the route {} to {instance}",
            route.destination_cidr
        )))?;
        Ok(())
    }

    async fn delete_route(&self, cluster_name: &str, route: &Route) -> Result<()> {
        let table = self.route_table(cluster_name).await?;
        let ec2 = &self.clients().await?.ec2;
        timed(
            "delete_route",
            ec2.delete_route()
                .route_table_id(table.route_table_id().unwrap_or_default())
                .destination_cidr_block(&route.destination_cidr)
                .send(),
        )
        .await
        .map_err(aws_err(format!(
            "deleting the route {}",
            route.destination_cidr
        )))?;
        Ok(())
    }
}

fn instance_of(node: &Node) -> Option<String> {
    node.spec
        .as_ref()
        .and_then(|s| s.provider_id.as_deref())
        .and_then(|p| instance_id_from_provider_id(p).ok())
}
