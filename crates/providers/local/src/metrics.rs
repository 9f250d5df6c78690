//! The local provider's own metrics: what the proxy refused or closed
//! because of a bound, and what it holds. They count for the process;
//! [`register`] puts them into the application's registry.

use std::sync::LazyLock;

use overcast_cloud_provider::metrics::{MetricsError, register_all};

/// Every metric of this provider into `registry` (the application's).
pub fn register(registry: &prometheus::Registry) -> Result<(), MetricsError> {
    register_all(
        registry,
        vec![
            Box::new(REFUSED.clone()),
            Box::new(IDLE_CLOSED.clone()),
            Box::new(POOL_SIZE.clone()),
            Box::new(POOL_IN_USE.clone()),
        ],
    )
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> prometheus::IntCounterVec {
    prometheus::IntCounterVec::new(prometheus::Opts::new(name, help), labels)
        .expect("a valid metric definition")
}

/// Connections or datagrams turned away, by reason: `max_connections`,
/// `max_udp_flows`, `source_range`.
pub static REFUSED: LazyLock<prometheus::IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "overcast_local_proxy_refused_total",
        "Connections (TCP) or datagrams (UDP) the local load balancer refused, by reason",
        &["protocol", "reason"],
    )
});

/// TCP connections closed after loadBalancer.tcpIdleTimeout without traffic.
pub static IDLE_CLOSED: LazyLock<prometheus::IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "overcast_local_proxy_idle_timeouts_total",
        "Connections or flows the local load balancer ended for being idle",
        &["protocol"],
    )
});

fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> prometheus::GaugeVec {
    prometheus::GaugeVec::new(prometheus::Opts::new(name, help), labels)
        .expect("a valid metric definition")
}

/// Addresses each pool hands out, as MetalLB's
/// `metallb_allocator_addresses_total{pool}`.
pub static POOL_SIZE: LazyLock<prometheus::GaugeVec> = LazyLock::new(|| {
    gauge_vec(
        "overcast_local_allocator_addresses_total",
        "The number of addresses an address pool of the local provider hands out",
        &["pool"],
    )
});

/// Addresses of each pool held by Services, as MetalLB's
/// `metallb_allocator_addresses_in_use_total{pool}`.
pub static POOL_IN_USE: LazyLock<prometheus::GaugeVec> = LazyLock::new(|| {
    gauge_vec(
        "overcast_local_allocator_addresses_in_use_total",
        "The number of addresses of an address pool of the local provider held by Services",
        &["pool"],
    )
});
