//! Providers by name (upstream's `plugins.go`), without global state: the
//! binary builds a registry with the providers it was compiled with.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::cloud::CloudProvider;
use crate::error::CloudError;

/// Builds a provider from the contents of its `--cloud-config` file, if any.
pub type Factory =
    Box<dyn Fn(Option<&[u8]>) -> Result<Arc<dyn CloudProvider>, CloudError> + Send + Sync>;

/// Why a provider could not be registered or built; each message names
/// the flag the user set.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// `--cloud-provider` is empty.
    #[error("--cloud-provider must name a provider; known providers: {known}")]
    NoProvider {
        /// The registered names, comma-separated.
        known: String,
    },
    /// `--cloud-provider` names no registered provider.
    #[error("--cloud-provider={name}: unknown cloud provider; known providers: {known}")]
    Unknown {
        /// The name given.
        name: String,
        /// The registered names, comma-separated.
        known: String,
    },
    // The cause is part of the message, not also a `source()`, so a
    // printed error chain says it once.
    /// The `--cloud-config` file cannot be read.
    #[error("--cloud-config={}: cannot read the cloud config file: {cause}", path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// Why.
        cause: std::io::Error,
    },
    /// The provider's factory refused its config.
    #[error("--cloud-provider={name}: could not init cloud provider: {cause}")]
    Init {
        /// The provider.
        name: String,
        /// What the factory answered.
        cause: CloudError,
    },
    /// This name is registered already.
    #[error("cloud provider {0:?} was registered twice")]
    Duplicate(String),
}

/// The providers a binary can run, by `--cloud-provider` name.
#[derive(Default)]
pub struct ProviderRegistry {
    factories: BTreeMap<String, Factory>,
}

impl std::fmt::Debug for ProviderRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderRegistry")
            .field("providers", &self.names())
            .finish()
    }
}

impl ProviderRegistry {
    /// A registry without providers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a provider; a name registered twice is an error (fatal upstream).
    pub fn register(
        &mut self,
        name: impl Into<String>,
        factory: impl Fn(Option<&[u8]>) -> Result<Arc<dyn CloudProvider>, CloudError>
        + Send
        + Sync
        + 'static,
    ) -> Result<(), RegistryError> {
        let name = name.into();
        if self.factories.contains_key(&name) {
            return Err(RegistryError::Duplicate(name));
        }
        self.factories.insert(name, Box::new(factory));
        Ok(())
    }

    /// The registered names, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.factories.keys().map(String::as_str).collect()
    }

    fn known(&self) -> String {
        let names = self.names();
        if names.is_empty() {
            "(none)".into()
        } else {
            names.join(", ")
        }
    }

    /// Upstream's `InitCloudProvider`: reads `config` (when given) and builds
    /// the named provider. Unlike upstream, "" and "external" are errors, since a
    /// cloud-controller-manager without a cloud has nothing to do.
    pub fn init(
        &self,
        name: &str,
        config: Option<&Path>,
    ) -> Result<Arc<dyn CloudProvider>, RegistryError> {
        if name.is_empty() || name == "external" {
            return Err(RegistryError::NoProvider {
                known: self.known(),
            });
        }
        let factory = self
            .factories
            .get(name)
            .ok_or_else(|| RegistryError::Unknown {
                name: name.to_string(),
                known: self.known(),
            })?;
        let contents = match config {
            Some(path) => Some(std::fs::read(path).map_err(|cause| RegistryError::Config {
                path: path.to_path_buf(),
                cause,
            })?),
            None => None,
        };
        factory(contents.as_deref()).map_err(|cause| RegistryError::Init {
            name: name.to_string(),
            cause,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Named(String);
    impl CloudProvider for Named {
        fn provider_name(&self) -> &str {
            &self.0
        }
    }

    fn registry() -> ProviderRegistry {
        let mut r = ProviderRegistry::new();
        r.register("echo", |config| {
            let name = match config {
                Some(bytes) => String::from_utf8_lossy(bytes).trim().to_string(),
                None => "no-config".to_string(),
            };
            if name == "bad" {
                return Err(CloudError::other("field x: bad value"));
            }
            Ok(Arc::new(Named(name)) as Arc<dyn CloudProvider>)
        })
        .unwrap();
        r
    }

    #[test]
    fn init_passes_the_config_file_contents_to_the_factory() {
        let dir = std::env::temp_dir().join(format!("overcast-registry-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("cloud.conf");
        std::fs::write(&file, "from-file\n").unwrap();
        let provider = registry().init("echo", Some(&file)).unwrap();
        assert_eq!(provider.provider_name(), "from-file");
        let provider = registry().init("echo", None).unwrap();
        assert_eq!(provider.provider_name(), "no-config");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn unknown_provider_names_the_flag_and_the_known_ones() {
        let err = registry().init("gce", None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--cloud-provider=gce: unknown cloud provider; known providers: echo"
        );
        assert!(matches!(
            registry().init("", None),
            Err(RegistryError::NoProvider { .. })
        ));
    }

    #[test]
    fn unreadable_config_names_the_file() {
        let err = registry()
            .init("echo", Some(Path::new("/nonexistent/cloud.conf")))
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("--cloud-config=/nonexistent/cloud.conf: "),
            "{msg}"
        );
    }

    #[test]
    fn factory_errors_are_reported_with_the_provider() {
        let dir =
            std::env::temp_dir().join(format!("overcast-registry-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("cloud.conf");
        std::fs::write(&file, "bad").unwrap();
        let err = registry().init("echo", Some(&file)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--cloud-provider=echo: could not init cloud provider: field x: bad value"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn registering_a_name_twice_is_refused() {
        let mut r = registry();
        let again = r.register("echo", |_| {
            Ok(Arc::new(Named("x".into())) as Arc<dyn CloudProvider>)
        });
        assert!(matches!(again, Err(RegistryError::Duplicate(n)) if n == "echo"));
    }
}
