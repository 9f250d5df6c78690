//! The local provider's own metrics, on the process's default registry:
//! what the proxy refused or closed because of a bound, and what it holds.

use std::sync::LazyLock;

/// Registered once; a name already taken (a vendor's binary registering
/// the same) leaves the metric unregistered instead of panicking.
fn counter_vec(name: &str, help: &str, labels: &[&str]) -> prometheus::IntCounterVec {
    let counter = prometheus::IntCounterVec::new(prometheus::Opts::new(name, help), labels)
        .expect("a valid metric definition");
    if let Err(e) = prometheus::register(Box::new(counter.clone())) {
        tracing::warn!(metric = name, "not registered: {e}");
    }
    counter
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
    let gauge = prometheus::GaugeVec::new(prometheus::Opts::new(name, help), labels)
        .expect("a valid metric definition");
    if let Err(e) = prometheus::register(Box::new(gauge.clone())) {
        tracing::warn!(metric = name, "not registered: {e}");
    }
    gauge
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
