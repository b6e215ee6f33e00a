//! Crash recovery with the real binary: `kho import --jobs 4` is killed with SIGKILL right after it
//! acknowledged its k-th document of the round (k random, so with up to four deposits in flight), many
//! times. After each kill the vault is reopened and every document the importer reported as
//! stored must be present, byte-exact and verified; nothing half-written may be visible; and a final
//! uninterrupted import completes the rest (the import is resumable).
//!
//! KHO_CRASH_ITERATIONS sets the number of kills (default 20); KHO_CRASH_SEED replays a run.

mod common;

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Read as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;
use kho::ids::{Digest, OwnerId};
use kho::log;
use kho::vault::{ListFilter, Status, Vault, VaultConfig, PAGE_SIZE_MAX};

const DOCUMENTS_PER_ROUND: usize = 60;
const OWNERS: [&str; 3] = [OWNER, OTHER_OWNER, "0101234567"];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

/// Writes a round's documents and their signed records into `folder`.
fn write_round(folder: &Path, round: usize, issuer: &kho::statement::SecretKey, rng: &mut Rng) {
    std::fs::create_dir_all(folder).expect("round folder");
    for i in 0..DOCUMENTS_PER_ROUND {
        // Mostly small documents, some spanning several frames; mixed compressibility.
        let len = if rng.below(5) == 0 { 100_000 + rng.below(300_000) } else { 500 + rng.below(20_000) } as usize;
        let content = document(len, rng.next(), rng.below(2) == 0);
        let owner = OWNERS[(round + i) % OWNERS.len()];
        let file = folder.join(format!("doc-{i:03}.pdf"));
        std::fs::write(&file, &content).expect("write document");
        let mut path = file.into_os_string();
        path.push(kho::cli::RECORD_SUFFIX);
        std::fs::write(path, sign(record_for(&content, owner, AGENCY), issuer)).expect("write record");
    }
}

fn import_command(folder: &Path, data: &Path, anchor: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kho"));
    command.arg("import").arg(folder).arg("--data-dir").arg(data).arg("--anchor").arg(anchor).args([
        "--jobs",
        "4",
        "--verbose",
        // Checkpoints during the import, so that a kill lands between and around them.
        "--checkpoint-interval-ms",
        "5",
    ]);
    command
}

/// "stored <record id> <file>" lines: what the importer acknowledged.
fn acknowledged(stdout: &str) -> Vec<(Digest, PathBuf)> {
    stdout
        .lines()
        .filter_map(|line| line.strip_prefix("stored "))
        .map(|rest| {
            let (id, file) = rest.split_once(' ').expect("id and file");
            (Digest::parse_hex("id", id).expect("hex id"), PathBuf::from(file))
        })
        .collect()
}

