//! Go durations (flags, config files): an error or a value, never a panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(d) = overcast_cloud_provider::duration::parse_go_duration(text)
    {
        assert!(d <= overcast_cloud_provider::duration::MAX_GO_DURATION);
    }
});
