//! The overcast-ccm binary with the providers this build includes.

use std::process::ExitCode;
#[cfg(any(feature = "fake", feature = "local", feature = "aws"))]
use std::sync::Arc;

use overcast_cloud_provider::ProviderRegistry;
#[cfg(any(feature = "fake", feature = "local", feature = "aws"))]
use overcast_cloud_provider::{CloudError, CloudProvider};

fn main() -> ExitCode {
    #[allow(unused_mut)]
    let mut registry = ProviderRegistry::new();
    #[cfg(feature = "fake")]
    registry
        .register(overcast_provider_fake::PROVIDER_NAME, |config| {
            let cloud = overcast_provider_fake::FakeCloud::from_config(config)
                .map_err(CloudError::from_err)?;
            Ok(Arc::new(cloud) as Arc<dyn CloudProvider>)
        })
        .expect("each provider is registered once");
    #[cfg(feature = "local")]
    registry
        .register(overcast_provider_local::PROVIDER_NAME, |config| {
            let cloud = overcast_provider_local::LocalCloud::from_config(config)
                .map_err(CloudError::from_err)?;
            Ok(Arc::new(cloud) as Arc<dyn CloudProvider>)
        })
        .expect("each provider is registered once");
    #[cfg(feature = "aws")]
    registry
        .register(overcast_provider_aws::PROVIDER_NAME, |config| {
            let cloud = overcast_provider_aws::AwsCloud::from_config(config)
                .map_err(CloudError::from_err)?;
            Ok(Arc::new(cloud) as Arc<dyn CloudProvider>)
        })
        .expect("each provider is registered once");
    #[allow(unused_mut)]
    let mut ccm = overcast_ccm::Ccm::builder().registry(registry);
    #[cfg(feature = "aws")]
    for spec in overcast_provider_aws::controllers() {
        ccm = ccm.controller(spec);
    }
    ccm.run()
}
