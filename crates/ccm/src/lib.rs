//! overcast-ccm, the cloud-controller-manager, as a library: a vendor
//! names their binary, registers their provider and runs it.
//!
//! ```no_run
//! use std::sync::Arc;
//! use overcast_cloud_provider::CloudProvider;
//! # #[derive(Debug)] struct MyCloud;
//! # impl CloudProvider for MyCloud { fn provider_name(&self) -> &str { "mycloud" } }
//!
//! fn main() -> std::process::ExitCode {
//!     overcast_ccm::Ccm::builder()
//!         .name("mycloud-ccm")
//!         .version(env!("CARGO_PKG_VERSION"))
//!         .provider("mycloud", |_config| Ok(Arc::new(MyCloud) as Arc<dyn CloudProvider>))
//!         .run()
//! }
//! ```

#![warn(missing_docs)]

// The application's parts: private, so a vendor builds against the
// builder alone and they can change without breaking anyone.
mod app;
mod client_metrics;
mod configz;
mod controllers;
mod delegation;
mod leader;
mod migrate;
mod migration;
mod options;
mod preflight;
mod ratelimit;
mod serve;
mod shadow;

use std::process::ExitCode;

use overcast_cloud_provider::ProviderRegistry;

use options::Options;

/// Parses the command line, runs the cloud-controller-manager with the
/// providers in `registry`, and returns the process's exit code: 0 after
/// SIGTERM, 1 on a start-up error or a lost lease, 2 on a bad flag.
/// Named `overcast-ccm`, with this crate's version; [`Ccm::builder`] names
/// a vendor's binary.
///
/// ```no_run
/// use std::sync::Arc;
/// use overcast_cloud_provider::{CloudProvider, ProviderRegistry};
/// # #[derive(Debug)] struct MyCloud;
/// # impl CloudProvider for MyCloud { fn provider_name(&self) -> &str { "mycloud" } }
///
/// fn main() -> std::process::ExitCode {
///     let mut registry = ProviderRegistry::new();
///     registry
///         .register("mycloud", |_config| Ok(Arc::new(MyCloud) as Arc<dyn CloudProvider>))
///         .expect("registered once");
///     overcast_ccm::main(registry)
/// }
/// ```
pub fn main(registry: ProviderRegistry) -> ExitCode {
    Ccm::builder().registry(registry).run()
}

/// A cloud-controller-manager binary: its name and version (in `--help`,
/// `--version` and the User-Agent of its clients) and its providers.
#[derive(Debug)]
pub struct Ccm;

impl Ccm {
    /// A builder named `overcast-ccm`, with this crate's version and no
    /// provider.
    pub fn builder() -> CcmBuilder {
        CcmBuilder {
            name: app::DEFAULT_NAME.into(),
            version: app::DEFAULT_VERSION.into(),
            metrics_prefix: None,
            registry: ProviderRegistry::new(),
            controllers: Vec::new(),
            error: None,
        }
    }
}

/// Builds and runs a [`Ccm`]; see the crate's example.
pub struct CcmBuilder {
    name: String,
    version: String,
    /// `None`: derived from the name.
    metrics_prefix: Option<String>,
    registry: ProviderRegistry,
    controllers: Vec<overcast_cloud_provider::ControllerSpec>,
    /// The first registration refused, reported by `run`.
    error: Option<String>,
}

