//! `ecr`: Amazon ECR credentials, as cloud-provider-aws's
//! ecr-credential-provider gives them: GetAuthorizationToken in the region
//! named by the registry host, the base64 `user:password` token split at the
//! first colon, keyed by the registry host, cached per registry for half the
//! token's remaining lifetime.
//!
//! Credentials and endpoints come from the AWS SDK's default chain:
//! environment, profile, web identity, IMDS; `AWS_ENDPOINT_URL` (or
//! `AWS_ENDPOINT_URL_ECR`) points it at an emulator.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use base64::Engine as _;

use crate::Error;
use crate::protocol::{AuthConfig, CacheKeyType, Request, Response};

/// DNS suffixes of ECR private registries in every AWS partition
/// (cloud-provider-aws's ecrPrivateHostPattern).
const PARTITION_SUFFIXES: [&str; 9] = [
    "amazonaws.com",
    "amazonaws.com.cn",
    "amazonaws.eu",
    "on.aws",
    "on.amazonwebservices.com.cn",
    "sc2s.sgov.gov",
    "c2s.ic.gov",
    "cloud.adc-e.uk",
    "csp.hci.ic.gov",
];

/// An ECR private registry host, taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcrHost {
    pub account: String,
    pub region: String,
    pub fips: bool,
}

/// `<12 digits>.dkr.ecr[-fips].<region>.<partition suffix>` (also with
/// `dkr-ecr`), or `None` for any other host.
pub fn parse_host(host: &str) -> Option<EcrHost> {
    let (account, rest) = host.split_once('.')?;
    if account.len() != 12 || !account.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let (fips, rest) = ["dkr.ecr-fips.", "dkr-ecr-fips.", "dkr.ecr.", "dkr-ecr."]
        .iter()
        .find_map(|p| rest.strip_prefix(p).map(|r| (p.contains("fips"), r)))?;
    let (region, suffix) = rest.split_once('.')?;
    let region_ok = region
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && region
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    (region_ok && PARTITION_SUFFIXES.contains(&suffix)).then(|| EcrHost {
        account: account.to_string(),
        region: region.to_string(),
        fips,
    })
}

/// ECR Public hosts, which this provider does not serve.
fn is_public(host: &str) -> bool {
    host == "public.ecr.aws" || host == "ecr-public.aws.com"
}

/// Half the token's remaining lifetime, as cloud-provider-aws caches it. No
/// expiry, or one already past (moto answers so) or about to pass: do not
/// cache (upstream leaves it to the kubelet's default, which may keep a dead
/// token for hours). Never negative.
pub fn cache_duration(expires_at: Option<SystemTime>, now: SystemTime) -> Option<Duration> {
    let Some(expires_at) = expires_at else {
        return Some(Duration::ZERO);
    };
    match expires_at.duration_since(now) {
        Ok(left) if left.as_secs() / 2 > 0 => Some(Duration::from_secs(left.as_secs() / 2)),
        _ => Some(Duration::ZERO),
    }
}

/// Splits a base64 `user:password` authorization token.
pub fn decode_token(token: &str) -> Result<AuthConfig, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .map_err(|e| format!("authorization token is not base64: {e}"))?;
    let text =
        String::from_utf8(bytes).map_err(|_| "authorization token is not UTF-8".to_string())?;
    let (username, password) = text
        .split_once(':')
        .ok_or_else(|| "authorization token has no user:password form".to_string())?;
    Ok(AuthConfig {
        username: username.to_string(),
        password: password.to_string(),
    })
}

fn provider_error(message: impl Into<String>) -> Error {
    Error::Provider {
        provider: "ecr",
        message: message.into(),
    }
}

