//! Delegated authentication and authorisation for the secure port, as the Go
//! CCM's (k8s.io/apiserver's delegating authenticator and authorizer, v0.34):
//! - a bearer token is checked with a TokenReview (401 if refused); a request
//!   without one is `system:anonymous`;
//! - paths in `--authorization-always-allow-paths`, and the group
//!   `system:masters`, are then allowed; anything else is checked with a
//!   SubjectAccessReview of its non-resource path and verb (403 if denied);
//! - a review the apiserver cannot answer within 10 s is a 401 (TokenReview)
//!   or a 500 (SubjectAccessReview); answers are cached (10 s by default).
//!
//! Client certificates are not asked for (upstream also accepts them when a
//! client CA is configured); docs/running.md says so.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, UserInfo};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};

/// Upstream's --authorization-always-allow-paths default for the CCM.
pub const DEFAULT_ALWAYS_ALLOW: &str = "/healthz,/readyz,/livez";
/// Upstream's AlwaysAllowGroups for delegated authorisation.
const ALWAYS_ALLOW_GROUP: &str = "system:masters";
/// How long a review may take (upstream's webhook timeout).
const REVIEW_TIMEOUT: Duration = Duration::from_secs(10);
/// Entries kept per cache at most; past that a cache starts afresh.
const CACHE_MAX: usize = 1024;

/// Upstream's cache TTL flags, all 10 s by default.
#[derive(Debug, Clone, Copy)]
pub struct CacheTtls {
    /// --authentication-token-webhook-cache-ttl
    pub token: Duration,
    /// --authorization-webhook-cache-authorized-ttl
    pub allowed: Duration,
    /// --authorization-webhook-cache-unauthorized-ttl
    pub denied: Duration,
}

/// What the gate says of a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// 401: a token the apiserver did not accept.
    Unauthorized,
    /// 403, with the reason as upstream words it.
    Forbidden(String),
    /// 500: the apiserver could not be asked.
    Error(String),
}

pub struct Gate {
    /// For TokenReviews (--authentication-kubeconfig).
    authentication: kube::Client,
    /// For SubjectAccessReviews (--authorization-kubeconfig).
    authorization: kube::Client,
    always_allow: Vec<String>,
    ttls: CacheTtls,
    /// Keyed by the token's SHA-256, so no token is kept in memory.
    tokens: Mutex<HashMap<String, (Instant, Option<UserInfo>)>>,
    /// Keyed by the review's spec, as upstream's cache is.
    decisions: Mutex<HashMap<String, (Instant, bool, String)>>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("always_allow", &self.always_allow)
            .finish_non_exhaustive()
    }
}

/// `--authorization-always-allow-paths` as upstream reads it: comma-separated,
/// the leading `/` optional, a `*` only at the end (a prefix).
pub fn parse_always_allow(paths: &str) -> Result<Vec<String>, String> {
    paths
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            let p = if p.starts_with('/') {
                p.to_string()
            } else {
                format!("/{p}")
            };
            match p.find('*') {
                Some(i) if i != p.len() - 1 => Err(format!(
                    "--authorization-always-allow-paths: {p:?}: only a trailing '*' is allowed"
                )),
                _ => Ok(p),
            }
        })
        .collect()
}

impl Gate {
    pub fn new(
        authentication: kube::Client,
        authorization: kube::Client,
        always_allow: Vec<String>,
        ttls: CacheTtls,
    ) -> Self {
        Self {
            authentication,
            authorization,
            always_allow,
            ttls,
            tokens: Mutex::new(HashMap::new()),
            decisions: Mutex::new(HashMap::new()),
        }
    }

