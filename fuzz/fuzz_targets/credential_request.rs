//! A CredentialProviderRequest on the plugin's stdin, from the kubelet.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = overcast_credential_provider::protocol::Request::parse(data);
});
