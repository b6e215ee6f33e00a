//! Damage on disk. A byte flipped inside a stored frame makes that document fail with an integrity
//! error, never wrong bytes, while the other documents still read. A byte flipped in the catalog's files
//! deletes nothing: the vault refuses to open, and the recovery flag brings every document back.

mod common;

use std::io::Read as _;
use std::path::{Path, PathBuf};

use common::*;
use kho::vault::{FindingKind, ReadError, ScrubOptions};

#[test]
fn a_flipped_byte_in_a_frame_is_an_integrity_error_and_other_documents_still_read() {
    let f = fixture();
    // Incompressible content is stored raw, so its bytes can be found in the store files.
    let documents: Vec<Vec<u8>> = (0..3).map(|i| document(150_000, 100 + i, false)).collect();
    let ids: Vec<_> = documents.iter().map(|d| deposit(&f, d)).collect();
    let hashes: Vec<_> =
        ids.iter().map(|id| f.vault.record(id).expect("read").expect("present").record.body().blake3).collect();
    let f = f.reopen(); // everything written and the files closed
    let data = f.dir.path().to_owned();
    let Fixture { dir, anchor, vault, .. } = f;
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
    // A scrub names that document, its record and owner, once, and changes nothing.
    let before = vault.state_digest().expect("state");
    let report = vault.scrub(ScrubOptions::default(), |_| {}).expect("scrub");
    assert_eq!(report.findings.len(), 1, "{:?}", report.findings);
    let finding = &report.findings[0];
    assert_eq!(finding.kind, FindingKind::Content);
    assert_eq!(finding.records, vec![ids[1]]);
    assert_eq!(finding.owners, vec![kho::ids::OwnerId::parse(OWNER).expect("owner")]);
    assert_eq!((report.records, report.documents), (3, 3));
    assert_eq!(vault.state_digest().expect("state"), before, "a scrub changes nothing");
    drop(dir);
}

/// Damage of each kind in one store (a frame, a log leaf, a statement) on the memory engine, where the
/// stored bytes can be reached without the embedded engine's own checksums refusing the open: a scrub
/// reports each exactly once, with its record and owner, and changes nothing.
#[test]
fn scrub_reports_a_damaged_frame_leaf_and_statement_each_exactly_once_and_changes_nothing() {
    let memory = kho::store::memory::Memory::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let anchor = key(1);
    let issuer = key(2);
    let vault = kho::vault::Vault::open_on(
        kho::vault::VaultConfig::new(dir.path(), vec![anchor.public_key()]),
        memory.engines(),
    )
    .expect("vault");
    vault.add_certificate(&current_certificate(&anchor, AGENCY, &issuer)).expect("certificate");
    let documents: Vec<Vec<u8>> = (0..4).map(|i| document(90_000, 700 + i, false)).collect();
    let mut records = Vec::new();
    for (i, content) in documents.iter().enumerate() {
        let mut record = record_for(content, if i == 3 { OTHER_OWNER } else { OWNER }, AGENCY);
        record.title = kho::ids::Title::parse(&format!("scrub document number {i}")).expect("title");
        let accepted = vault.deposit(&sign(record, &issuer), &content[..]).expect("deposit");
        records.push(accepted);
    }
    vault.sign_checkpoint().expect("checkpoint");
    let clean = vault.scrub(ScrubOptions::default(), |_| {}).expect("scrub");
    assert!(clean.findings.is_empty(), "{:?}", clean.findings);
    assert_eq!((clean.records, clean.documents, clean.document_bytes), (4, 4, 360_000));

    // A frame of document 0, the log leaf of record 1, the signed bytes of record 3 (another owner's).
    assert_eq!(memory.flip_bytes(&documents[0][70_000..70_064]), 1);
    let leaf = vault.log_entry(records[1].receipt.body().log_index).expect("entry").expect("present");
    assert_eq!(memory.flip_bytes(&leaf), 1);
    assert_eq!(memory.flip_bytes("scrub document number 3".as_bytes()), 1);

    let before = vault.state_digest().expect("state");
    let mut progressed = 0;
    let report = vault.scrub(ScrubOptions::default(), |_| progressed += 1).expect("scrub");
    assert!(progressed > 0);
    assert_eq!(vault.state_digest().expect("state"), before, "a scrub changes nothing");
    assert_eq!(report.findings.len(), 3, "{:#?}", report.findings);
    let find = |kind: FindingKind| {
        report.findings.iter().find(|f| f.kind == kind).unwrap_or_else(|| panic!("{kind:?}: {:#?}", report.findings))
    };
    let content = find(FindingKind::Content);
    assert_eq!(content.records, vec![records[0].id]);
    assert_eq!(content.owners, vec![kho::ids::OwnerId::parse(OWNER).expect("owner")]);
    let leaf = find(FindingKind::LogEntry);
    assert_eq!(leaf.log_index, Some(records[1].receipt.body().log_index));
    let statement = find(FindingKind::Statement);
    assert_eq!(statement.records, vec![records[3].id]);
    assert_eq!(statement.owners, vec![kho::ids::OwnerId::parse(OTHER_OWNER).expect("owner")]);
    assert!(statement.detail.contains("signature") || statement.detail.contains("stored"), "{}", statement.detail);

    // Reads refuse the damaged statement too, the record alone (what a download loads) as well as its
    // whole view; an undamaged record is the same either way.
    for read in [vault.record_statement(&records[3].id).map(|_| ()), vault.record(&records[3].id).map(|_| ())] {
        assert!(matches!(read, Err(kho::vault::StorageError::Corrupt(_))), "{read:?}");
    }
    let alone = vault.record_statement(&records[2].id).expect("read").expect("present");
    let view = vault.record(&records[2].id).expect("read").expect("present");
    assert_eq!((alone.id(), alone.to_envelope()), (records[2].id, view.record.to_envelope()));
}

