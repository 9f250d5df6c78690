//! Delegated authentication and authorisation for the secure port, as the Go
//! CCM's (k8s.io/apiserver's delegating authenticator and authorizer): a
//! bearer token is checked with a TokenReview, the request with a
//! SubjectAccessReview of its non-resource path and verb; a request without
//! a token is `system:anonymous`. Paths in `--authorization-always-allow-paths`
//! skip both. Answers are cached for 10 s, upstream's default TTLs.
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
/// Upstream's token and authorisation webhook cache TTLs (all 10 s).
const CACHE_TTL: Duration = Duration::from_secs(10);
/// Entries kept per cache at most; past that a cache starts afresh.
const CACHE_MAX: usize = 1024;

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
    /// Keyed by the token's SHA-256, so no token is kept in memory.
    tokens: Mutex<HashMap<String, (Instant, Option<UserInfo>)>>,
    decisions: Mutex<HashMap<String, (Instant, bool, String)>>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("always_allow", &self.always_allow)
            .finish_non_exhaustive()
    }
}

impl Gate {
    /// `always_allow`: comma-separated paths; one ending in `*` is a prefix.
    pub fn new(
        authentication: kube::Client,
        authorization: kube::Client,
        always_allow: &str,
    ) -> Self {
        Self {
            authentication,
            authorization,
            always_allow: always_allow
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(String::from)
                .collect(),
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

    /// `authorization`: the request's Authorization header, if any.
    pub async fn check(&self, method: &str, path: &str, authorization: Option<&str>) -> Verdict {
        if self.always_allowed(path) {
            return Verdict::Allow;
        }
        let user = match authorization.and_then(|h| h.strip_prefix("Bearer ")) {
            None => UserInfo {
                username: Some("system:anonymous".into()),
                groups: Some(vec!["system:unauthenticated".into()]),
                ..Default::default()
            },
            Some(token) => match self.authenticate(token.trim()).await {
                Ok(Some(user)) => user,
                Ok(None) => return Verdict::Unauthorized,
                Err(e) => {
                    tracing::warn!(error = %e, "TokenReview failed");
                    return Verdict::Unauthorized;
                }
            },
        };
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
                let reason = match &e {
                    kube::Error::Api(status) => status.message.clone(),
                    other => other.to_string(),
                };
                Verdict::Error(format!("Internal Server Error: \"{path}\": {reason}"))
            }
        }
    }

    async fn authenticate(&self, token: &str) -> Result<Option<UserInfo>, kube::Error> {
        use sha2::Digest as _;
        let digest: String = sha2::Sha256::digest(token.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if let Some(user) = cached(&self.tokens, &digest, |(at, user)| (*at, user.clone())) {
            return Ok(user);
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: None,
            },
            ..Default::default()
        };
        let answer = Api::<TokenReview>::all(self.authentication.clone())
            .create(&PostParams::default(), &review)
            .await?;
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
    ) -> Result<(bool, String), kube::Error> {
        let key = format!(
            "{}\0{:?}\0{:?}\0{verb}\0{path}",
            user.username.as_deref().unwrap_or_default(),
            user.groups,
            user.extra
        );
        if let Some(decision) = cached(&self.decisions, &key, |(at, allowed, reason)| {
            (*at, (*allowed, reason.clone()))
        }) {
            return Ok(decision);
        }
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: user.username.clone(),
                groups: user.groups.clone(),
                uid: user.uid.clone(),
                extra: user.extra.clone(),
                non_resource_attributes: Some(NonResourceAttributes {
                    path: Some(path.to_string()),
                    verb: Some(verb.to_string()),
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let answer = Api::<SubjectAccessReview>::all(self.authorization.clone())
            .create(&PostParams::default(), &review)
            .await?;
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

/// A cached answer younger than the TTL.
fn cached<V, T>(
    cache: &Mutex<HashMap<String, V>>,
    key: &str,
    read: impl Fn(&V) -> (Instant, T),
) -> Option<T> {
    let map = cache.lock().unwrap_or_else(|p| p.into_inner());
    let (at, value) = read(map.get(key)?);
    (at.elapsed() < CACHE_TTL).then_some(value)
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

    #[tokio::test]
    async fn always_allowed_paths_are_exact_unless_they_end_in_a_star() {
        // A client that is never used: these paths are decided locally.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = kube::Config::new("https://127.0.0.1:1".parse().unwrap());
        let client = kube::Client::try_from(config).unwrap();
        let gate = Gate::new(client.clone(), client, "/healthz, /debug/*,");
        assert!(gate.always_allowed("/healthz"));
        assert!(!gate.always_allowed("/healthz/cloud-node"));
        assert!(gate.always_allowed("/debug/pprof/heap"));
        assert!(!gate.always_allowed("/metrics"));
        assert_eq!(gate.check("GET", "/healthz", None).await, Verdict::Allow);
    }
}
