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

fn main() -> ExitCode {
    match run() {
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

fn run() -> Result<String, Error> {
    let mut args = std::env::args().skip(1);
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
    let mut input = Vec::new();
    std::io::stdin()
        .take(MAX_REQUEST)
        .read_to_end(&mut input)
        .map_err(|e| Error::Request(format!("reading stdin: {e}")))?;
    match provider.as_str() {
        "static" => {
            let path = config.ok_or_else(|| Error::Usage("static needs --config FILE".into()))?;
            let provider = StaticProvider::load(&path, &|name| std::env::var(name).ok())?;
            let request = Request::parse(&input)?;
            Ok(provider.provide(&request).to_json(&request.api_version))
        }
        "ecr" => ecr(&input),
        other => Err(Error::Usage(format!("unknown provider {other:?}; {USAGE}"))),
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
