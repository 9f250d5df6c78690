//! Kubelet image credential provider plugins: the exec-plugin protocol
//! (`credentialprovider.kubelet.k8s.io` v1, v1beta1, v1alpha1) and the
//! providers behind `overcast-credential-provider <provider>`.

pub mod image;
pub mod keyring;
pub mod protocol;
pub mod providers;

/// Everything that can go wrong, as one line for the kubelet's log.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("bad request: {0}")]
    Request(String),
    #[error("bad configuration: {0}")]
    Config(String),
    #[error("{0}")]
    Usage(String),
    #[error("{provider}: {message}")]
    Provider {
        provider: &'static str,
        message: String,
    },
}
