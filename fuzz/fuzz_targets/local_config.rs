//! The local provider's --cloud-config (also every live reload).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = overcast_provider_local::config::LocalConfig::parse(data);
});
