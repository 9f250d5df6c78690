//! cloudprovider_aws_api_request_duration_seconds and
//! cloudprovider_aws_api_request_errors, labelled by request as
//! cloud-provider-aws labels them ("describe_instance", ...).

use std::sync::LazyLock;
use std::time::Instant;

static DURATION: LazyLock<prometheus::HistogramVec> = LazyLock::new(|| {
    prometheus::HistogramVec::new(
        prometheus::HistogramOpts::new(
            "cloudprovider_aws_api_request_duration_seconds",
            "Latency of AWS API calls",
        ),
        &["request"],
    )
    .expect("a valid metric")
});

static ERRORS: LazyLock<prometheus::IntCounterVec> = LazyLock::new(|| {
    prometheus::IntCounterVec::new(
        prometheus::Opts::new("cloudprovider_aws_api_request_errors", "AWS API errors"),
        &["request"],
    )
    .expect("a valid metric")
});

/// Both metrics into `registry` (the application's).
pub fn register(
    registry: &prometheus::Registry,
) -> Result<(), overcast_cloud_provider::metrics::MetricsError> {
    overcast_cloud_provider::metrics::register_all(
        registry,
        vec![Box::new(DURATION.clone()), Box::new(ERRORS.clone())],
    )
}

/// Runs one AWS call, recording its latency, or an error.
pub async fn timed<T, E>(
    request: &'static str,
    call: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let start = Instant::now();
    let result = call.await;
    match &result {
        Ok(_) => DURATION
            .with_label_values(&[request])
            .observe(start.elapsed().as_secs_f64()),
        Err(_) => ERRORS.with_label_values(&[request]).inc(),
    }
    result
}

/// A failed AWS call as a CloudError: what was being done, then the SDK's
/// whole error context (code, message, request ID).
pub fn aws_err<E>(what: String) -> impl FnOnce(E) -> overcast_cloud_provider::CloudError
where
    E: std::error::Error + aws_sdk_ec2::error::ProvideErrorMetadata + Send + Sync + 'static,
{
    move |e| overcast_cloud_provider::CloudError::other(format!("{what}: {}", describe(&e)))
}

/// An AWS error as a person reads it: `Code: message` when AWS answered,
/// the transport's own chain (timeout, connection refused) when it did not;
/// never the SDK's `Error { code: …, message: … }` debug text.
pub fn describe<E>(e: &E) -> String
where
    E: std::error::Error + aws_sdk_ec2::error::ProvideErrorMetadata,
{
    match (e.code(), e.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_string(),
        _ => aws_sdk_ec2::error::DisplayErrorContext(e).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ec2::error::ErrorMetadata;
    use aws_sdk_ec2::operation::describe_instances::DescribeInstancesError;

    #[test]
    fn aws_answers_read_as_code_and_message() {
        let answered = DescribeInstancesError::generic(
            ErrorMetadata::builder()
                .code("UnauthorizedOperation")
                .message("You are not authorized to perform this operation.")
                .build(),
        );
        assert_eq!(
            describe(&answered),
            "UnauthorizedOperation: You are not authorized to perform this operation."
        );
        let err = aws_err::<DescribeInstancesError>("describing instances".into())(answered);
        let text = err.to_string();
        assert!(
            !text.contains("Error {") && !text.contains("code:"),
            "{text}"
        );
    }
}
