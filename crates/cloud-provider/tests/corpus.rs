//! The fuzzer's corpus (fuzz/corpus/ and fuzz/seeds/go_duration, grown by
//! `make fuzz`), replayed on stable: every input is a value or an error,
//! never a panic.

#[path = "../../../fuzz/replay.rs"]
mod replay;

#[test]
fn the_go_duration_corpus_parses_or_errs_without_panicking() {
    let inputs = replay::inputs("go_duration");
    for (_, bytes) in &inputs {
        if let Ok(text) = std::str::from_utf8(bytes) {
            let _ = overcast_cloud_provider::duration::parse_go_duration(text);
        }
    }
    assert!(inputs.len() >= 100, "{} inputs", inputs.len());
    assert!(overcast_cloud_provider::duration::parse_go_duration("1h30m0.5s").is_ok());
}
