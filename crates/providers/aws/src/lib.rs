//! The `aws` provider: EC2 instances, Network Load Balancers and VPC routes
//! with cloud-provider-aws's semantics, through the official
//! AWS SDK: the aws-config credential chain and region resolution, SDK
//! retries with back-off, and endpoint overrides for emulators (the
//! `[ServiceOverride]` sections, or `AWS_ENDPOINT_URL`).
//!
//! Config: docs/aws-provider.md.

mod clb;
pub mod clb_plan;
pub mod config;
pub mod ini;
pub mod instances;
mod loadbalancer;
mod metrics;
pub mod nlb_plan;
mod routes;
mod security_groups;
pub mod sg_plan;
mod tagging;
pub mod tagging_plan;

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use overcast_cloud_provider::{
    CloudError, CloudProvider, ControllerSpec, FlagValues, InstancesV2, LoadBalancer,
    NodeController, ProviderContext, Result as CloudResult, Routes,
};
use tokio::sync::OnceCell;

pub use config::{AwsConfig, ConfigError};

pub const PROVIDER_NAME: &str = "aws";

/// The controllers this provider adds (give them to the CCM's builder):
/// cloud-provider-aws's `tagging`, off unless named in `--controllers`.
pub fn controllers() -> Vec<ControllerSpec> {
    vec![tagging_plan::spec()]
}

/// Attempts per AWS call, the first included (the SDK's standard mode
/// backs off exponentially with jitter and retries throttling).
const MAX_ATTEMPTS: u32 = 5;

#[derive(Debug)]
pub struct Clients {
    pub ec2: aws_sdk_ec2::Client,
    pub elb: aws_sdk_elasticloadbalancingv2::Client,
    /// Classic ELBs.
    pub elb_classic: aws_sdk_elasticloadbalancing::Client,
    pub region: String,
}

#[derive(Debug)]
pub struct AwsCloud {
    config: AwsConfig,
    /// Built on first use (in `initialize`, on the leader): loading the SDK
    /// config is async, the provider factory is not.
    clients: OnceCell<Clients>,
    /// Availability zone name → zone ID, from DescribeAvailabilityZones.
    zone_ids: Mutex<HashMap<String, String>>,
    /// The cluster as the controllers see it: the routes name Nodes from
    /// its Node cache (upstream: a Node informer). Set in `initialize`.
    cluster: std::sync::OnceLock<ProviderContext>,
}

impl AwsCloud {
    /// Builds the provider from its `--cloud-config` file (INI, as
    /// cloud-provider-aws); warnings about keys are logged.
    pub fn from_config(bytes: Option<&[u8]>) -> Result<Self, ConfigError> {
        let (config, warnings) = match bytes {
            Some(b) => AwsConfig::parse(b)?,
            None => (AwsConfig::default(), Vec::new()),
        };
        for w in warnings {
            tracing::warn!("--cloud-config: {w}");
        }
        Ok(Self {
            config,
            clients: OnceCell::new(),
            zone_ids: Mutex::new(HashMap::new()),
            cluster: std::sync::OnceLock::new(),
        })
    }

    pub fn config(&self) -> &AwsConfig {
        &self.config
    }

    /// The SDK clients, built once.
    pub async fn clients(&self) -> CloudResult<&Clients> {
        self.clients
            .get_or_try_init(|| async {
                let mut loader = aws_config::defaults(BehaviorVersion::latest())
                    .retry_config(RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS));
                if let Some(region) = self.config.configured_region() {
                    loader = loader.region(aws_config::Region::new(region));
                }
                let shared = loader.load().await;
                let region = shared.region().map(ToString::to_string).ok_or_else(|| {
                    CloudError::other(
                        "no AWS region: set [Global] Region or Zone in --cloud-config, or AWS_REGION, or run where the instance metadata service answers",
                    )
                })?;
                let mut ec2 = aws_sdk_ec2::config::Builder::from(&shared);
                if let Some(o) = self.config.override_for(config::SERVICE_EC2, &region) {
                    ec2 = ec2
                        .endpoint_url(&o.url)
                        .region(aws_config::Region::new(o.signing_region.clone()));
                }
                let mut elb = aws_sdk_elasticloadbalancingv2::config::Builder::from(&shared);
                if let Some(o) = self.config.override_for(config::SERVICE_ELBV2, &region) {
                    elb = elb
                        .endpoint_url(&o.url)
                        .region(aws_config::Region::new(o.signing_region.clone()));
                }
                let mut classic = aws_sdk_elasticloadbalancing::config::Builder::from(&shared);
                if let Some(o) = self.config.override_for(config::SERVICE_ELB, &region) {
                    classic = classic
                        .endpoint_url(&o.url)
                        .region(aws_config::Region::new(o.signing_region.clone()));
                }
                tracing::info!(%region, "AWS clients ready");
                Ok(Clients {
                    ec2: aws_sdk_ec2::Client::from_conf(ec2.build()),
                    elb: aws_sdk_elasticloadbalancingv2::Client::from_conf(elb.build()),
                    elb_classic: aws_sdk_elasticloadbalancing::Client::from_conf(classic.build()),
                    region,
                })
            })
            .await
    }

    /// The zone ID of an availability zone (topology.k8s.aws/zone-id), from
    /// one DescribeAvailabilityZones call cached for the process.
    pub(crate) async fn zone_id(&self, zone: &str) -> CloudResult<Option<String>> {
        if let Some(id) = self.zone_ids.lock().expect("zone ids lock").get(zone) {
            return Ok(Some(id.clone()));
        }
        let ec2 = &self.clients().await?.ec2;
        let reply = metrics::timed(
            "describe_availability_zones",
            ec2.describe_availability_zones().send(),
        )
        .await
        .map_err(metrics::aws_err("describing availability zones".into()))?;
        let mut ids = self.zone_ids.lock().expect("zone ids lock");
        for az in reply.availability_zones() {
            if let (Some(name), Some(id)) = (az.zone_name(), az.zone_id()) {
                ids.insert(name.to_string(), id.to_string());
            }
        }
        Ok(ids.get(zone).cloned())
    }
}

#[async_trait]
impl CloudProvider for AwsCloud {
    fn provider_name(&self) -> &str {
        PROVIDER_NAME
    }

    /// Upstream finds the cluster ID in the config or on its own instance's
    /// tags; Overcast reads it from the config only (for now).
    fn has_cluster_id(&self) -> bool {
        self.config.cluster_id().is_some()
    }

    async fn initialize(&self, ctx: &ProviderContext) -> CloudResult<()> {
        metrics::register(ctx.metrics()).map_err(CloudError::from_err)?;
        let _ = self.cluster.set(ctx.clone());
        self.clients().await.map(|_| ())
    }

    fn instances_v2(&self) -> Option<&dyn InstancesV2> {
        Some(self)
    }

    fn load_balancer(&self) -> Option<&dyn LoadBalancer> {
        Some(self)
    }

    fn routes(&self) -> Option<&dyn Routes> {
        Some(self)
    }

    fn node_controller(
        self: std::sync::Arc<Self>,
        name: &str,
        flags: &FlagValues,
    ) -> Option<CloudResult<std::sync::Arc<dyn NodeController>>> {
        (name == tagging_plan::CONTROLLER).then(|| {
            tagging::TaggingController::new(self, flags)
                .map(|c| std::sync::Arc::new(c) as std::sync::Arc<dyn NodeController>)
        })
    }
}
