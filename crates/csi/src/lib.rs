//! overcast-csi: a CSI driver for node-local volumes.
//!
//! One process per node serves the identity, controller and node services on
//! one unix socket: volumes live on the node that runs the driver, so the
//! external-provisioner runs beside it in its per-node mode
//! (`--node-deployment`) and every request for a volume reaches the node that
//! holds it. Volume state is kept on the backend itself (see [`store`]), never
//! only in memory, so a restart after a kill -9 at any step finds every volume
//! and cleans up what a step left half done.

pub mod proto {
    //! The CSI spec's gRPC types and services, generated from its csi.proto.
    #![allow(missing_debug_implementations, clippy::all, clippy::pedantic)]
    tonic::include_proto!("csi.v1");

    pub mod registration {
        //! The kubelet's plugin registration API (k8s.io/kubelet
        //! pluginregistration/v1), generated from its api.proto.
        #![allow(missing_debug_implementations, clippy::all, clippy::pedantic)]
        tonic::include_proto!("pluginregistration");
    }
}

mod authority;
mod controller;
pub mod crash;
mod host;
mod identity;
mod metrics;
mod node;
pub mod plan;
mod registration;
mod server;
pub mod store;

pub use metrics::parse_endpoint as parse_http_endpoint;
pub use server::{Config, run};

/// The driver's name as the CSIDriver object and StorageClasses name it.
pub const DEFAULT_DRIVER_NAME: &str = "local.csi.overcast.dev";
/// The topology key volumes are bound to: the node that holds them.
pub const TOPOLOGY_NODE_KEY: &str = "topology.local.csi.overcast.dev/node";