/// Size and BLAKE3 of every pack file.
fn packs_state(data: &Path) -> Vec<(PathBuf, u64, [u8; 32])> {
    let mut packs: Vec<_> = std::fs::read_dir(data.join("store/packs"))
        .expect("packs")
        .map(|entry| {
            let path = entry.expect("entry").path();
            let bytes = std::fs::read(&path).expect("pack");
            (path, bytes.len() as u64, *blake3::hash(&bytes).as_bytes())
        })
        .collect();
    packs.sort();
    packs
}

/// Regression: one flipped byte in the catalog's file (then sled's `db`, which cut its log at a bad
/// checksum, taking it for a torn write) let the vault open without a word with records missing, and
/// then cut every pack back to the shorter extents the damaged catalog still knew, deleting the lost
/// documents' bytes (seen: a pack cut from 6,659,746 to 2,864,409 bytes; 33 of 60 records gone). The
/// catalog's checksums are checked at open now, and a damaged file does not open.
#[test]
fn a_flipped_byte_in_the_catalog_deletes_nothing_refuses_to_open_and_recovery_brings_everything_back() {
    let f = fixture();
    let documents: Vec<Vec<u8>> = (0..60).map(|i| document(20_000 + i * 1_500, 500 + i as u64, i % 3 == 0)).collect();
    let ids: Vec<_> = documents.iter().map(|d| deposit(&f, d)).collect();
    let envelope = f.vault.record(&ids[20]).expect("read").expect("present").record.to_envelope();
    // Closed, the vault has written every batch into the catalog's file and committed it. (Copied while
    // it runs, the file may hold the record only in pages of a commit not yet finished, which the open
    // rolls back and the journal's replay restores: no damage to find.)
    let needle = &envelope[40..104];
    let anchor = f.anchor.public_key();
    let Fixture { dir, vault, .. } = f;
    drop(vault);
    let work = tempfile::tempdir().expect("tempdir");
    let data = work.path().join("data");
    copy_dir(dir.path(), &data);

    // Flip one bit inside a record's envelope, where the catalog's file keeps it: in every copy, since a
    // copy-on-write file may keep stale ones in free pages, and damage there harms nothing.
    let catalog = data.join("store/catalog.redb");
    let mut bytes = std::fs::read(&catalog).expect("catalog file");
    let positions: Vec<usize> =
        bytes.windows(needle.len()).enumerate().filter(|(_, w)| *w == needle).map(|(at, _)| at).collect();
    assert!(!positions.is_empty(), "the record is in the catalog's file");
    for position in positions {
        bytes[position + 10] ^= 0x01;
    }
    std::fs::write(&catalog, &bytes).expect("damage the catalog's file");
    let packs_before = packs_state(&data);

    // The vault refuses to open, names the gap, and changes nothing.
    let config = kho::vault::VaultConfig::new(&data, vec![anchor.clone()]);
    let error = kho::vault::Vault::open(config.clone()).err().expect("a damaged catalog must not open silently");
    let message = error.to_string();
    assert!(message.contains("does not open") && message.contains("--recover"), "{message}");
    assert_eq!(packs_state(&data), packs_before, "a refused open must not touch the packs");
    assert!(
        !data.join("store/quarantine").exists()
            || std::fs::read_dir(data.join("store/quarantine")).expect("q").next().is_none()
    );

    // With the recovery flag, every document comes back, byte for byte, and no pack lost a byte.
    let mut config = config;
    config.store.recover = true;
    let vault = kho::vault::Vault::open(config).expect("recovery opens");
    assert!(vault.open_report().batches_replayed > 0, "{:?}", vault.open_report());
    for (id, content) in ids.iter().zip(&documents) {
        let view = vault.record(id).expect("read").unwrap_or_else(|| panic!("record {id} is still lost"));
        assert_eq!(&read_all(&vault, &view.record.body().blake3, None), content);
    }
    let packs_after = packs_state(&data);
    for ((path, before, _), (_, after, _)) in packs_before.iter().zip(&packs_after) {
        assert!(after >= before, "{} shrank from {before} to {after} bytes", path.display());
    }
    drop(vault);
    // And it opens normally from now on.
    let vault =
        kho::vault::Vault::open(kho::vault::VaultConfig::new(&data, vec![anchor])).expect("opens after recovery");
    assert_eq!(vault.open_report().batches_replayed, 0);
    drop(work);
}

