//! overcast-credential-provider driven by the kubelet's own plugin code
//! (testenv/kube/cmd/credprovider-harness, built by `make testenv`).

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

const PLUGIN: &str = env!("CARGO_BIN_EXE_overcast-credential-provider");

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    /// A bin dir whose plugin counts its runs, and a kubelet config using it.
    fn new(api_version: &str, static_config: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let script = bin.join("counting-provider");
        std::fs::write(
            &script,
            format!("#!/bin/sh\necho run >> \"$COUNT_FILE\"\nexec {PLUGIN} \"$@\"\n"),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let static_path = dir.path().join("static.yaml");
        std::fs::write(&static_path, static_config).unwrap();
        let kubelet_config = format!(
            "apiVersion: kubelet.config.k8s.io/v1\nkind: CredentialProviderConfig\nproviders:\n  - name: counting-provider\n    matchImages: [\"*.registry.example.com\", \"registry.example.com:5000\"]\n    defaultCacheDuration: 10m\n    apiVersion: {api_version}\n    args: [static, --config, {}]\n    env:\n      - name: COUNT_FILE\n        value: {}\n",
            static_path.display(),
            dir.path().join("count").display()
        );
        std::fs::write(dir.path().join("kubelet.yaml"), kubelet_config).unwrap();
        Setup { dir }
    }

    fn harness() -> PathBuf {
        let path = overcast_testenv::bin_dir().join("credprovider-harness");
        assert!(
            path.is_file(),
            "{} missing: run `make testenv`",
            path.display()
        );
        path
    }

    /// Looks the steps up in one kubelet process; returns the credentials
    /// found per image.
    fn lookup(&self, steps: &[&str]) -> Vec<(String, Vec<(String, String)>)> {
        let out = Command::new(Self::harness())
            .arg(format!(
                "--config={}",
                self.dir.path().join("kubelet.yaml").display()
            ))
            .arg(format!(
                "--bin-dir={}",
                self.dir.path().join("bin").display()
            ))
            .args(steps)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "harness failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                let auths = v["auths"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| {
                        (
                            a["username"].as_str().unwrap().to_string(),
                            a["password"].as_str().unwrap().to_string(),
                        )
                    })
                    .collect();
                (v["image"].as_str().unwrap().to_string(), auths)
            })
            .collect()
    }

    fn runs(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("count"))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }
}

fn static_config(cache: Option<&str>) -> String {
    let cache = cache
        .map(|c| format!("cacheDuration: {c}\n"))
        .unwrap_or_default();
    format!(
        "{cache}registries:\n  - matchImages: [\"*.registry.example.com\", \"registry.example.com:5000\"]\n    username: ci\n    password: s3cret\n"
    )
}

fn creds() -> Vec<(String, String)> {
    vec![("ci".to_string(), "s3cret".to_string())]
}

#[test]
fn the_kubelet_gets_credentials_in_every_protocol_version() {
    for version in ["v1", "v1beta1", "v1alpha1"] {
        let s = Setup::new(
            &format!("credentialprovider.kubelet.k8s.io/{version}"),
            &static_config(None),
        );
        let got = s.lookup(&[
            "eu.registry.example.com/team/app:1.0",
            "registry.example.com:5000/app",
        ]);
        assert_eq!(got[0].1, creds(), "{version}");
        assert_eq!(got[1].1, creds(), "{version}");
    }
}

#[test]
fn images_outside_match_images_never_run_the_plugin() {
    let s = Setup::new("credentialprovider.kubelet.k8s.io/v1", &static_config(None));
    let got = s.lookup(&["docker.io/library/nginx:1", "registry.example.com/app"]);
    assert!(got.iter().all(|(_, a)| a.is_empty()), "{got:?}");
    assert_eq!(s.runs(), 0);
}

#[test]
fn the_kubelet_caches_per_registry_for_the_duration_the_response_gives() {
    let s = Setup::new(
        "credentialprovider.kubelet.k8s.io/v1",
        &static_config(Some("5m")),
    );
    let got = s.lookup(&[
        "eu.registry.example.com/a:1",
        "eu.registry.example.com/a:1",
        "eu.registry.example.com/b:2",
    ]);
    assert!(got.iter().all(|(_, a)| *a == creds()));
    assert_eq!(s.runs(), 1, "one run serves the whole registry");
}

