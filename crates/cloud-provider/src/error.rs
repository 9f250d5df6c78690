use std::time::Duration;

/// What a cloud call can answer besides success. The first variants mirror
/// upstream's sentinel errors (with upstream's messages); [`CloudError::Retry`]
/// is `api.RetryError`.
#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    /// The instance definitely does not exist in the cloud.
    #[error("instance not found")]
    InstanceNotFound,
    /// The provider does not implement this call.
    #[error("unimplemented")]
    NotImplemented,
    /// Another component (not the CCM) manages this; the controller treats the
    /// call as a successful no-op.
    #[error("implemented by alternate to cloud provider")]
    ImplementedElsewhere,
    /// The disk is not found (volume labelling).
    #[error("disk is not found")]
    DiskNotFound,
    /// Not an error as such: the provider asks to be called again after
    /// `retry_after` instead of the usual exponential back-off.
    #[error("{message} (retry after {retry_after:?})")]
    Retry {
        /// Why.
        message: String,
        /// When to call again.
        retry_after: Duration,
    },
    /// Anything else: a failed or refused cloud call. Transient by default.
    #[error(transparent)]
    Other(Box<dyn std::error::Error + Send + Sync + 'static>),
}

impl CloudError {
    /// A plain error with a message.
    pub fn other(message: impl Into<String>) -> Self {
        CloudError::Other(message.into().into())
    }

    /// Wraps any error type.
    pub fn from_err(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        CloudError::Other(Box::new(err))
    }

    /// `api.NewRetryError`.
    pub fn retry(message: impl Into<String>, retry_after: Duration) -> Self {
        CloudError::Retry {
            message: message.into(),
            retry_after,
        }
    }

    /// Whether this is [`CloudError::InstanceNotFound`].
    pub fn is_instance_not_found(&self) -> bool {
        matches!(self, CloudError::InstanceNotFound)
    }

    /// Whether this is [`CloudError::NotImplemented`].
    pub fn is_not_implemented(&self) -> bool {
        matches!(self, CloudError::NotImplemented)
    }

    /// Whether this is [`CloudError::ImplementedElsewhere`].
    pub fn is_implemented_elsewhere(&self) -> bool {
        matches!(self, CloudError::ImplementedElsewhere)
    }

    /// The delay a [`CloudError::Retry`] asks for.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            CloudError::Retry { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

/// A cloud call's result.
pub type Result<T, E = CloudError> = std::result::Result<T, E>;
