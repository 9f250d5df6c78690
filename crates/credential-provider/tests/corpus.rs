//! The fuzzers' corpora (fuzz/corpus/ and fuzz/seeds/credential_request and
//! static_credentials, grown by `make fuzz`), replayed on stable: every
//! input is parsed or refused, never a panic.

#[path = "../../../fuzz/replay.rs"]
mod replay;

use overcast_credential_provider::protocol::Request;
use overcast_credential_provider::providers::static_registry::StaticProvider;

#[test]
fn the_request_and_config_corpora_parse_or_err_without_panicking() {
    let requests = replay::inputs("credential_request");
    assert!(requests.len() >= 100);
    for (name, bytes) in &requests {
        let parsed = Request::parse(bytes);
        if name == "seeds/v1" || name == "seeds/sa" {
            parsed.unwrap_or_else(|e| panic!("the seed {name}: {e}"));
        }
    }
    let configs = replay::inputs("static_credentials");
    assert!(configs.len() >= 100);
    for (name, bytes) in &configs {
        let Ok(text) = std::str::from_utf8(bytes) else {
            continue;
        };
        let parsed = StaticProvider::parse(text, &|_| Some("secret".to_string()));
        if name == "seeds/a" {
            parsed.unwrap_or_else(|e| panic!("the seed {name}: {e}"));
        }
    }
}
