//! overcast-ccm, the cloud-controller-manager, as a library: a vendor
//! registers their provider and hands over to [`main`].
//!
//! ```no_run
//! use std::sync::Arc;
//! use overcast_cloud_provider::{CloudProvider, ProviderRegistry};
//! # #[derive(Debug)] struct MyCloud;
//! # impl CloudProvider for MyCloud { fn provider_name(&self) -> &str { "mycloud" } }
//!
//! fn main() -> std::process::ExitCode {
//!     let mut registry = ProviderRegistry::new();
//!     registry
//!         .register("mycloud", |_config| Ok(Arc::new(MyCloud) as Arc<dyn CloudProvider>))
//!         .expect("registered once");
//!     overcast_ccm::main(registry)
//! }
//! ```

pub mod app;
pub mod controllers;
pub mod delegation;
pub mod leader;
pub mod migration;
pub mod options;
pub mod ratelimit;
pub mod serve;

use std::process::ExitCode;

use clap::Parser;
use overcast_cloud_provider::ProviderRegistry;

pub use options::Options;

/// Parses the command line, runs the cloud-controller-manager with the
/// providers in `registry`, and returns the process's exit code: 0 after
/// SIGTERM, 1 on a start-up error or a lost lease, 2 on a bad flag.
pub fn main(registry: ProviderRegistry) -> ExitCode {
    // rustls cannot pick a crypto provider by itself when a provider's SDK
    // links aws-lc-rs beside kube's ring: choose ring for the process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let options = Options::parse();
    // Bad flags exit 2 (as clap's parse errors do), anything later 1; each
    // error is said once, on stderr, in the chosen log format.
    let format = match LogFormat::parse(options.logging_format.as_deref()) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(options.verbosity, format);
    let config = match options.validate() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("starting the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(app::run(config, &registry)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::from(1)
        }
    }
}

/// --logging-format: upstream's "text" (the default) or "json".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    fn parse(flag: Option<&str>) -> Result<Self, String> {
        match flag {
            None | Some("text") => Ok(LogFormat::Text),
            Some("json") => Ok(LogFormat::Json),
            Some(other) => Err(format!(
                "--logging-format={other}: unsupported; one of text, json"
            )),
        }
    }
}

/// klog's -v mapped onto tracing levels; RUST_LOG, when set, wins.
fn init_logging(verbosity: u8, format: LogFormat) {
    let level = match verbosity {
        0..=2 => "info",
        3..=5 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{level},kube=warn,hyper=warn,rustls=warn"))
    });
    use std::io::IsTerminal as _;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        // One object per line, the fields flattened, as klog's JSON format.
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
