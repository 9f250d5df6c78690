//! The fuzzer's corpus (fuzz/corpus/ and fuzz/seeds/local_config, grown by
//! `make fuzz`), replayed on stable: every input is a config or an error,
//! never a panic.

#[path = "../../../../fuzz/replay.rs"]
mod replay;

use overcast_provider_local::config::LocalConfig;

#[test]
fn the_local_config_corpus_parses_or_errs_without_panicking() {
    let inputs = replay::inputs("local_config");
    for (_, bytes) in &inputs {
        let _ = LocalConfig::parse(bytes);
    }
    assert!(inputs.len() >= 100, "{} inputs", inputs.len());
    // The hand-written seeds are valid configs.
    for seed in ["deploy", "full"] {
        LocalConfig::parse(&replay::seed("local_config", seed))
            .unwrap_or_else(|e| panic!("the seed {seed}: {e}"));
    }
}