/// Issue: a store put back from an old copy (catalog, journal and packs all older) opens without a word,
/// since nothing inside it is inconsistent. The newest checkpoint is kept outside the store, so the open
/// is refused, naming the missing entries; a store with another history is refused too.
#[test]
fn a_store_behind_or_beside_the_kept_checkpoint_is_refused_naming_the_gap_and_nothing_changes() {
    let f = fixture();
    for seed in 0..3 {
        deposit(&f, &document(10_000, 900 + seed, true));
    }
    f.vault.sign_checkpoint().expect("checkpoint");
    let f = f.reopen();
    let early_size = f.vault.log_size();
    let early = tempfile::tempdir().expect("tempdir");
    copy_dir(f.dir.path(), early.path());
    for seed in 3..5 {
        deposit(&f, &document(10_000, 900 + seed, true));
    }
    let kept = f.vault.sign_checkpoint().expect("checkpoint").expect("signed").checkpoint;
    assert!(kept.size > early_size);
    let data = f.dir.path().to_owned();
    let Fixture { dir, anchor, vault, .. } = f;
    drop(vault);
    let kept_file = data.join(kho::vault::KEPT_CHECKPOINT_FILE);
    let kept_note = std::fs::read(&kept_file).expect("the checkpoint is kept outside the store");
    let put_back = |from: &Path| {
        std::fs::remove_dir_all(data.join("store")).expect("remove store");
        copy_dir(&from.join("store"), &data.join("store"));
    };
    let config = kho::vault::VaultConfig::new(&data, vec![anchor.public_key()]);

    // The old copy: every entry after it is missing.
    put_back(early.path());
    let error = kho::vault::Vault::open(config.clone()).err().expect("a store behind its checkpoint must not open");
    assert!(
        matches!(error, kho::vault::OpenError::LogBehindCheckpoint { kept: k, found, .. } if k == kept.size && found == early_size),
        "{error}"
    );
    let message = error.to_string();
    assert!(message.contains(&format!("log entries {early_size}..{} are missing", kept.size - 1)), "{message}");
    assert_eq!(std::fs::read(&kept_file).expect("kept"), kept_note, "a refused open changes nothing");

    // Another history from the same copy, longer than the checkpoint: the roots differ.
    let other = kho::vault::Vault::open(kho::vault::VaultConfig::new(early.path(), vec![anchor.public_key()]))
        .expect("the copy opens on its own");
    let g = Fixture { dir: early, anchor: key(1), issuer: key(2), other_issuer: key(3), vault: other, memory: None };
    for seed in 0..4 {
        deposit(&g, &document(10_000, 950 + seed, true));
    }
    assert!(g.vault.log_size() > kept.size);
    let Fixture { dir: early, vault: other, .. } = g;
    drop(other);
    put_back(early.path());
    let error = kho::vault::Vault::open(config).err().expect("a store with another history must not open");
    assert!(
        matches!(error, kho::vault::OpenError::LogContradictsCheckpoint { size, .. } if size == kept.size),
        "{error}"
    );
    assert!(error.to_string().contains("the store's root at that size is"), "{error}");
    drop(dir);
}
