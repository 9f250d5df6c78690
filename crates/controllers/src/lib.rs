//! The cloud controllers: node, node-lifecycle, service, route and node-IPAM.
