//! `static`: credentials per registry pattern from a file, with secrets
//! optionally read from the environment:
//!
//! ```yaml
//! cacheDuration: 5m                 # optional; absent: the kubelet's defaultCacheDuration
//! registries:
//!   - matchImages: ["registry.example.com", "*.registry.example.com:5000"]
//!     username: ci
//!     passwordEnv: REGISTRY_PASSWORD   # or password: ..., usernameEnv: ...
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::Error;
use crate::keyring;
use crate::protocol::{AuthConfig, CacheKeyType, Request, Response, parse_go_duration};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct File {
    #[serde(default)]
    cache_duration: Option<String>,
    registries: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Entry {
    match_images: Vec<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    username_env: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    password_env: Option<String>,
}

#[derive(Debug, Clone)]
pub struct StaticProvider {
    cache_duration: Option<std::time::Duration>,
    registries: Vec<(Vec<String>, AuthConfig)>,
}

impl StaticProvider {
    pub fn load(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        Self::parse(&text, env).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, String> {
        let file: File = overcast_cloud_provider::yaml::parse_yaml(text)?;
        let cache_duration = file
            .cache_duration
            .as_deref()
            .map(parse_go_duration)
            .transpose()
            .map_err(|e| format!("cacheDuration: {e}"))?;
        let mut registries = Vec::new();
        for (i, entry) in file.registries.into_iter().enumerate() {
            let field = |name: &str| format!("registries[{i}].{name}");
            if entry.match_images.is_empty() {
                return Err(format!(
                    "{}: at least one pattern is required",
                    field("matchImages")
                ));
            }
            let secret = |plain: Option<String>,
                          from_env: Option<String>,
                          name: &str|
             -> Result<String, String> {
                match (plain, from_env) {
                    (Some(_), Some(_)) => Err(format!(
                        "{} and {}Env: give one, not both",
                        field(name),
                        field(name)
                    )),
                    (Some(v), None) => Ok(v),
                    (None, Some(var)) => env(&var).ok_or_else(|| {
                        format!("{}Env: environment variable {var} is not set", field(name))
                    }),
                    (None, None) => Err(format!("{}: required (or {name}Env)", field(name))),
                }
            };
            let auth = AuthConfig {
                username: secret(entry.username, entry.username_env, "username")?,
                password: secret(entry.password, entry.password_env, "password")?,
            };
            registries.push((entry.match_images, auth));
        }
        Ok(Self {
            cache_duration,
            registries,
        })
    }

    /// Every configured pattern with its credentials, whatever the image:
    /// the kubelet matches the keys against each image itself. The answer does
    /// not depend on the image, so it is cached once (Global); an answer
    /// filtered for one image and cached per registry would starve other
    /// paths of the same registry.
    pub fn provide(&self, _request: &Request) -> Response {
        let auth: BTreeMap<String, AuthConfig> = self
            .registries
            .iter()
            .flat_map(|(patterns, auth)| patterns.iter().map(move |p| (p.clone(), auth.clone())))
            .collect();
        Response {
            cache_key_type: CacheKeyType::Global,
            cache_duration: self.cache_duration,
            auth,
        }
    }

    /// The credentials the kubelet would use for `image` (for tests and
    /// diagnostics): those whose pattern matches.
    pub fn matching(&self, image: &str) -> Vec<(&str, &AuthConfig)> {
        self.registries
            .iter()
            .flat_map(|(patterns, auth)| {
                patterns
                    .iter()
                    .filter(|p| keyring::matches(p, image))
                    .map(move |p| (p.as_str(), auth))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "REG_PASS").then(|| "from-env".to_string())
    }

    fn request(image: &str) -> Request {
        Request::parse(
            format!(r#"{{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"CredentialProviderRequest","image":"{image}"}}"#)
                .as_bytes(),
        )
        .unwrap()
    }

    #[test]
    fn matching_patterns_give_their_credentials() {
        let p = StaticProvider::parse(
            "cacheDuration: 10m\nregistries:\n  - matchImages: [\"*.example.com\"]\n    username: ci\n    passwordEnv: REG_PASS\n  - matchImages: [\"other.io\"]\n    username: o\n    password: p\n",
            &env,
        )
        .unwrap();
        let r = p.provide(&request("registry.example.com/team/app:1"));
        assert_eq!(r.cache_duration, Some(std::time::Duration::from_secs(600)));
        assert_eq!(r.cache_key_type, CacheKeyType::Global);
        assert_eq!(r.auth.len(), 2, "every pattern: the kubelet matches");
        assert_eq!(
            r.auth["*.example.com"],
            AuthConfig {
                username: "ci".into(),
                password: "from-env".into()
            }
        );
        assert_eq!(p.matching("registry.example.com/team/app:1").len(), 1);
        assert!(p.matching("nomatch.io/app").is_empty());
    }

    #[test]
    fn config_errors_name_the_field() {
        let err = |y: &str| StaticProvider::parse(y, &env).unwrap_err();
        assert!(
            err("registries:\n  - matchImages: [a.io]\n    username: u\n")
                .contains("registries[0].password: required")
        );
        assert!(
            err("registries:\n  - matchImages: [a.io]\n    username: u\n    passwordEnv: NOPE\n")
                .contains("NOPE is not set")
        );
        assert!(
            err("registries:\n  - matchImages: []\n    username: u\n    password: p\n")
                .contains("registries[0].matchImages")
        );
        assert!(err("cacheDuration: soon\nregistries: []\n").contains("cacheDuration"));
        assert!(err("registries:\n  - matchImage: [a]\n").contains("matchImage"));
    }
}
