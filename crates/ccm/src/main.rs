//! The overcast-ccm binary with the providers this build includes.

use std::process::ExitCode;
#[cfg(any(feature = "fake", feature = "local", feature = "aws"))]
use std::sync::Arc;

use overcast_cloud_provider::ProviderRegistry;
#[cfg(any(feature = "fake", feature = "local", feature = "aws"))]
use overcast_cloud_provider::{CloudError, CloudProvider};

fn main() -> ExitCode {
    #[allow(unused_mut)]
    let mut registry = ProviderRegistry::new();
    #[cfg(feature = "fake")]
    registry
        .register(overcast_provider_fake::PROVIDER_NAME, |config| {
            let cloud = overcast_provider_fake::FakeCloud::from_config(config)
                .map_err(CloudError::from_err)?;
            Ok(Arc::new(cloud) as Arc<dyn CloudProvider>)
        })
        .expect("each provider is registered once");
    #[cfg(feature = "local")]
    registry
        .register(overcast_provider_local::PROVIDER_NAME, |config| {
            let cloud = overcast_provider_local::LocalCloud::from_config(config)
                .map_err(CloudError::from_err)?;
            Ok(Arc::new(cloud) as Arc<dyn CloudProvider>)
        })
        .expect("each provider is registered once");
    #[cfg(feature = "aws")]
    registry
        .register(overcast_provider_aws::PROVIDER_NAME, |config| {
            let cloud = overcast_provider_aws::AwsCloud::from_config(config)
                .map_err(CloudError::from_err)?;
            Ok(Arc::new(cloud) as Arc<dyn CloudProvider>)
        })
        .expect("each provider is registered once");
    // `migrate ...`: one-shot migration tools, beside the upstream flag
    // surface (which takes no positional arguments).
    if std::env::args_os().nth(1).is_some_and(|a| a == "migrate") {
        return migrate::run(&registry, std::env::args_os().skip(2));
    }
    overcast_ccm::main(registry)
}

mod migrate {
    use std::ffi::OsString;
    use std::io::Read as _;
    use std::path::PathBuf;
    use std::process::ExitCode;

    use clap::{Parser, Subcommand, ValueEnum};
    use overcast_cloud_provider::ProviderRegistry;

    #[derive(Parser)]
    #[command(
        name = "overcast-ccm migrate",
        about = "Tools for moving a cluster onto overcast-ccm"
    )]
    struct Migrate {
        #[command(subcommand)]
        command: Command,
    }

    #[derive(Subcommand)]
    enum Command {
        /// Print the local provider's loadBalancer section for the address
        /// pools of MetalLB (IPAddressPool, L2Advertisement) or
        /// kube-vip-cloud-provider (its ConfigMap); what needs a decision is
        /// printed to stderr.
        ImportConfig {
            /// Whose configuration FILE holds.
            #[arg(long, value_enum)]
            from: Source,
            /// YAML (several documents, or a `kubectl get -o yaml` List); `-`
            /// or none reads stdin.
            file: Option<PathBuf>,
        },
        /// Before overcast-ccm takes over: what it would change (Nodes it
        /// would delete or label otherwise, Service addresses that would
        /// change, annotations without effect, Leases, missing RBAC). Give
        /// the flags overcast-ccm will run with, and `-o json` for JSON.
        /// Read-only; exits 1 when a finding is a hazard.
        Check {
            /// overcast-ccm's flags (`--cloud-provider`, `--cloud-config`,
            /// `--kubeconfig`, ...), and `-o table|json`.
            #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
            flags: Vec<OsString>,
        },
    }

    #[derive(Clone, Copy, ValueEnum)]
    enum Source {
        Metallb,
        KubeVip,
    }

    pub fn run(registry: &ProviderRegistry, args: impl Iterator<Item = OsString>) -> ExitCode {
        let parsed = match Migrate::try_parse_from(
            std::iter::once(OsString::from("overcast-ccm migrate")).chain(args),
        ) {
            Ok(m) => m,
            Err(e) => {
                let _ = e.print();
                return if e.use_stderr() {
                    ExitCode::from(2)
                } else {
                    ExitCode::SUCCESS
                };
            }
        };
        match parsed.command {
            Command::ImportConfig { from, file } => import_config(from, file),
            Command::Check { flags } => overcast_ccm::preflight::main(registry, flags),
        }
    }

    fn import_config(from: Source, file: Option<PathBuf>) -> ExitCode {
        let name = file
            .as_ref()
            .filter(|f| f.as_os_str() != "-")
            .map_or_else(|| "stdin".to_string(), |f| f.display().to_string());
        let mut text = String::new();
        let read = match file.as_ref().filter(|f| f.as_os_str() != "-") {
            Some(path) => std::fs::read_to_string(path).map(|t| text = t),
            None => std::io::stdin().read_to_string(&mut text).map(|_| ()),
        };
        if let Err(e) = read {
            eprintln!("overcast-ccm migrate import-config: {name}: {e}");
            return ExitCode::FAILURE;
        }
        #[cfg(feature = "local")]
        {
            use overcast_provider_local::import;
            let imported = match from {
                Source::Metallb => import::from_metallb(&text),
                Source::KubeVip => import::from_kube_vip(&text),
            };
            match imported {
                Ok(imported) => {
                    print!("{}", imported.yaml);
                    for note in &imported.notes {
                        eprintln!("note: {note}");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("overcast-ccm migrate import-config: {name}: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        #[cfg(not(feature = "local"))]
        {
            let _ = (from, text);
            eprintln!("overcast-ccm migrate import-config: this build has no local provider");
            ExitCode::FAILURE
        }
    }
}
