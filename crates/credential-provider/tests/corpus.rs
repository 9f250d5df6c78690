//! The fuzzers' corpora (fuzz/corpus/ and fuzz/seeds/credential_request and
//! static_credentials, grown by `make fuzz`), replayed on stable: every
//! input is parsed or refused, never a panic.

use overcast_credential_provider::protocol::Request;
use overcast_credential_provider::providers::static_registry::StaticProvider;

/// (directory/file, bytes) of the corpus and the hand-written seeds.
fn corpus(name: &str) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for dir in ["corpus", "seeds"] {
        let path = format!("{}/../../fuzz/{dir}/{name}", env!("CARGO_MANIFEST_DIR"));
        for e in std::fs::read_dir(&path).expect("in the repository") {
            let path = e.unwrap().path();
            let file = path.file_name().unwrap().to_string_lossy().into_owned();
            out.push((format!("{dir}/{file}"), std::fs::read(&path).unwrap()));
        }
    }
    out
}

#[test]
fn the_request_and_config_corpora_parse_or_err_without_panicking() {
    let requests = corpus("credential_request");
    assert!(requests.len() >= 100);
    for (name, bytes) in &requests {
        let parsed = Request::parse(bytes);
        if name == "seeds/v1" || name == "seeds/sa" {
            parsed.unwrap_or_else(|e| panic!("the seed {name}: {e}"));
        }
    }
    let configs = corpus("static_credentials");
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
