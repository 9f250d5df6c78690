//! Starts a real cluster (control plane, scheduler, controller-manager and
//! NODES nodes, default 2) and keeps it until Ctrl-C: `make cluster`.

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let count = std::env::var("NODES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2);
    let started = std::time::Instant::now();
    let cluster = overcast_testenv::Cluster::start(count).await?;
    println!(
        "{count} nodes Ready in {:.1} s; apiserver at {}",
        started.elapsed().as_secs_f64(),
        cluster.plane().server()
    );
    for node in cluster.node_names() {
        println!("  {node}: {}", cluster.node_ip(node));
    }
    println!(
        "logs: {} and {}",
        cluster.plane().dir().display(),
        cluster.dir().display()
    );
    println!();
    println!(
        "  export KUBECONFIG={}",
        cluster.plane().kubeconfig_path().display()
    );
    println!(
        "  {} get nodes -o wide",
        overcast_testenv::bin_dir().join("kubectl").display()
    );
    println!();
    println!("Press Ctrl-C to stop; everything is removed on exit.");
    tokio::signal::ctrl_c().await?;
    cluster.stop();
    Ok(())
}
