//! The kubelet's exec-plugin protocol, `credentialprovider.kubelet.k8s.io`
//! v1, v1beta1 and v1alpha1: a CredentialProviderRequest on stdin, a
//! CredentialProviderResponse on stdout, in the request's apiVersion.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::image::ImageRef;

pub const GROUP: &str = "credentialprovider.kubelet.k8s.io";
pub const VERSIONS: [&str; 3] = ["v1", "v1beta1", "v1alpha1"];

/// A request as the kubelet sends it. Fields this plugin does not know are
/// accepted (newer kubelets add some).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawRequest {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    image: Option<String>,
    /// v1, when the kubelet's tokenAttributes ask for one.
    #[serde(default)]
    service_account_token: Option<String>,
    #[serde(default)]
    service_account_annotations: BTreeMap<String, String>,
}

/// A request that passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The request's apiVersion, answered in kind.
    pub api_version: String,
    pub image: ImageRef,
    pub service_account_token: Option<String>,
    pub service_account_annotations: BTreeMap<String, String>,
}

impl Request {
    /// Parses stdin; every problem is one line naming what is wrong.
    pub fn parse(input: &[u8]) -> Result<Self, Error> {
        let raw: RawRequest = serde_json::from_slice(input).map_err(|e| {
            Error::Request(format!("malformed CredentialProviderRequest JSON: {e}"))
        })?;
        let version = raw
            .api_version
            .strip_prefix(&format!("{GROUP}/"))
            .filter(|v| VERSIONS.contains(v))
            .ok_or_else(|| {
                Error::Request(format!(
                    "unsupported apiVersion {:?}: want {GROUP}/v1, v1beta1 or v1alpha1",
                    raw.api_version
                ))
            })?;
        if raw.kind != "CredentialProviderRequest" {
            return Err(Error::Request(format!(
                "unsupported kind {:?}: want CredentialProviderRequest",
                raw.kind
            )));
        }
        let image = raw
            .image
            .filter(|i| !i.is_empty())
            .ok_or_else(|| Error::Request("image: required".to_string()))?;
        let image = ImageRef::parse(&image).map_err(|e| Error::Request(format!("image: {e}")))?;
        Ok(Request {
            api_version: format!("{GROUP}/{version}"),
            image,
            service_account_token: raw.service_account_token.filter(|t| !t.is_empty()),
            service_account_annotations: raw.service_account_annotations,
        })
    }
}

/// How the kubelet caches a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum CacheKeyType {
    Image,
    Registry,
    Global,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuthConfig {
    pub username: String,
    pub password: String,
}

/// What a provider answers; [`Response::to_json`] puts it on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub cache_key_type: CacheKeyType,
    /// `None`: the kubelet's defaultCacheDuration; `Some(0)`: do not cache.
    pub cache_duration: Option<Duration>,
    /// Keyed by matchImages-style patterns (registry hosts, globs allowed).
    pub auth: BTreeMap<String, AuthConfig>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireResponse<'a> {
    api_version: &'a str,
    kind: &'static str,
    cache_key_type: CacheKeyType,
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_duration: Option<String>,
    auth: &'a BTreeMap<String, AuthConfig>,
}

impl Response {
    /// The response in the request's apiVersion.
    pub fn to_json(&self, api_version: &str) -> String {
        let wire = WireResponse {
            api_version,
            kind: "CredentialProviderResponse",
            cache_key_type: self.cache_key_type,
            cache_duration: self.cache_duration.map(go_duration),
            auth: &self.auth,
        };
        serde_json::to_string(&wire).expect("response serializes")
    }
}

/// Go's `time.Duration.String()`, as the kubelet reads cacheDuration.
pub use overcast_cloud_provider::duration::format_go_duration as go_duration;

/// Go durations ("5m", "1h30m", "90s") for config files, as the CCM's.
pub use overcast_cloud_provider::duration::parse_go_duration;

#[cfg(test)]
mod tests {
    use super::*;

