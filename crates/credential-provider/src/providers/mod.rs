pub mod static_registry;
