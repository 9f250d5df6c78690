//! The fuzzer's corpus (fuzz/corpus/ and fuzz/seeds/fake_config, grown by `make fuzz`),
//! replayed on stable: every input is a config or an error, never a panic.

#[test]
fn the_fake_config_corpus_parses_or_errs_without_panicking() {
    let fuzz = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../fuzz");
    let mut inputs = 0;
    for dir in ["corpus", "seeds"] {
        for entry in
            std::fs::read_dir(format!("{fuzz}/{dir}/fake_config")).expect("in the repository")
        {
            let _ = overcast_provider_fake::config::parse(
                &std::fs::read(entry.unwrap().path()).unwrap(),
            );
            inputs += 1;
        }
    }
    assert!(inputs >= 100, "{inputs} inputs");
    let seed = std::fs::read(format!("{fuzz}/seeds/fake_config/a")).unwrap();
    overcast_provider_fake::config::parse(&seed).unwrap();
}
