//! Arbitrary bytes as a stored frame, checked either way a frame can be: never a panic, never more
//! plain bytes than expected, and only bytes that hash as the check says are returned.
#![no_main]

use kho::content::FrameCheck;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u16, bool, u64, u32, [u8; 32], bool, &[u8])| {
    let (expected_len, keyed, number, index, hash, root, frame) = input;
    let check = if keyed {
        FrameCheck::Keyed { upload_id: number, index }
    } else {
        FrameCheck::Subtree { offset: number, hash, root }
    };
    let mut decompressor = kho::content::LazyDecompressor::default();
    if let Ok(plain) = kho::content::decode_frame(frame.to_vec(), &check, usize::from(expected_len), &mut decompressor) {
        assert_eq!(plain.len(), usize::from(expected_len));
        if let FrameCheck::Subtree { offset: 0, hash, root: true } = check {
            assert_eq!(*blake3::hash(&plain).as_bytes(), hash);
        }
    }
});
