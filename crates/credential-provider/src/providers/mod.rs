#[cfg(feature = "ecr")]
pub mod ecr;
pub mod static_registry;
