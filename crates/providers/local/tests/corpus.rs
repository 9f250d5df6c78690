//! The fuzzer's corpus (fuzz/corpus/ and fuzz/seeds/local_config, grown by `make fuzz`),
//! replayed on stable: every input is a config or an error, never a panic.

use overcast_provider_local::config::LocalConfig;

#[test]
fn the_local_config_corpus_parses_or_errs_without_panicking() {
    let fuzz = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../fuzz");
    let mut inputs = 0;
    for dir in ["corpus", "seeds"] {
        for entry in
            std::fs::read_dir(format!("{fuzz}/{dir}/local_config")).expect("in the repository")
        {
            let _ = LocalConfig::parse(&std::fs::read(entry.unwrap().path()).unwrap());
            inputs += 1;
        }
    }
    assert!(inputs >= 100, "{inputs} inputs");
    // The hand-written seeds are valid configs.
    for seed in ["deploy", "full"] {
        let text = std::fs::read(format!("{fuzz}/seeds/local_config/{seed}")).unwrap();
        LocalConfig::parse(&text).unwrap_or_else(|e| panic!("the seed {seed}: {e}"));
    }
}
