//! Container image references, checked against the distribution/reference
//! grammar: `[host[:port]/]path[:tag][@algorithm:hex]`.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    raw: String,
    /// `host[:port]` when the reference names a registry; empty for Docker Hub
    /// short names such as `nginx` or `library/nginx`.
    registry: String,
    path: String,
}

impl ImageRef {
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("{s:?} is not a valid image reference: {why}");
        if s.is_empty() || s.len() > 4096 {
            return Err(bad("empty or too long"));
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("contains white space"));
        }
        let (name, digest) = match s.split_once('@') {
            Some((n, d)) => (n, Some(d)),
            None => (s, None),
        };
        if let Some(d) = digest {
            let (alg, hex) = d
                .split_once(':')
                .ok_or_else(|| bad("digest must be algorithm:hex"))?;
            if alg.is_empty()
                || !alg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+.-_".contains(c))
                || hex.len() < 32
                || !hex.chars().all(|c| c.is_ascii_hexdigit())
            {
                return Err(bad("malformed digest"));
            }
        }
        // A tag is the part after the last ':' that follows the last '/'.
        let last_slash = name.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name[last_slash..].rfind(':') {
            Some(i) => (&name[..last_slash + i], Some(&name[last_slash + i + 1..])),
            None => (name, None),
        };
        if let Some(t) = tag {
            let ok = !t.is_empty()
                && t.len() <= 128
                && t.chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
            if !ok {
                return Err(bad("invalid tag"));
            }
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
                (first, rest)
            }
            _ => ("", name),
        };
        if !registry.is_empty() {
            valid_registry(registry).map_err(|why| bad(&why))?;
        }
        if path.is_empty() {
            return Err(bad("no repository path"));
        }
        for component in path.split('/') {
            valid_path_component(component).map_err(|why| bad(&why))?;
        }
        Ok(Self {
            raw: s.to_string(),
            registry: registry.to_string(),
            path: path.to_string(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// `host[:port]`, or empty for Docker Hub short names.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The registry's host without its port.
    pub fn host(&self) -> &str {
        let r = self.registry.as_str();
        if r.starts_with('[') {
            return r.find(']').map_or(r, |i| &r[..=i]);
        }
        r.split_once(':').map_or(r, |(h, _)| h)
    }

    pub fn path(&self) -> &str {
        &self.path
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

fn valid_registry(registry: &str) -> Result<(), String> {
    let (host, port) = if let Some(rest) = registry.strip_prefix('[') {
        let (v6, after) = rest.split_once(']').ok_or("unclosed IPv6 address")?;
        v6.parse::<std::net::Ipv6Addr>()
            .map_err(|_| "invalid IPv6 registry address")?;
        (None, after.strip_prefix(':'))
    } else {
        match registry.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(registry), None),
        }
    };
    if let Some(p) = port
        && (p.is_empty()
            || !p.chars().all(|c| c.is_ascii_digit())
            || p.parse::<u32>().map_or(true, |n| n > 65535))
    {
        return Err(format!("invalid registry port {p:?}"));
    }
    if let Some(h) = host {
        for label in h.split('.') {
            let ok = !label.is_empty()
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-');
            if !ok {
                return Err(format!("invalid registry host {h:?}"));
            }
        }
    }
    Ok(())
}

/// `[a-z0-9]+` joined by `.`, `_`, `__` or runs of `-`.
fn valid_path_component(c: &str) -> Result<(), String> {
    let bad = || {
        Err(format!(
            "invalid repository path component {c:?} (lower-case letters, digits and separators . _ - only)"
        ))
    };
    if c.is_empty() {
        return bad();
    }
    let bytes = c.as_bytes();
    if !bytes[0].is_ascii_lowercase() && !bytes[0].is_ascii_digit() {
        return bad();
    }
    let last = bytes[bytes.len() - 1];
    if !last.is_ascii_lowercase() && !last.is_ascii_digit() {
        return bad();
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b.is_ascii_lowercase() || b.is_ascii_digit() {
            i += 1;
            continue;
        }
        // A separator: ".", "_", "__", or one or more "-".
        let start = i;
        while i < bytes.len() && !(bytes[i].is_ascii_lowercase() || bytes[i].is_ascii_digit()) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.chars().all(|ch| ch == '-')) {
            return bad();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_references() {
        let r =
            ImageRef::parse("123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/app:v1.2").unwrap();
        assert_eq!(r.registry(), "123456789012.dkr.ecr.eu-west-1.amazonaws.com");
        assert_eq!(r.path(), "team/app");
        let r = ImageRef::parse("registry.example.com:5000/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef").unwrap();
        assert_eq!(r.registry(), "registry.example.com:5000");
        assert_eq!(r.host(), "registry.example.com");
        let r = ImageRef::parse("nginx:1.27").unwrap();
        assert_eq!((r.registry(), r.path()), ("", "nginx"));
        assert_eq!(
            ImageRef::parse("localhost/a__b.c-d").unwrap().registry(),
            "localhost"
        );
        assert!(ImageRef::parse("[::1]:5000/app").is_ok());
    }

    #[test]
    fn invalid_references_say_why() {
        for (s, why) in [
            ("", "empty"),
            ("a b", "white space"),
            ("Registry.io/App", "path component \"App\""),
            ("reg.io/app:", "invalid tag"),
            ("reg.io/app@sha256:xyz", "digest"),
            ("reg.io:99999/app", "port"),
            ("-bad.io/app", "host"),
            ("reg.io/", "no repository path"),
            ("reg.io/a..b", "path component"),
        ] {
            let err = ImageRef::parse(s).unwrap_err();
            assert!(err.contains(why), "{s:?}: {err}");
        }
    }
}
