//! The fuzzers' inputs for the stable replay tests (each crate's
//! tests/corpus.rs includes this file with `#[path]`).

use std::path::PathBuf;

/// The fuzz/ directory, found above the including crate.
fn fuzz_dir() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|d| d.join("fuzz"))
        .find(|d| d.join("corpus").is_dir())
        .expect("fuzz/corpus is in the repository")
}

/// (`corpus/<file>` or `seeds/<file>`, bytes) of every input of `target`.
pub fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for dir in ["corpus", "seeds"] {
        let path = fuzz_dir().join(dir).join(target);
        for entry in std::fs::read_dir(&path).expect("in the repository") {
            let path = entry.unwrap().path();
            let file = path.file_name().unwrap().to_string_lossy().into_owned();
            out.push((format!("{dir}/{file}"), std::fs::read(&path).unwrap()));
        }
    }
    out
}

/// A hand-written seed of `target`.
#[allow(dead_code)]
pub fn seed(target: &str, name: &str) -> Vec<u8> {
    std::fs::read(fuzz_dir().join("seeds").join(target).join(name)).unwrap()
}
