//! The fuzzer's corpus (fuzz/corpus/ and fuzz/seeds/go_duration, grown by `make fuzz`),
//! replayed on stable: every input is a value or an error, never a panic.

#[test]
fn the_go_duration_corpus_parses_or_errs_without_panicking() {
    let fuzz = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz");
    let mut inputs = 0;
    for dir in ["corpus", "seeds"] {
        for entry in
            std::fs::read_dir(format!("{fuzz}/{dir}/go_duration")).expect("in the repository")
        {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            if let Ok(text) = std::str::from_utf8(&bytes) {
                let _ = overcast_cloud_provider::duration::parse_go_duration(text);
            }
            inputs += 1;
        }
    }
    assert!(inputs >= 100, "{inputs} inputs");
    assert!(overcast_cloud_provider::duration::parse_go_duration("1h30m0.5s").is_ok());
}
