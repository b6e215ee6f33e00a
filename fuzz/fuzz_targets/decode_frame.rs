//! Arbitrary bytes as a stored frame: never a panic, never more plain bytes than expected, and only
//! bytes whose checksum matches are returned.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u16, u64, u32, &[u8])| {
    let (expected_len, upload_id, index, frame) = input;
    let mut decompressor = kho::content::LazyDecompressor::default();
    if let Ok(plain) = kho::content::decode_frame(frame.to_vec(), upload_id, index, usize::from(expected_len), &mut decompressor)
    {
        assert_eq!(plain.len(), usize::from(expected_len));
    }
});
