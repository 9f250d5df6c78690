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
mod client_metrics;
pub mod configz;
pub mod controllers;
pub mod delegation;
pub mod leader;
pub mod migration;
pub mod options;
pub mod preflight;
pub mod ratelimit;
pub mod serve;
pub mod shadow;

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
    let format = match LogFormat::parse(&options.logging_format) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let split = match format {
        LogFormat::Text => options.log_text_split_stream,
        LogFormat::Json => options.log_json_split_stream,
    };
    init_logging(options.verbosity, format, split);
    for warning in options.no_effect_warnings() {
        tracing::warn!("{warning}");
    }
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
    fn parse(flag: &str) -> Result<Self, String> {
        match flag {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!(
                "--logging-format={other}: unsupported; one of text, json"
            )),
        }
    }
}

/// klog's -v mapped onto tracing levels; RUST_LOG, when set, wins.
/// `split`: errors to stderr, the rest to stdout, as
/// --log-*-split-stream; otherwise everything to stderr.
fn init_logging(verbosity: u8, format: LogFormat, split: bool) {
    let level = match verbosity {
        0..=2 => "info",
        3..=5 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{level},kube=warn,hyper=warn,rustls=warn"))
    });
    use std::io::IsTerminal as _;
    use tracing_subscriber::fmt::writer::MakeWriterExt as _;
    let writer = if split {
        tracing_subscriber::fmt::writer::BoxMakeWriter::new(
            std::io::stderr
                .with_max_level(tracing::Level::ERROR)
                .or_else(std::io::stdout),
        )
    } else {
        tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::io::stderr)
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        // One object per line, the fields flattened, as klog's JSON format.
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
