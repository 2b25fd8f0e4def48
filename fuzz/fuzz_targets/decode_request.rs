//! Any byte sequence as a request frame: decoding must return a value or an
//! error, never panic, and never allocate more than the input can fill
//! (libFuzzer's -malloc_limit_mb turns a huge allocation into a crash).
#![no_main]

libfuzzer_sys::fuzz_target!(|frame: &[u8]| {
    let _ = keel_broker::api::decode(bytes::Bytes::copy_from_slice(frame));
});
