//! `<binary> migrate ...`: one-shot tools for moving a cluster onto this
//! CCM, beside the upstream flag surface (which takes no positional
//! arguments): `import-config` and `check` (the preflight).

use std::ffi::OsString;
use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use overcast_cloud_provider::ProviderRegistry;

use crate::app::Binary;

#[derive(Parser)]
#[command(about = "Tools for moving a cluster onto this cloud-controller-manager")]
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
    /// Before this CCM takes over: what it would change (Nodes it
    /// would delete or label otherwise, Service addresses that would
    /// change, annotations without effect, Leases, missing RBAC). Give
    /// the flags it will run with, and `-o json` for JSON.
    /// Read-only; exits 1 when a finding is a hazard.
    Check {
        /// Its flags (`--cloud-provider`, `--cloud-config`,
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

/// `<binary> migrate <command> ...`; `args` after `migrate`.
pub fn run(
    binary: &Binary,
    registry: &ProviderRegistry,
    args: impl Iterator<Item = OsString>,
) -> ExitCode {
    use clap::{CommandFactory as _, FromArgMatches as _};
    // clap keeps names as &'static str; this runs once per process.
    let name: &'static str = Box::leak(format!("{} migrate", binary.name).into_boxed_str());
    let version: &'static str = Box::leak(binary.version.clone().into_boxed_str());
    let command = Migrate::command()
        .name(name)
        .bin_name(name)
        .version(version);
    let parsed = match command
        .try_get_matches_from(std::iter::once(OsString::from(name)).chain(args))
        .and_then(|m| Migrate::from_arg_matches(&m))
    {
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
        Command::ImportConfig { from, file } => import_config(name, from, file),
        Command::Check { flags } => crate::preflight::main(binary, registry, flags),
    }
}

fn import_config(command: &str, from: Source, file: Option<PathBuf>) -> ExitCode {
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
        eprintln!("{command} import-config: {name}: {e}");
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
                eprintln!("{command} import-config: {name}: {e}");
                ExitCode::FAILURE
            }
        }
    }
    #[cfg(not(feature = "local"))]
    {
        let _ = (from, text);
        eprintln!("{command} import-config: this build has no local provider");
        ExitCode::FAILURE
    }
}
