//! The fake provider's --cloud-config.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = overcast_provider_fake::config::parse(data);
});