#[test]
fn a_zero_cache_duration_means_the_kubelet_asks_every_time() {
    let s = Setup::new(
        "credentialprovider.kubelet.k8s.io/v1",
        &static_config(Some("0s")),
    );
    s.lookup(&["eu.registry.example.com/a:1", "eu.registry.example.com/a:1"]);
    assert_eq!(s.runs(), 2);
}

#[test]
fn cached_credentials_expire() {
    let s = Setup::new(
        "credentialprovider.kubelet.k8s.io/v1",
        &static_config(Some("1s")),
    );
    s.lookup(&[
        "eu.registry.example.com/a:1",
        "sleep:1500ms",
        "eu.registry.example.com/a:1",
    ]);
    assert_eq!(s.runs(), 2);
}

#[test]
fn a_failing_plugin_gives_no_credentials_and_is_not_cached() {
    let s = Setup::new(
        "credentialprovider.kubelet.k8s.io/v1",
        "registries:\n  - matchImages: [x]\n    username: u\n",
    );
    let got = s.lookup(&["eu.registry.example.com/a:1", "eu.registry.example.com/a:1"]);
    assert!(got.iter().all(|(_, a)| a.is_empty()));
    assert_eq!(s.runs(), 2);
}

#[test]
fn bad_input_is_one_line_on_stderr_and_a_non_zero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("static.yaml");
    std::fs::write(&cfg, static_config(None)).unwrap();
    for (stdin, want) in [
        ("not json", "malformed CredentialProviderRequest JSON"),
        (
            r#"{"apiVersion":"credentialprovider.kubelet.k8s.io/v9","kind":"CredentialProviderRequest","image":"a"}"#,
            "unsupported apiVersion",
        ),
        (
            r#"{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"CredentialProviderRequest","image":"Bad Image"}"#,
            "not a valid image reference",
        ),
    ] {
        let out = run(&["static", "--config", cfg.to_str().unwrap()], stdin);
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(out.stdout.is_empty());
    }
    let out = run(&["nope"], "{}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown provider \"nope\""));
}

fn run(args: &[&str], stdin: &str) -> std::process::Output {
    use std::io::Write as _;
    let mut child = Command::new(PLUGIN)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The plugin may exit before reading (a bad argument or config).
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    child.wait_with_output().unwrap()
}

/// A bad static config: one line naming the file, where, and what, before
/// any request is read; no snippet, no parser-library hints.
#[test]
fn a_bad_static_config_is_one_line_naming_the_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("static.yaml");
    for (text, want) in [
        (
            "registries:\n  - matchImages: [\"a\"]\n    usernam: x\n",
            "line 3 column 5: unknown field `usernam`",
        ),
        (
            "registries: []\nregistries: []\n",
            "duplicate mapping key `registries`",
        ),
        ("registries:\n  - matchImages: 5\n", "line 2 column 18"),
        (
            "cacheDuration: 99999999999999999999h\nregistries: []\n",
            "cacheDuration: invalid duration \"99999999999999999999h\": out of range",
        ),
    ] {
        std::fs::write(&cfg, text).unwrap();
        let out = run(&["static", "--config", cfg.to_str().unwrap()], "");
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(
            err.contains(cfg.to_str().unwrap()) && err.contains(want),
            "{text:?}: {err}"
        );
        assert!(
            !err.contains("Options") && !err.contains("<input>"),
            "{err}"
        );
    }
}

/// --help answers without waiting for a request on stdin (in a terminal
/// none comes).
#[test]
fn help_does_not_wait_for_stdin() {
    for flag in ["--help", "-h", "--version"] {
        let mut child = Command::new(PLUGIN)
            .arg(flag)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let _stdin_kept_open = child.stdin.take();
        let mut waited = 0;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(waited < 100, "{flag} waited for stdin");
            std::thread::sleep(std::time::Duration::from_millis(50));
            waited += 1;
        };
        assert!(status.success());
        let out = child.wait_with_output().unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).contains("overcast-credential-provider"));
    }
}
