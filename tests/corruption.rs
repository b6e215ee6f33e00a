//! Integrity on read: a byte flipped inside a stored frame on disk makes that document fail with an
//! integrity error, never wrong bytes, while the other documents still read.

mod common;

use std::io::Read as _;
use std::path::{Path, PathBuf};

use common::*;
use kho::vault::ReadError;

/// Every file of the store: the catalog's files and the content packs.
fn store_files(data: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut folders = vec![data.join("store")];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(folder).expect("list store") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                folders.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

/// Flips one byte at every place on disk that holds `needle`; returns how many places.
fn flip_on_disk(data: &Path, needle: &[u8]) -> usize {
    let mut flipped = 0;
    for file in store_files(data) {
        let mut bytes = std::fs::read(&file).expect("read store file");
        let positions: Vec<usize> =
            bytes.windows(needle.len()).enumerate().filter(|(_, w)| *w == needle).map(|(i, _)| i).collect();
        for position in &positions {
            bytes[position + needle.len() / 2] ^= 0x40;
        }
        if !positions.is_empty() {
            std::fs::write(&file, &bytes).expect("write store file");
            flipped += positions.len();
        }
    }
    flipped
}

#[test]
fn a_flipped_byte_in_a_frame_is_an_integrity_error_and_other_documents_still_read() {
    let f = fixture();
    // Incompressible content is stored raw, so its bytes can be found in the store files.
    let documents: Vec<Vec<u8>> = (0..3).map(|i| document(150_000, 100 + i, false)).collect();
    let ids: Vec<_> = documents.iter().map(|d| deposit(&f, d)).collect();
    let hashes: Vec<_> =
        ids.iter().map(|id| f.vault.record(id).expect("read").expect("present").record.body().blake3).collect();
    let f = f.reopen(); // everything flushed and the files closed by sled
    let data = f.dir.path().to_owned();
    let Fixture { dir, anchor, issuer: _, other_issuer: _, vault } = f;
    drop(vault);

    // A run of bytes from the middle of the second frame of document 1.
    let needle = &documents[1][70_000..70_064];
    assert!(flip_on_disk(&data, needle) >= 1, "the frame's bytes were not found on disk");

    let vault = kho::vault::Vault::open(kho::vault::VaultConfig::new(&data, vec![anchor.public_key()]))
        .expect("reopen corrupted store");
    // The damaged document: a whole read and a range read of the damaged frame both fail.
    for range in [None, Some((65_536, 131_072))] {
        let outcome = vault.open_content(&hashes[1], range).map(|reader| {
            let mut sink = Vec::new();
            reader.expect("present").read_to_end(&mut sink).map(|_| sink)
        });
        match outcome {
            Ok(Ok(bytes)) => panic!("corrupt document served {} bytes", bytes.len()),
            Ok(Err(error)) => assert!(error.to_string().contains("corrupt"), "{error}"),
            Err(error) => assert!(matches!(error, ReadError::Storage(_)), "{error}"),
        }
    }
    // A range that avoids the damaged frame still reads, since every frame is checked on its own.
    assert_eq!(read_all(&vault, &hashes[1], Some((0, 1000))), &documents[1][..1000]);
    // The other documents are intact.
    for index in [0, 2] {
        assert_eq!(read_all(&vault, &hashes[index], None), documents[index]);
    }
    drop(dir);
}
