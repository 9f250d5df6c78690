//! The fuzzer's corpus (fuzz/corpus/ and fuzz/seeds/fake_config, grown by
//! `make fuzz`), replayed on stable: every input is a config or an error,
//! never a panic.

#[path = "../../../../fuzz/replay.rs"]
mod replay;

#[test]
fn the_fake_config_corpus_parses_or_errs_without_panicking() {
    let inputs = replay::inputs("fake_config");
    for (_, bytes) in &inputs {
        let _ = overcast_provider_fake::config::parse(bytes);
    }
    assert!(inputs.len() >= 100, "{} inputs", inputs.len());
    overcast_provider_fake::config::parse(&replay::seed("fake_config", "a")).unwrap();
}
