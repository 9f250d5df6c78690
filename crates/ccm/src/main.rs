//! The overcast-ccm binary with the providers this build includes.

use std::process::ExitCode;
#[cfg(feature = "fake")]
use std::sync::Arc;

use overcast_cloud_provider::ProviderRegistry;
#[cfg(feature = "fake")]
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
    overcast_ccm::main(registry)
}
