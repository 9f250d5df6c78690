//! The ecr provider against moto's ECR on loopback.
#![cfg(feature = "ecr")]

use std::io::Write as _;
use std::process::{Command, Stdio};

use overcast_testenv::Moto;

use serde_json::Value;

const PLUGIN: &str = env!("CARGO_BIN_EXE_overcast-credential-provider");

fn run_ecr(endpoint: &str, request: &str) -> std::process::Output {
    let mut child = Command::new(PLUGIN)
        .arg("ecr")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_REGION", "eu-central-1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn ecr_credentials_from_get_authorization_token() {
    let moto = Moto::start();
    let image = "123456789012.dkr.ecr.us-west-2.amazonaws.com/team/app:1.0";
    for version in ["v1", "v1alpha1"] {
        let out = run_ecr(
            moto.url(),
            &format!(
                r#"{{"apiVersion":"credentialprovider.kubelet.k8s.io/{version}","kind":"CredentialProviderRequest","image":"{image}"}}"#
            ),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            v["apiVersion"],
            format!("credentialprovider.kubelet.k8s.io/{version}")
        );
        assert_eq!(v["kind"], "CredentialProviderResponse");
        assert_eq!(v["cacheKeyType"], "Registry");
        let auth = &v["auth"]["123456789012.dkr.ecr.us-west-2.amazonaws.com"];
        assert_eq!(auth["username"], "AWS");
        assert!(!auth["password"].as_str().unwrap().is_empty());
        // moto's tokens may already be expired: never a negative duration.
        if let Some(d) = v["cacheDuration"].as_str() {
            assert!(!d.starts_with('-'), "{d}");
        }
    }
}

#[test]
fn an_unreachable_ecr_is_a_one_line_error() {
    // Nothing listens on the discard port.
    let out = run_ecr(
        "http://127.0.0.1:9",
        r#"{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"CredentialProviderRequest","image":"123456789012.dkr.ecr.us-west-2.amazonaws.com/app"}"#,
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("GetAuthorizationToken for 123456789012.dkr.ecr.us-west-2.amazonaws.com"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn the_kubelet_gets_ecr_credentials_through_its_plugin_code() {
    let moto = Moto::start();
    let harness = overcast_testenv::bin_dir().join("credprovider-harness");
    assert!(
        harness.is_file(),
        "{} missing: run `make testenv`",
        harness.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(PLUGIN, bin.join("overcast-credential-provider")).unwrap();
    let config = format!(
        "apiVersion: kubelet.config.k8s.io/v1\nkind: CredentialProviderConfig\nproviders:\n  - name: overcast-credential-provider\n    matchImages: [\"*.dkr.ecr.*.amazonaws.com\"]\n    defaultCacheDuration: 12h\n    apiVersion: credentialprovider.kubelet.k8s.io/v1\n    args: [ecr]\n    env:\n      - {{name: AWS_ENDPOINT_URL, value: \"{}\"}}\n      - {{name: AWS_ACCESS_KEY_ID, value: testing}}\n      - {{name: AWS_SECRET_ACCESS_KEY, value: testing}}\n      - {{name: AWS_EC2_METADATA_DISABLED, value: \"true\"}}\n",
        moto.url()
    );
    let config_path = dir.path().join("kubelet.yaml");
    std::fs::write(&config_path, config).unwrap();
    let out = Command::new(harness)
        .arg(format!("--config={}", config_path.display()))
        .arg(format!("--bin-dir={}", bin.display()))
        .args([
            "123456789012.dkr.ecr.us-west-2.amazonaws.com/app:1",
            "quay.io/app:1",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["auths"][0]["username"], "AWS", "{lines:?}");
    assert!(
        lines[1]["auths"].as_array().unwrap().is_empty(),
        "not an ECR image"
    );
}

#[test]
fn a_service_account_token_is_refused_not_answered_with_node_credentials() {
    let out = run_ecr(
        "http://127.0.0.1:9",
        r#"{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"CredentialProviderRequest","image":"123456789012.dkr.ecr.us-west-2.amazonaws.com/app","serviceAccountToken":"eyJ...","serviceAccountAnnotations":{"eks.amazonaws.com/ecr-role-arn":"arn:aws:iam::123456789012:role/pull"}}"#,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("service-account token mode"));
    assert!(out.stdout.is_empty());
}
