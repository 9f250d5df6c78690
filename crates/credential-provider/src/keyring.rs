//! The kubelet's matching of `matchImages` and `auth` keys against images
//! (k8s.io/kubernetes pkg/credentialprovider/keyring.go, URLsMatchStr): same
//! port, same number of host labels, each label a glob (`*`, `?`, `[...]`),
//! and the pattern's path a string prefix of the image's path.

/// Splits `host[:port][/path]` (an `https://` prefix allowed).
fn split(s: &str) -> (&str, &str, &str) {
    let s = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    let (hostport, path) = match s.find('/') {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, ""),
    };
    let (host, port) = if hostport.starts_with('[') {
        match hostport.find(']') {
            Some(i) => (
                &hostport[..=i],
                hostport[i + 1..].strip_prefix(':').unwrap_or(""),
            ),
            None => (hostport, ""),
        }
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, p),
            None => (hostport, ""),
        }
    };
    (host, port, path)
}

/// Whether `pattern` (a matchImages entry or auth key) matches `image`.
/// Like the kubelet's keyring, a trailing `/v1/` or `/v2/` on a key is dropped.
pub fn matches(pattern: &str, image: &str) -> bool {
    let pattern = pattern
        .strip_suffix("/v1/")
        .or_else(|| pattern.strip_suffix("/v2/"))
        .unwrap_or(pattern);
    let (g_host, g_port, g_path) = split(pattern);
    let (t_host, t_port, t_path) = split(image);
    if g_port != t_port {
        return false;
    }
    let g_labels: Vec<&str> = g_host.split('.').collect();
    let t_labels: Vec<&str> = t_host.split('.').collect();
    if g_labels.len() != t_labels.len() {
        return false;
    }
    if !t_path.starts_with(g_path) {
        return false;
    }
    g_labels
        .iter()
        .zip(&t_labels)
        .all(|(g, t)| glob(g.as_bytes(), t.as_bytes()))
}

/// Go's filepath.Match on one label (no separators inside a label).
fn glob(p: &[u8], t: &[u8]) -> bool {
    match p.first() {
        None => t.is_empty(),
        Some(b'*') => (0..=t.len()).any(|i| glob(&p[1..], &t[i..])),
        Some(b'?') => !t.is_empty() && glob(&p[1..], &t[1..]),
        Some(b'[') => {
            let Some(end) = p.iter().position(|&c| c == b']') else {
                return false;
            };
            let Some(&c) = t.first() else {
                return false;
            };
            let class = &p[1..end];
            let (negate, class) = match class.first() {
                Some(b'^') => (true, &class[1..]),
                _ => (false, class),
            };
            let mut hit = false;
            let mut i = 0;
            while i < class.len() {
                if i + 2 < class.len() && class[i + 1] == b'-' {
                    hit |= class[i] <= c && c <= class[i + 2];
                    i += 3;
                } else {
                    hit |= class[i] == c;
                    i += 1;
                }
            }
            hit != negate && glob(&p[end + 1..], &t[1..])
        }
        Some(&c) => t.first() == Some(&c) && glob(&p[1..], &t[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn upstream_matching_rules() {
        // Cases from the kubelet's keyring tests and the reference checklist.
        assert!(matches("*.kubernetes.io", "prefix.kubernetes.io/foo"));
        assert!(matches("prefix.*.io", "prefix.kubernetes.io"));
        assert!(matches("prefix.kubernetes.*", "prefix.kubernetes.io"));
        assert!(matches("*-good.kubernetes.io", "prefix-good.kubernetes.io"));
        assert!(
            !matches("*.kubernetes.io", "kubernetes.io"),
            "label counts differ"
        );
        assert!(!matches("*.kubernetes.io", "a.b.kubernetes.io"));
        assert!(
            !matches("registry.io", "registry.io:5000/x"),
            "ports must be equal"
        );
        assert!(matches("registry.io:5000", "registry.io:5000/x"));
        assert!(
            matches("registry.io/foo", "registry.io/foobar"),
            "path is a string prefix"
        );
        assert!(!matches("registry.io/foo", "registry.io/bar"));
        assert!(matches("app?.k8s.io", "app1.k8s.io"));
        assert!(matches("app[0-9].k8s.io", "app7.k8s.io"));
        assert!(!matches("app[^0-9].k8s.io", "app7.k8s.io"));
        assert!(matches(
            "*.dkr.ecr.*.amazonaws.com",
            "123456789012.dkr.ecr.us-east-1.amazonaws.com/app:1"
        ));
    }
}