impl std::fmt::Debug for CcmBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CcmBuilder")
            .field("name", &self.name)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl CcmBuilder {
    /// The binary's name (default `overcast-ccm`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The binary's version, without a leading `v` (default: overcast-ccm's).
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }

    /// The prefix of the metrics that are the binary's own rather than
    /// upstream's (`<prefix>_shadow_divergences`); by default the name up to
    /// its first `-` (`overcast-ccm` → `overcast`, `acme-ccm` → `acme`).
    /// Upstream's metrics (`workqueue_*`, `rest_client_*`, ...) keep
    /// upstream's names, as dashboards expect.
    pub fn metrics_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.metrics_prefix = Some(prefix.into());
        self
    }

    /// Registers a provider for `--cloud-provider=<name>`; `factory` gets
    /// the `--cloud-config` file's contents, if one was given. A name
    /// registered twice makes [`CcmBuilder::run`] fail, naming it.
    pub fn provider(
        mut self,
        name: impl Into<String>,
        factory: impl Fn(
            Option<&[u8]>,
        ) -> overcast_cloud_provider::Result<
            std::sync::Arc<dyn overcast_cloud_provider::CloudProvider>,
        > + Send
        + Sync
        + 'static,
    ) -> Self {
        if let Err(e) = self.registry.register(name, factory)
            && self.error.is_none()
        {
            self.error = Some(e.to_string());
        }
        self
    }

    /// Adds a controller of the providers' own (as cloud-provider-aws adds
    /// `tagging`): its name joins `--controllers`, its flags the command
    /// line, and a provider whose [`overcast_cloud_provider::CloudProvider::node_controller`]
    /// builds it runs it under the Lease. A name upstream's controllers or
    /// another added one have makes [`CcmBuilder::run`] fail, naming it.
    pub fn controller(mut self, spec: overcast_cloud_provider::ControllerSpec) -> Self {
        let taken = controllers::canonical(spec.name()).is_some()
            || self.controllers.iter().any(|c| c.name() == spec.name());
        if taken && self.error.is_none() {
            self.error = Some(format!(
                "controller {:?} was added twice or has the name of an upstream controller",
                spec.name()
            ));
        }
        self.controllers.push(spec);
        self
    }

    /// Every provider of `registry`, in place of those registered so far.
    pub fn registry(mut self, registry: ProviderRegistry) -> Self {
        self.registry = registry;
        self
    }

    /// Parses the command line and runs; the process's exit code: 0 after
    /// SIGTERM, 1 on a start-up error or a lost lease, 2 on a bad flag or
    /// a provider registered twice.
    ///
    /// `<name> migrate check|import-config ...` runs the migration tools
    /// with the same providers.
    pub fn run(self) -> ExitCode {
        if let Some(e) = self.error {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
        let metrics_prefix = self
            .metrics_prefix
            .unwrap_or_else(|| app::metrics_prefix_of(&self.name));
        if !app::valid_metrics_prefix(&metrics_prefix) {
            eprintln!(
                "error: metrics prefix {metrics_prefix:?}: not the start of a Prometheus metric name ([a-zA-Z_][a-zA-Z0-9_]*)"
            );
            return ExitCode::from(2);
        }
        let binary = app::Binary {
            name: self.name,
            version: self.version,
            metrics_prefix,
            controllers: self.controllers,
        };
        app::set_binary(binary.clone());
        if std::env::args_os().nth(1).is_some_and(|a| a == "migrate") {
            return migrate::run(&binary, &self.registry, std::env::args_os().skip(2));
        }
        run(&binary, self.registry)
    }
}

fn run(binary: &app::Binary, registry: ProviderRegistry) -> ExitCode {
    // rustls cannot pick a crypto provider by itself when a provider's SDK
    // links aws-lc-rs beside kube's ring: choose ring for the process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let options = match Options::parse_as(
        &binary.name,
        &binary.version,
        &binary.controllers,
        std::env::args_os(),
    ) {
        Ok(options) => options,
        Err(e) => e.exit(),
    };
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

#[cfg(test)]
mod tests {
    use super::*;
    use overcast_cloud_provider::CloudProvider;
    use std::sync::Arc;

    #[derive(Debug)]
    struct Nothing;
    impl CloudProvider for Nothing {
        fn provider_name(&self) -> &str {
            "nothing"
        }
    }

    #[test]
    fn a_provider_registered_twice_is_refused_naming_it() {
        let factory = |_: Option<&[u8]>| Ok(Arc::new(Nothing) as Arc<dyn CloudProvider>);
        let builder = Ccm::builder()
            .provider("nothing", factory)
            .provider("nothing", factory);
        let error = builder.error.expect("the second registration is refused");
        assert!(error.contains("nothing"), "{error}");
    }

    #[test]
    fn a_controller_named_as_another_is_refused() {
        use overcast_cloud_provider::ControllerSpec;
        let builder = Ccm::builder().controller(ControllerSpec::new("route", "Route flags"));
        assert!(builder.error.unwrap().contains("\"route\""));
        let builder = Ccm::builder()
            .controller(ControllerSpec::new("tagging", "Tagging controller flags"))
            .controller(ControllerSpec::new("tagging", "Tagging controller flags"));
        assert!(builder.error.unwrap().contains("added twice"));
    }

    #[test]
    fn the_metrics_prefix_is_the_name_up_to_its_first_dash() {
        assert_eq!(app::metrics_prefix_of("overcast-ccm"), "overcast");
        assert_eq!(app::metrics_prefix_of("acme-cloud-ccm"), "acme");
        assert_eq!(app::metrics_prefix_of("acme.io"), "acme_io");
        assert_eq!(app::metrics_prefix_of("9cloud-ccm"), "_9cloud");
        assert!(app::valid_metrics_prefix("acme_io"));
        assert!(!app::valid_metrics_prefix("acme-io"));
        assert!(!app::valid_metrics_prefix("9cloud"));
        assert!(!app::valid_metrics_prefix(""));
    }

    #[test]
    fn the_binary_is_named_in_help_and_version() {
        let err =
            Options::parse_as("acme-ccm", "2.1.0", &[], ["acme-ccm", "--version"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::DisplayVersion);
        assert_eq!(err.to_string(), "acme-ccm 2.1.0\n");
    }
}
