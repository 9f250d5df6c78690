//! overcast-credential-provider: the kubelet runs it with the provider as its
//! first argument (from CredentialProviderConfig `args`), a
//! CredentialProviderRequest on stdin, and reads the response from stdout.

use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

use overcast_credential_provider::Error;
use overcast_credential_provider::protocol::Request;
use overcast_credential_provider::providers::static_registry::StaticProvider;

/// More than any request the kubelet sends; bounds memory on bad input.
const MAX_REQUEST: u64 = 1 << 20;

const USAGE: &str =
    "usage: overcast-credential-provider static --config FILE | overcast-credential-provider ecr";

const HELP: &str = "overcast-credential-provider: a kubelet image credential provider plugin.

The kubelet runs it (CredentialProviderConfig `args`) with a
CredentialProviderRequest on stdin and reads the response from stdout.

usage:
  overcast-credential-provider static --config FILE   credentials from a file (docs/credential-provider.md)
  overcast-credential-provider ecr                    Amazon ECR tokens (when built with the ecr feature)
  overcast-credential-provider --help | --version";

fn main() -> ExitCode {
    // Answered before stdin is read: in a terminal, nothing would come.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{HELP}");
        return ExitCode::SUCCESS;
    }
    if args.iter().any(|a| a == "--version") {
        println!("overcast-credential-provider {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    match run(args) {
        Ok(out) => {
            let mut stdout = std::io::stdout().lock();
            if writeln!(stdout, "{out}")
                .and_then(|()| stdout.flush())
                .is_err()
            {
                return ExitCode::from(1);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("overcast-credential-provider: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(args: Vec<String>) -> Result<String, Error> {
    let mut args = args.into_iter();
    let provider = args.next().ok_or_else(|| Error::Usage(USAGE.into()))?;
    let mut config: Option<PathBuf> = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" => {
                config = Some(
                    args.next()
                        .ok_or_else(|| Error::Usage("--config needs a file".into()))?
                        .into(),
                )
            }
            other if other.starts_with("--config=") => {
                config = Some(other["--config=".len()..].into())
            }
            other => return Err(Error::Usage(format!("unknown argument {other:?}; {USAGE}"))),
        }
    }
    // Arguments and config are checked before stdin is read, so a mistake
    // is reported at once rather than after the kubelet's request.
    let static_provider = match provider.as_str() {
        "static" => {
            let path = config.ok_or_else(|| Error::Usage("static needs --config FILE".into()))?;
            Some(StaticProvider::load(&path, &|name| {
                std::env::var(name).ok()
            })?)
        }
        "ecr" => None,
        other => return Err(Error::Usage(format!("unknown provider {other:?}; {USAGE}"))),
    };
    let mut input = Vec::new();
    std::io::stdin()
        .take(MAX_REQUEST)
        .read_to_end(&mut input)
        .map_err(|e| Error::Request(format!("reading stdin: {e}")))?;
    match static_provider {
        Some(provider) => {
            let request = Request::parse(&input)?;
            Ok(provider.provide(&request).to_json(&request.api_version))
        }
        None => ecr(&input),
    }
}

#[cfg(feature = "ecr")]
fn ecr(input: &[u8]) -> Result<String, Error> {
    let request = Request::parse(input)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Provider {
            provider: "ecr",
            message: format!("starting the async runtime: {e}"),
        })?;
    // The kubelet kills the plugin after one minute; give up a little sooner
    // with a message of our own.
    let answer = runtime.block_on(async {
        tokio::time::timeout(
            std::time::Duration::from_secs(50),
            overcast_credential_provider::providers::ecr::provide(&request),
        )
        .await
    });
    match answer {
        Ok(result) => Ok(result?.to_json(&request.api_version)),
        Err(_) => Err(Error::Provider {
            provider: "ecr",
            message: "no answer from ECR within 50 s".into(),
        }),
    }
}

#[cfg(not(feature = "ecr"))]
fn ecr(_input: &[u8]) -> Result<String, Error> {
    Err(Error::Provider {
        provider: "ecr",
        message: "this build has no ECR support (built without the 'ecr' feature)".into(),
    })
}
