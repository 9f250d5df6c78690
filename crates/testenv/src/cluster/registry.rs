//! A password-protected image registry for the cluster (Debian's
//! docker-registry, the CNCF distribution registry, with an htpasswd file),
//! on the host's bridge address so every node can reach it, over plain HTTP:
//! each node's containerd is told so by a hosts.toml for it.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;

use crate::Error;
use crate::process::Supervised;

/// What [`crate::ClusterOptions::registry`] asks for.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// The port on the host's bridge address ([`crate::Cluster::host_ip`]).
    pub port: u16,
    pub username: String,
    pub password: String,
}

#[derive(Debug)]
pub(crate) struct Registry {
    pub host: String,
    pub options: RegistryOptions,
    _process: Supervised,
}

impl Registry {
    pub(crate) fn start(
        address: Ipv4Addr,
        options: &RegistryOptions,
        dir: &Path,
    ) -> Result<Registry, Error> {
        std::fs::create_dir_all(dir.join("storage"))
            .map_err(Error::io(format!("creating {}", dir.display())))?;
        let htpasswd = crate::cluster::net::run_checked(
            Command::new("htpasswd").args(["-Bbn", &options.username, &options.password]),
            "htpasswd -Bbn (apache2-utils)",
        )?;
        let htpasswd_path = dir.join("htpasswd");
        std::fs::write(&htpasswd_path, &htpasswd.stdout)
            .map_err(Error::io(format!("writing {}", htpasswd_path.display())))?;
        let host = format!("{address}:{}", options.port);
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {storage}\n\
             http:\n  addr: {host}\nauth:\n  htpasswd:\n    realm: overcast-testenv\n    path: {htpasswd}\n",
            storage = dir.join("storage").display(),
            htpasswd = htpasswd_path.display(),
        );
        let config_path = dir.join("config.yml");
        std::fs::write(&config_path, config)
            .map_err(Error::io(format!("writing {}", config_path.display())))?;
        let mut cmd = Command::new("docker-registry");
        cmd.arg("serve").arg(&config_path);
        let process = Supervised::spawn("docker-registry", cmd, &dir.join("registry.log"))?;
        wait_listening(&host, dir)?;
        Ok(Registry {
            host,
            options: options.clone(),
            _process: process,
        })
    }

    /// containerd's per-host config that lets a node pull from it over HTTP.
    pub(crate) fn hosts_toml(&self) -> String {
        format!(
            "server = \"http://{host}\"\n\n[host.\"http://{host}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            host = self.host
        )
    }
}

fn wait_listening(host: &str, dir: &Path) -> Result<(), Error> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if std::net::TcpStream::connect(host).is_ok() {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(Error::Io {
                what: format!("waiting for the registry on {host}"),
                source: std::io::Error::other(crate::process::tail(&dir.join("registry.log"))),
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