    fn always_allowed(&self, path: &str) -> bool {
        self.always_allow.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => path.starts_with(prefix),
            None => path == p,
        })
    }

    /// `path`: the path the server will serve; `authorization`: the
    /// request's Authorization header, if any.
    pub async fn check(&self, method: &str, path: &str, authorization: Option<&str>) -> Verdict {
        let token = authorization
            .and_then(|h| h.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .filter(|token| !token.is_empty());
        let user = match token {
            None => UserInfo {
                username: Some("system:anonymous".into()),
                groups: Some(vec!["system:unauthenticated".into()]),
                ..Default::default()
            },
            Some(token) => match self.authenticate(token).await {
                Ok(Some(user)) => user,
                Ok(None) => return Verdict::Unauthorized,
                Err(e) => {
                    tracing::warn!(error = %e, "TokenReview failed");
                    return Verdict::Unauthorized;
                }
            },
        };
        let masters = user
            .groups
            .iter()
            .flatten()
            .any(|g| g == ALWAYS_ALLOW_GROUP);
        if masters || self.always_allowed(path) {
            return Verdict::Allow;
        }
        let verb = method.to_ascii_lowercase();
        match self.authorize(&user, &verb, path).await {
            Ok((true, _)) => Verdict::Allow,
            Ok((false, reason)) => {
                let name = user.username.as_deref().unwrap_or_default();
                let mut message =
                    format!("forbidden: User \"{name}\" cannot {verb} path \"{path}\"");
                if !reason.is_empty() {
                    message.push_str(&format!(": {reason}"));
                }
                Verdict::Forbidden(message)
            }
            Err(e) => {
                tracing::warn!(error = %e, "SubjectAccessReview failed");
                Verdict::Error(format!("Internal Server Error: \"{path}\": {e}"))
            }
        }
    }

    async fn authenticate(&self, token: &str) -> Result<Option<UserInfo>, String> {
        use sha2::Digest as _;
        let digest: String = sha2::Sha256::digest(token.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if let Some(user) = cached(&self.tokens, &digest, |(at, user)| {
            (at.elapsed() < self.ttls.token).then(|| user.clone())
        }) {
            return Ok(user);
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: None,
            },
            ..Default::default()
        };
        let api = Api::<TokenReview>::all(self.authentication.clone());
        let answer = reviewed(api.create(&PostParams::default(), &review)).await?;
        let user = answer
            .status
            .filter(|s| s.authenticated == Some(true))
            .and_then(|s| s.user);
        remember(&self.tokens, digest, (Instant::now(), user.clone()));
        Ok(user)
    }

    async fn authorize(
        &self,
        user: &UserInfo,
        verb: &str,
        path: &str,
    ) -> Result<(bool, String), String> {
        let spec = SubjectAccessReviewSpec {
            user: user.username.clone(),
            groups: user.groups.clone(),
            uid: user.uid.clone(),
            extra: user.extra.clone(),
            non_resource_attributes: Some(NonResourceAttributes {
                path: Some(path.to_string()),
                verb: Some(verb.to_string()),
            }),
            ..Default::default()
        };
        let key = serde_json::to_string(&spec).map_err(|e| e.to_string())?;
        if let Some(decision) = cached(&self.decisions, &key, |(at, allowed, reason)| {
            let ttl = if *allowed {
                self.ttls.allowed
            } else {
                self.ttls.denied
            };
            (at.elapsed() < ttl).then(|| (*allowed, reason.clone()))
        }) {
            return Ok(decision);
        }
        let review = SubjectAccessReview {
            spec,
            ..Default::default()
        };
        let api = Api::<SubjectAccessReview>::all(self.authorization.clone());
        let answer = reviewed(api.create(&PostParams::default(), &review)).await?;
        let status = answer.status.unwrap_or_default();
        let decision = (status.allowed, status.reason.unwrap_or_default());
        remember(
            &self.decisions,
            key,
            (Instant::now(), decision.0, decision.1.clone()),
        );
        Ok(decision)
    }
}

/// A review's answer within [`REVIEW_TIMEOUT`]; the apiserver's own message
/// when it refuses.
async fn reviewed<T>(
    call: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<T, String> {
    match tokio::time::timeout(REVIEW_TIMEOUT, call).await {
        Err(_) => Err(format!(
            "no answer from the apiserver in {REVIEW_TIMEOUT:?}"
        )),
        Ok(Err(kube::Error::Api(status))) => Err(status.message),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(answer)) => Ok(answer),
    }
}

/// A cached answer that `fresh` still accepts.
fn cached<V, T>(
    cache: &Mutex<HashMap<String, V>>,
    key: &str,
    fresh: impl Fn(&V) -> Option<T>,
) -> Option<T> {
    let map = cache.lock().unwrap_or_else(|p| p.into_inner());
    fresh(map.get(key)?)
}

fn remember<V>(cache: &Mutex<HashMap<String, V>>, key: String, value: V) {
    let mut map = cache.lock().unwrap_or_else(|p| p.into_inner());
    if map.len() >= CACHE_MAX {
        map.clear();
    }
    map.insert(key, value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn always_allow_paths_are_read_as_upstream_reads_them() {
        assert_eq!(
            parse_always_allow("/healthz, livez,/debug/*,").unwrap(),
            ["/healthz", "/livez", "/debug/*"]
        );
        let err = parse_always_allow("/a*b").unwrap_err();
        assert!(err.contains("\"/a*b\""), "{err}");
    }

    #[tokio::test]
    async fn always_allowed_paths_are_exact_unless_they_end_in_a_star() {
        // A client that is never used: these requests are decided locally.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = kube::Config::new("https://127.0.0.1:1".parse().unwrap());
        let client = kube::Client::try_from(config).unwrap();
        let ttl = Duration::from_secs(10);
        let gate = Gate::new(
            client.clone(),
            client,
            parse_always_allow("/healthz,/debug/*").unwrap(),
            CacheTtls {
                token: ttl,
                allowed: ttl,
                denied: ttl,
            },
        );
        assert!(gate.always_allowed("/healthz"));
        assert!(!gate.always_allowed("/healthz/cloud-node"));
        assert!(gate.always_allowed("/debug/pprof/heap"));
        assert!(!gate.always_allowed("/metrics"));
        assert_eq!(gate.check("GET", "/healthz", None).await, Verdict::Allow);
        assert_eq!(
            gate.check("GET", "/healthz", Some("Bearer   ")).await,
            Verdict::Allow,
            "an empty token is anonymous"
        );
    }
}