    fn req(json: &str) -> Result<Request, String> {
        Request::parse(json.as_bytes()).map_err(|e| e.to_string())
    }

    #[test]
    fn each_protocol_version_is_answered_in_kind() {
        for v in VERSIONS {
            let r = req(&format!(
                r#"{{"apiVersion":"{GROUP}/{v}","kind":"CredentialProviderRequest","image":"registry.example.com/team/app:1.0"}}"#
            ))
            .unwrap();
            assert_eq!(r.api_version, format!("{GROUP}/{v}"));
            let resp = Response {
                cache_key_type: CacheKeyType::Registry,
                cache_duration: Some(Duration::from_secs(300)),
                auth: BTreeMap::from([(
                    "registry.example.com".to_string(),
                    AuthConfig {
                        username: "u".into(),
                        password: "p".into(),
                    },
                )]),
            };
            assert_eq!(
                resp.to_json(&r.api_version),
                format!(
                    r#"{{"apiVersion":"{GROUP}/{v}","kind":"CredentialProviderResponse","cacheKeyType":"Registry","cacheDuration":"5m0s","auth":{{"registry.example.com":{{"username":"u","password":"p"}}}}}}"#
                )
            );
        }
    }

    #[test]
    fn an_absent_cache_duration_is_left_out_and_zero_is_zero() {
        let mut resp = Response {
            cache_key_type: CacheKeyType::Image,
            cache_duration: None,
            auth: BTreeMap::new(),
        };
        assert!(!resp.to_json("x").contains("cacheDuration"));
        resp.cache_duration = Some(Duration::ZERO);
        assert!(resp.to_json("x").contains(r#""cacheDuration":"0s""#));
    }

    #[test]
    fn newer_fields_are_accepted() {
        let r = req(&format!(
            r#"{{"apiVersion":"{GROUP}/v1","kind":"CredentialProviderRequest","image":"r.io/a","serviceAccountToken":"tok","serviceAccountAnnotations":{{"a":"b"}},"somethingNew":1}}"#
        ))
        .unwrap();
        assert_eq!(r.service_account_token.as_deref(), Some("tok"));
        assert_eq!(r.service_account_annotations["a"], "b");
    }

    #[test]
    fn bad_requests_are_one_clear_line() {
        let cases = [
            ("{", "malformed CredentialProviderRequest JSON"),
            (
                r#"{"apiVersion":"v1","kind":"CredentialProviderRequest","image":"a"}"#,
                "unsupported apiVersion \"v1\"",
            ),
            (
                &format!(
                    r#"{{"apiVersion":"{GROUP}/v2","kind":"CredentialProviderRequest","image":"a"}}"#
                ),
                "unsupported apiVersion",
            ),
            (
                &format!(r#"{{"apiVersion":"{GROUP}/v1","kind":"Pod","image":"a"}}"#),
                "unsupported kind \"Pod\"",
            ),
            (
                &format!(r#"{{"apiVersion":"{GROUP}/v1","kind":"CredentialProviderRequest"}}"#),
                "image: required",
            ),
            (
                &format!(
                    r#"{{"apiVersion":"{GROUP}/v1","kind":"CredentialProviderRequest","image":"UPPER/Case"}}"#
                ),
                "image: ",
            ),
        ];
        for (input, want) in cases {
            let err = req(input).unwrap_err();
            assert!(err.contains(want), "{input}: {err}");
            assert!(!err.contains('\n'), "one line: {err}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(go_duration(Duration::from_secs(0)), "0s");
        assert_eq!(go_duration(Duration::from_secs(3600 * 6)), "6h0m0s");
        assert_eq!(go_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(go_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(
            parse_go_duration("1h30m").unwrap(),
            Duration::from_secs(5400)
        );
        assert!(parse_go_duration("5").is_err());
        let huge = parse_go_duration("99999999999999999999h")
            .unwrap_err()
            .to_string();
        assert!(huge.contains("out of range"), "{huge}");
    }
}
