//! Starts the pinned control plane and keeps it running until Ctrl-C, so you can
//! point kubectl (or, once it exists, overcast-ccm) at it. `make demo` runs this.

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let plane = overcast_testenv::ControlPlane::start().await?;
    let version = plane.client().await?.apiserver_version().await?;
    let kubectl = overcast_testenv::bin_dir().join("kubectl");
    println!(
        "kube-apiserver {} is ready at {}",
        version.git_version,
        plane.server()
    );
    println!(
        "etcd keeps its data in {}",
        plane.dir().join("etcd").display()
    );
    println!();
    println!("  export KUBECONFIG={}", plane.kubeconfig_path().display());
    println!("  {} get namespaces", kubectl.display());
    println!();
    println!("Press Ctrl-C to stop; everything is removed on exit.");
    tokio::signal::ctrl_c().await?;
    plane.stop();
    Ok(())
}
