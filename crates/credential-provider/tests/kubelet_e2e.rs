//! overcast-credential-provider run by real kubelets: a node whose kubelet
//! has the plugin configured pulls a Pod's image from a password-protected
//! registry; a node without it is refused with 401 Unauthorized.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::PostParams;
use overcast_testenv::cluster::{ECHO_SERVER, RegistryOptions};
use overcast_testenv::{Cluster, ClusterOptions, eventually};

const SOON: Duration = Duration::from_secs(90);
const PLUGIN: &str = env!("CARGO_BIN_EXE_overcast-credential-provider");

fn pod(name: &str, node: &str, image: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {
            "nodeName": node,
            "tolerations": [{"operator": "Exists"}],
            "containers": [{"name": "app", "image": image, "imagePullPolicy": "Always"}],
        }
    }))
    .unwrap()
}

/// The reason and message of the Pod's waiting container, if it waits.
fn waiting(pod: &Pod) -> Option<(String, String)> {
    let state = pod
        .status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .first()?
        .state
        .as_ref()?;
    let waiting = state.waiting.as_ref()?;
    Some((
        waiting.reason.clone()?,
        waiting.message.clone().unwrap_or_default(),
    ))
}

#[tokio::test]
async fn the_kubelet_pulls_a_private_image_with_the_plugins_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let port = overcast_testenv::free_port().unwrap();
    // The host's bridge address is 10.250.<slot>.1; matchImages globs the
    // slot (a glob may stand in the host, never in the port).
    let pattern = format!("10.250.*.1:{port}");

    // The plugin as an operator installs it: in the bin dir under its name.
    let bin_dir = dir.path().join("bin");
    std::fs::create_dir(&bin_dir).unwrap();
    std::os::unix::fs::symlink(PLUGIN, bin_dir.join("overcast-credential-provider")).unwrap();
    let credentials = dir.path().join("registry-credentials.yaml");
    std::fs::write(
        &credentials,
        format!(
            "registries:\n  - matchImages: [\"{pattern}\"]\n    username: puller\n    passwordEnv: REGISTRY_PASSWORD\n"
        ),
    )
    .unwrap();
    let config = dir.path().join("credential-provider.yaml");
    std::fs::write(
        &config,
        format!(
            "apiVersion: kubelet.config.k8s.io/v1\nkind: CredentialProviderConfig\nproviders:\n\
             - name: overcast-credential-provider\n  matchImages: [\"{pattern}\"]\n  defaultCacheDuration: 1m\n\
             \x20 apiVersion: credentialprovider.kubelet.k8s.io/v1\n  args: [static, --config, {}]\n\
             \x20 env:\n  - name: REGISTRY_PASSWORD\n    value: s3cret\n",
            credentials.display()
        ),
    )
    .unwrap();

    let mut options = ClusterOptions::nodes(2);
    options.registry = Some(RegistryOptions {
        port,
        username: "puller".into(),
        password: "s3cret".into(),
    });
    options.nodes[0].kubelet_args = vec![
        format!("--image-credential-provider-config={}", config.display()),
        format!("--image-credential-provider-bin-dir={}", bin_dir.display()),
    ];
    let cluster = Cluster::start_with(&options)
        .await
        .expect("cluster (run `make testenv`)");
    let image = cluster
        .push_image(ECHO_SERVER, "overcast/private:1")
        .unwrap();
    let [with_plugin, without] = [&cluster.node_names()[0], &cluster.node_names()[1]];

    let pods: Api<Pod> = Api::namespaced(cluster.plane().client().await.unwrap(), "default");
    pods.create(
        &PostParams::default(),
        &pod("with-plugin", with_plugin, &image),
    )
    .await
    .unwrap();
    pods.create(&PostParams::default(), &pod("without", without, &image))
        .await
        .unwrap();

    eventually(
        "the Pod on the node with the plugin Running",
        SOON,
        || async {
            let pod = pods.get("with-plugin").await.ok()?;
            (pod.status?.phase.as_deref() == Some("Running")).then_some(())
        },
    )
    .await;
    let (reason, message) = eventually(
        "the Pod on the node without the plugin refused",
        SOON,
        || async {
            let pod = pods.get("without").await.ok()?;
            waiting(&pod)
                .filter(|(reason, _)| reason == "ErrImagePull" || reason == "ImagePullBackOff")
        },
    )
    .await;
    assert!(
        message.contains("401 Unauthorized") || message.contains("authorization failed"),
        "{reason}: {message}"
    );
}
