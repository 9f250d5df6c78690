//! The local provider: nodes from an inventory, load balancers from address pools.