/// Every acknowledged document is present and exact; everything visible is whole.
fn check_vault(data: &Path, anchor: &kho::statement::SecretKey, acked: &HashMap<Digest, PathBuf>) -> usize {
    let vault = Vault::open(VaultConfig::new(data, vec![anchor.public_key()])).expect("reopen after kill");
    for (id, file) in acked {
        let view = vault.record(id).expect("read record").unwrap_or_else(|| panic!("acknowledged {id} is lost"));
        assert_eq!(view.status, Status::Valid);
        let expected = std::fs::read(file).expect("original document");
        assert_eq!(read_all(&vault, &view.record.body().blake3, None), expected, "{id} differs");
    }
    // No partial deposit: every record an owner can see has its receipt and its whole, verified content.
    let mut visible = 0;
    for owner in OWNERS {
        let owner = OwnerId::parse(owner).expect("owner");
        let mut cursor = None;
        loop {
            let page =
                vault.list_owner(&owner, &ListFilter::default(), cursor.as_deref(), PAGE_SIZE_MAX).expect("list");
            for view in &page.records {
                assert_eq!(view.receipt.body().statement, view.id());
                let blake3 = view.record.body().blake3;
                let mut reader = vault.open_content(&blake3, None).expect("open").expect("content of a visible record");
                let mut sink = Vec::new();
                reader.read_to_end(&mut sink).expect("visible content verifies");
                assert_eq!(sink.len() as u64, view.record.body().size_bytes);
                visible += 1;
            }
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
    }
    assert!(visible >= acked.len());
    visible
}

/// The log after a kill: its root recomputed from the leaves is the root the vault's stored tree gives
/// (a new checkpoint signs it), and every checkpoint signed before the kill is a prefix of it: no
/// checkpoint ever covered an entry that the crash lost; every owner's chain links and every owner-map
/// commitment is the map of the entries before it. Returns whether the killed import had signed a
/// checkpoint of its own (so the kill came after one).
fn check_log(data: &Path, anchor: &kho::statement::SecretKey, earlier: &mut Vec<(u64, [u8; 32])>) -> bool {
    let vault = Vault::open(VaultConfig::new(data, vec![anchor.public_key()])).expect("reopen after kill");
    let size = vault.log_size();
    let mut tree = log::MemoryTree::new();
    for index in 0..size {
        tree.push(log::leaf_hash(&vault.log_entry(index).expect("read").expect("every durable entry is there")));
    }
    let latest = vault.latest_checkpoint().expect("read checkpoint");
    let previous_size = earlier.last().map_or(0, |(size, _)| *size);
    let import_signed = latest.as_ref().is_some_and(|latest| latest.checkpoint.size > previous_size);
    if let Some(latest) = &latest {
        earlier.push((latest.checkpoint.size, latest.checkpoint.root));
    }
    for (checkpoint_size, root) in earlier.iter() {
        assert!(*checkpoint_size <= size, "a checkpoint of {checkpoint_size} entries survives a log of {size}");
        assert_eq!(&tree.root(*checkpoint_size), root, "the recovered log contradicts checkpoint {checkpoint_size}");
    }
    let signed = vault.sign_checkpoint().expect("sign after reopen").expect("a checkpoint");
    // Signing first commits the owner map (one more entry, unless the log ends in a commitment).
    let size = vault.log_size();
    assert!(signed.checkpoint.size == size && size >= tree.size() && size <= tree.size() + 1);
    let mut rebuild = log::chain::Rebuild::new();
    for index in 0..size {
        let bytes = vault.log_entry(index).expect("read").expect("every durable entry is there");
        if index >= tree.size() {
            tree.push(log::leaf_hash(&bytes));
        }
        rebuild.push(&bytes).unwrap_or_else(|e| panic!("owner chains and map after the kill: {e}"));
    }
    assert_eq!(signed.checkpoint.root, tree.root(size), "the stored tree differs from the leaves");
    earlier.push((signed.checkpoint.size, signed.checkpoint.root));
    import_signed
}

#[test]
fn sigkill_during_import_loses_nothing_acknowledged() {
    let iterations: usize = std::env::var("KHO_CRASH_ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let seed = std::env::var("KHO_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| kho::ids::now_unix_ms() as u64 | 1);
    eprintln!("crash test seed {seed} (set KHO_CRASH_SEED to replay)");
    let mut rng = Rng(seed);
    let work = tempfile::tempdir().expect("tempdir");
    let anchor = key(1);
    let issuer = key(2);
    let anchor_file = work.path().join("anchor.pub.pem");
    kho::keys::write_public_key(&anchor_file, &anchor.public_key()).expect("anchor file");
    let data = work.path().join("data");
    Vault::open(VaultConfig::new(&data, vec![anchor.public_key()]))
        .expect("create vault")
        .add_certificate(&current_certificate(&anchor, AGENCY, &issuer))
        .expect("certify issuer");
    let mut acked: HashMap<Digest, PathBuf> = HashMap::new();
    let mut checkpoints = Vec::new();
    let (mut partial_rounds, mut checkpointed_rounds) = (0, 0);
    for round in 0..iterations {
        let folder = work.path().join(format!("round-{round:03}"));
        write_round(&folder, round, &issuer, &mut rng);
        let mut child = import_command(&folder, &data, &anchor_file)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start kho import");
        // Kill right after the k-th acknowledgement: the other workers are mid-deposit at that moment.
        let kill_after = 1 + rng.below(DOCUMENTS_PER_ROUND as u64 - 5) as usize;
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut stdout = String::new();
        let mut seen = 0;
        for line in lines.by_ref() {
            let line = line.expect("stdout line");
            seen += usize::from(line.starts_with("stored "));
            stdout.push_str(&line);
            stdout.push('\n');
            if seen == kill_after {
                break;
            }
        }
        let finished_early = matches!(child.try_wait(), Ok(Some(_)));
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        // Lines printed between the k-th and the kill are acknowledgements too.
        for line in lines {
            stdout.push_str(&line.expect("stdout line"));
            stdout.push('\n');
        }
        let this_round = acknowledged(&stdout);
        if !finished_early && this_round.len() < DOCUMENTS_PER_ROUND {
            partial_rounds += 1;
        }
        eprintln!("round {round}: killed after acknowledgement {kill_after}; {} acknowledged", this_round.len());
        acked.extend(this_round);
        checkpointed_rounds += usize::from(check_log(&data, &anchor, &mut checkpoints));
        let visible = check_vault(&data, &anchor, &acked);
        eprintln!("round {round}: {} acknowledged in total, {visible} visible", acked.len());
    }
    // A round where every document was acknowledged before the kill tested nothing.
    assert!(partial_rounds * 4 >= iterations * 3, "only {partial_rounds} of {iterations} rounds were cut mid-import");
    eprintln!("{checkpointed_rounds} of {iterations} killed imports had signed checkpoints");
    // And the kills came after checkpoints signed by the import itself, in most rounds.
    assert!(
        checkpointed_rounds * 2 >= iterations,
        "the import signed a checkpoint in only {checkpointed_rounds} rounds"
    );

    // Resume every round without interruption: everything ends up stored exactly once.
    let mut total = 0;
    for round in 0..iterations {
        let folder = work.path().join(format!("round-{round:03}"));
        let output = import_command(&folder, &data, &anchor_file).output().expect("resume import");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stdout));
        acked.extend(acknowledged(&String::from_utf8_lossy(&output.stdout)));
        total += DOCUMENTS_PER_ROUND;
    }
    // Some deposits were durable but killed before their "stored" line; the resume skipped them as
    // already present, so the acknowledged set is smaller than the total, and all are visible.
    assert!(acked.len() <= total);
    assert_eq!(check_vault(&data, &anchor, &acked), total);
}
