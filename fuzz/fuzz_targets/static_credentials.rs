//! The static credential provider's config file.
#![no_main]
use overcast_credential_provider::providers::static_registry::StaticProvider;
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = StaticProvider::parse(text, &|_| Some("secret".to_string()));
    }
});
