//! Metrics without a process-wide registry: each library defines its
//! collectors once and registers them into the registry the application
//! owns and serves (upstream's `legacyregistry`, without the panic on a
//! name registered twice). A provider registers its own in
//! [`crate::CloudProvider::initialize`] through
//! [`crate::ProviderContext::metrics`].

use prometheus::Registry;
use prometheus::core::Collector;

/// A collector the registry refused: its name and why.
#[derive(Debug, thiserror::Error)]
#[error("registering metric {name}: {source}")]
pub struct MetricsError {
    /// The collector's first metric name.
    pub name: String,
    /// The registry's answer.
    #[source]
    pub source: prometheus::Error,
}

/// Registers each collector into `registry`, in order; the first one
/// refused (a name already taken, say) stops it, named in the error.
pub fn register_all(
    registry: &Registry,
    collectors: Vec<Box<dyn Collector>>,
) -> Result<(), MetricsError> {
    for collector in collectors {
        let name = collector
            .desc()
            .first()
            .map_or_else(String::new, |d| d.fq_name.clone());
        registry
            .register(collector)
            .map_err(|source| MetricsError { name, source })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter() -> prometheus::IntCounter {
        prometheus::IntCounter::new("acme_requests_total", "Requests").unwrap()
    }

    #[test]
    fn a_name_taken_twice_is_an_error_naming_it_not_a_panic() {
        let registry = Registry::new();
        register_all(&registry, vec![Box::new(counter())]).unwrap();
        let err = register_all(&registry, vec![Box::new(counter())]).unwrap_err();
        assert_eq!(err.name, "acme_requests_total");
        assert!(err.to_string().contains("acme_requests_total"), "{err}");
    }
}
