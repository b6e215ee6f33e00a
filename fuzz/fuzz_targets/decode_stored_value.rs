//! Arbitrary bytes as every internal stored value type: never a panic, never a huge allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    kho::vault::fuzz_decode_stored_values(data);
});