/// Answers one request.
pub async fn provide(request: &Request) -> Result<Response, Error> {
    let host = request.image.host().to_string();
    if request.service_account_token.is_some() {
        // Using the node's credentials instead would bypass the role the
        // workload's service account names.
        return Err(provider_error(
            "service-account token mode (tokenAttributes) is not supported yet; remove tokenAttributes from this provider's kubelet configuration",
        ));
    }
    if is_public(&host) {
        return Err(provider_error(format!(
            "{host}: ECR Public needs no credentials to pull; remove it from matchImages"
        )));
    }
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    match parse_host(&host) {
        Some(ecr) => {
            loader = loader.region(aws_config::Region::new(ecr.region.clone()));
            if ecr.fips {
                loader = loader.use_fips(true);
            }
        }
        None => eprintln!(
            "overcast-credential-provider: ecr: {host} is not an ECR registry host; using the default region"
        ),
    }
    let config = loader.load().await;
    let client = aws_sdk_ecr::Client::new(&config);
    let answer = client.get_authorization_token().send().await.map_err(|e| {
        use aws_sdk_ecr::error::ProvideErrorMetadata as _;
        // What ECR answered, or the transport's chain when it did not.
        let why = match (e.code(), e.message()) {
            (Some(code), Some(message)) => format!("{code}: {message}"),
            _ => aws_sdk_ecr::error::DisplayErrorContext(&e).to_string(),
        };
        provider_error(format!("GetAuthorizationToken for {host}: {why}"))
    })?;
    let data = answer.authorization_data().first().ok_or_else(|| {
        provider_error(format!(
            "GetAuthorizationToken for {host}: no authorization data"
        ))
    })?;
    let token = data
        .authorization_token()
        .ok_or_else(|| provider_error(format!("GetAuthorizationToken for {host}: no token")))?;
    let auth = decode_token(token).map_err(|e| provider_error(format!("{host}: {e}")))?;
    let expires_at = data
        .expires_at()
        .and_then(|t| SystemTime::try_from(*t).ok());
    Ok(Response {
        cache_key_type: CacheKeyType::Registry,
        cache_duration: cache_duration(expires_at, SystemTime::now()),
        auth: BTreeMap::from([(host, auth)]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_ecr_host_form() {
        let h = parse_host("123456789012.dkr.ecr.us-west-2.amazonaws.com").unwrap();
        assert_eq!(
            (h.account.as_str(), h.region.as_str(), h.fips),
            ("123456789012", "us-west-2", false)
        );
        assert_eq!(
            parse_host("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn")
                .unwrap()
                .region,
            "cn-north-1"
        );
        assert!(
            parse_host("123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com")
                .unwrap()
                .fips
        );
        assert_eq!(
            parse_host("123456789012.dkr-ecr.eu-west-1.on.aws")
                .unwrap()
                .region,
            "eu-west-1"
        );
        assert_eq!(
            parse_host("123456789012.dkr.ecr.us-iso-east-1.c2s.ic.gov")
                .unwrap()
                .region,
            "us-iso-east-1"
        );
        assert_eq!(
            parse_host("123456789012.dkr.ecr.eusc-de-east-1.amazonaws.eu")
                .unwrap()
                .region,
            "eusc-de-east-1"
        );
        for bad in [
            "12345678901.dkr.ecr.us-west-2.amazonaws.com",
            "123456789012.dkr.ecr.us-west-2.example.com",
            "registry.example.com",
            "public.ecr.aws",
            "123456789012.ecr.us-west-2.amazonaws.com",
        ] {
            assert_eq!(parse_host(bad), None, "{bad}");
        }
    }

    #[test]
    fn cache_duration_is_half_the_remaining_lifetime_and_never_negative() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(
            cache_duration(Some(now + Duration::from_secs(12 * 3600)), now),
            Some(Duration::from_secs(6 * 3600))
        );
        assert_eq!(
            cache_duration(None, now),
            Some(Duration::ZERO),
            "no expiry: do not cache"
        );
        assert_eq!(
            cache_duration(Some(now - Duration::from_secs(60)), now),
            Some(Duration::ZERO),
            "expired: do not cache"
        );
        assert_eq!(
            cache_duration(Some(now + Duration::from_secs(1)), now),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn tokens_split_at_the_first_colon() {
        let token = base64::engine::general_purpose::STANDARD.encode("AWS:pass:with:colons");
        assert_eq!(
            decode_token(&token).unwrap(),
            AuthConfig {
                username: "AWS".into(),
                password: "pass:with:colons".into()
            }
        );
        assert!(decode_token("!!!").unwrap_err().contains("base64"));
        let no_colon = base64::engine::general_purpose::STANDARD.encode("nocolon");
        assert!(
            decode_token(&no_colon)
                .unwrap_err()
                .contains("user:password")
        );
    }
}
