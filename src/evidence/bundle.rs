//! The evidence bundle archive (docs/FORMAT.md section 5): a plain ustar file, written in one pass from
//! the vault's evidence with the documents streamed through, and read back in one pass with the
//! documents hashed as they go by (never held in memory).

use std::collections::BTreeMap;
use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::ids::{format_unix_ms, Digest};
use crate::log::Hash;
use crate::statement::StatementBody;
use crate::vault::{Evidence, ExportScope, Receipted};

/// The first file of every bundle.
pub const MANIFEST_PATH: &str = "manifest.json";
pub const CHECKPOINT_PATH: &str = "checkpoint";
pub const VAULT_CERTIFICATE_PATH: &str = "vault-key.kho-cert";
/// Log entries with their inclusion proofs, and the owner-map proof.
pub const LOG_PATH: &str = "log.json";
pub const ACCESS_LOG_PATH: &str = "access-log.json";
pub const BUNDLE_FORMAT: &str = "kho-bundle";
pub const BUNDLE_VERSION: u32 = 1;
/// Largest file other than a document a reader accepts (statements are at most 64 KiB; the log and
/// access-log files of a large store are the big ones).
pub const BUNDLE_FILE_SIZE_BYTES_MAX: u64 = 256 * 1024 * 1024;
/// Most files a reader accepts in one bundle.
pub const BUNDLE_FILE_COUNT_MAX: usize = 4_000_000;
const TAR_BLOCK_BYTES: u64 = 512;
/// ustar's name field; every path of the layout fits in it, which keeps the archive's length exact.
const TAR_NAME_BYTES_MAX: usize = 100;

/// The manifest: what the bundle holds and where. It is an index, not evidence: every claim a verifier
/// relies on is checked against signed bytes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    /// `owner` (a whole store) or `record` (one record's evidence).
    pub scope: String,
    pub owner: String,
    pub record: Option<String>,
    pub created_at: String,
    pub log_origin: String,
    /// The vault's public key (hex), which signs receipts and checkpoints.
    pub vault_key: String,
    pub checkpoint_size: u64,
    /// The trust anchors the vault was configured with (hex public keys).
    pub trust_anchors: Vec<String>,
    pub records: Vec<ManifestRecord>,
    pub certificates: Vec<String>,
    /// How the checkpoint stood with the vault's witnesses when it was exported (absent in bundles of
    /// vaults that had none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub witnesses: Option<ManifestWitnesses>,
    /// The X.509 roots the vault trusts, when it has any: where each root's certificate is in the
    /// bundle and how the agency code is read from certificates under it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub x509_roots: Vec<ManifestRoot>,
    /// The keys the vault signed with before `vault_key`, oldest first (absent when it never rotated).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired_vault_keys: Vec<ManifestRetiredKey>,
}

/// An earlier vault key: where its handover note is (the checkpoint at the rotation, signed by it and
/// by its successor) and the consistency proof from that checkpoint to the bundle's.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ManifestRetiredKey {
    pub key: String,
    /// `retired-keys/NNNN.handover.note`.
    pub handover: String,
    pub consistency: Vec<String>,
}

/// A configured X.509 root and its agency mapping.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ManifestRoot {
    /// `x509/roots/<sha256>.der`.
    pub certificate: String,
    /// The dotted OID of the subject attribute that holds the agency code.
    pub agency_attribute: String,
    pub agency_prefix: String,
}

/// The checkpoint's cosignatures as the vault counted them, and the witnesses it was configured with.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ManifestWitnesses {
    pub cosigned: usize,
    pub quorum: usize,
    pub below_quorum: bool,
    /// The witnesses' cosigner verifier keys.
    pub keys: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ManifestRecord {
    pub id: String,
    pub title: String,
    pub document_type: String,
    pub issuer_agency: String,
    pub media_type: String,
    pub document: String,
}

/// Paths of the layout.
pub fn retired_handover_path(index: usize) -> String {
    format!("retired-keys/{:04}.handover.note", index + 1)
}

pub fn record_dir(id: &Digest) -> String {
    format!("records/{id}")
}

pub fn certificate_dir(id: &Digest) -> String {
    format!("certs/{id}")
}

/// The document file of a record: `document` with an extension a desktop opens.
pub fn document_path(id: &Digest, media_type: &str) -> String {
    let extension = match media_type {
        "application/pdf" => "pdf",
        "image/jpeg" => "jpg",
        "image/png" => "png",
        "image/tiff" => "tif",
        "application/xml" | "text/xml" => "xml",
        "application/json" => "json",
        "text/plain" => "txt",
        _ => "bin",
    };
    format!("{}/document.{extension}", record_dir(id))
}

/// A validation (kind 10) of an X.509 signer, by its own id, and its receipt.
pub fn validation_paths(validation: &Digest) -> (String, String) {
    statement_paths(VALIDATIONS_DIR, &validation.to_hex(), "kho-validation")
}

pub const VALIDATIONS_DIR: &str = "validations";

/// The detached CMS signature (DER) a record's document was deposited with.
pub fn detached_signature_path(record: &Digest) -> String {
    format!("{}/signature.p7s", record_dir(record))
}

/// A CRL or OCSP response (DER) a validation used, by its SHA-256.
pub fn x509_evidence_path(sha256: &Digest) -> String {
    format!("x509/evidence/{sha256}.der")
}

/// A configured X.509 root certificate (DER), by its SHA-256.
pub fn x509_root_path(sha256: &Digest) -> String {
    format!("x509/roots/{sha256}.der")
}

/// The statement and receipt files of a receipted statement in `dir` under `name`.
pub fn statement_paths(dir: &str, name: &str, suffix: &str) -> (String, String) {
    (format!("{dir}/{name}.{suffix}"), format!("{dir}/{name}.kho-receipt"))
}

pub const RECORD_FILE: (&str, &str) = ("record", "kho-record");
pub const REVOCATION_FILE: (&str, &str) = ("revocation", "kho-revocation");
pub const CERTIFICATION_FILE: (&str, &str) = ("certified-copy", "kho-copy");
pub const SUPERSEDED_BY_FILE: (&str, &str) = ("superseded-by", "kho-record");
pub const CERTIFICATE_FILE: (&str, &str) = ("certificate", "kho-cert");
pub const CERTIFICATE_REVOCATION_FILE: (&str, &str) = ("revocation", "kho-revocation");

enum Source {
    Bytes(Vec<u8>),
    Document { blake3: Digest, size: u64 },
}

/// A bundle laid out and ready to stream: every file's path and size is known, so its length is too.
pub struct BundlePlan {
    files: Vec<(String, Source)>,
    mtime: u64,
}

impl BundlePlan {
    /// Lays out `evidence` as of `created_at_ms`.
    pub fn new(evidence: &Evidence, created_at_ms: i64) -> BundlePlan {
        let mut files: Vec<(String, Source)> = Vec::new();
        let mut add = |path: String, bytes: Vec<u8>| files.push((path, Source::Bytes(bytes)));
        let (scope, record) = match &evidence.scope {
            ExportScope::Owner(_) => ("owner", None),
            ExportScope::Record(id) => ("record", Some(id.to_hex())),
        };
        let manifest = Manifest {
            format: BUNDLE_FORMAT.into(),
            version: BUNDLE_VERSION,
            scope: scope.into(),
            owner: evidence.owner.to_string(),
            record,
            created_at: format_unix_ms(created_at_ms),
            log_origin: evidence.origin.clone(),
            vault_key: hex::encode(evidence.vault_key.raw_bytes()),
            checkpoint_size: evidence.checkpoint.checkpoint.size,
            trust_anchors: evidence.trust_anchors.iter().map(|key| hex::encode(key.raw_bytes())).collect(),
            witnesses: (!evidence.witnesses.is_empty()).then(|| ManifestWitnesses {
                cosigned: evidence.checkpoint.witnessed.cosigned,
                quorum: evidence.checkpoint.witnessed.quorum,
                below_quorum: evidence.checkpoint.witnessed.below_quorum(),
                keys: evidence.witnesses.iter().map(ToString::to_string).collect(),
            }),
            records: evidence
                .records
                .iter()
                .map(|r| {
                    let body = r.record.statement.body();
                    let id = r.record.statement.id();
                    ManifestRecord {
                        id: id.to_hex(),
                        title: body.title.to_string(),
                        document_type: body.document_type.to_string(),
                        issuer_agency: body.issuer_agency.to_string(),
                        media_type: body.media_type.to_string(),
                        document: document_path(&id, body.media_type.as_str()),
                    }
                })
                .collect(),
            certificates: evidence.certificates.iter().map(|c| c.certificate.id().to_hex()).collect(),
            x509_roots: evidence
                .x509_roots
                .iter()
                .map(|anchor| ManifestRoot {
                    certificate: x509_root_path(&Digest(anchor.certificate.fingerprint())),
                    agency_attribute: anchor.agency_attribute.to_string(),
                    agency_prefix: anchor.agency_prefix.clone(),
                })
                .collect(),
            retired_vault_keys: evidence
                .retired_keys
                .iter()
                .enumerate()
                .map(|(i, retired)| ManifestRetiredKey {
                    key: hex::encode(retired.key.raw_bytes()),
                    handover: retired_handover_path(i),
                    consistency: retired.consistency.iter().map(hex::encode).collect(),
                })
                .collect(),
        };
        add(MANIFEST_PATH.into(), pretty(&manifest));
        for (i, retired) in evidence.retired_keys.iter().enumerate() {
            add(retired_handover_path(i), retired.handover.clone().into_bytes());
        }
        add(CHECKPOINT_PATH.into(), evidence.checkpoint.note.clone().into_bytes());
        if let Some(certificate) = &evidence.vault_certificate {
            add(VAULT_CERTIFICATE_PATH.into(), certificate.to_envelope());
        }
        add(LOG_PATH.into(), pretty(&log_json(evidence)));
        if let Some(access_log) = &evidence.access_log {
            let events = access_log
                .events
                .iter()
                .map(|(index, event)| crate::json::access_event_json(*index, event))
                .collect::<Vec<_>>();
            add(ACCESS_LOG_PATH.into(), pretty(&json!({ "events": events })));
        }
        for view in &evidence.certificates {
            let dir = certificate_dir(&view.certificate.id());
            let certificate = Receipted { statement: view.certificate.clone(), receipt: view.receipt.clone() };
            add_receipted(&mut add, &dir, CERTIFICATE_FILE, &certificate);
            if let Some((statement, receipt)) = &view.revocation {
                let revocation = Receipted { statement: statement.clone(), receipt: receipt.clone() };
                add_receipted(&mut add, &dir, CERTIFICATE_REVOCATION_FILE, &revocation);
            }
        }
        for record in &evidence.records {
            let id = record.record.statement.id();
            let dir = record_dir(&id);
            add_receipted(&mut add, &dir, RECORD_FILE, &record.record);
            if let Some(revocation) = &record.revocation {
                add_receipted(&mut add, &dir, REVOCATION_FILE, revocation);
            }
            if let Some(certification) = &record.certification {
                add_receipted(&mut add, &dir, CERTIFICATION_FILE, certification);
            }
            if let Some(by) = &record.superseded_by {
                add_receipted(&mut add, &dir, SUPERSEDED_BY_FILE, by);
            }
        }
        for (id, validation) in &evidence.validations {
            let (path, receipt_path) = validation_paths(id);
            add(path, validation.statement.to_envelope());
            add(receipt_path, validation.receipt.to_envelope());
        }
        for (record, signature) in &evidence.detached_signatures {
            add(detached_signature_path(record), signature.clone());
        }
        for (sha256, der) in &evidence.x509_evidence {
            add(x509_evidence_path(sha256), der.clone());
        }
        for anchor in &evidence.x509_roots {
            add(x509_root_path(&Digest(anchor.certificate.fingerprint())), anchor.certificate.der().to_vec());
        }
        for record in &evidence.records {
            let body = record.record.statement.body();
            let path = document_path(&record.record.statement.id(), body.media_type.as_str());
            files.push((path, Source::Document { blake3: body.blake3, size: body.size_bytes }));
        }
        BundlePlan { files, mtime: u64::try_from(created_at_ms / 1000).unwrap_or(0) }
    }

    /// The archive's exact length in bytes: a header and padded data per file, then two zero blocks.
    pub fn size_bytes(&self) -> u64 {
        let padded = |size: u64| size.div_ceil(TAR_BLOCK_BYTES) * TAR_BLOCK_BYTES;
        self.files.iter().map(|(_, source)| TAR_BLOCK_BYTES + padded(source_size(source))).sum::<u64>()
            + 2 * TAR_BLOCK_BYTES
    }

    /// Writes the archive, reading each document through `open_document` (by BLAKE3) and calling
    /// `progress` with the bytes written so far.
    pub fn write<W: Write>(
        self,
        out: W,
        mut open_document: impl FnMut(&Digest) -> io::Result<Box<dyn Read>>,
        mut progress: impl FnMut(u64),
    ) -> io::Result<W> {
        let mut builder = tar::Builder::new(Counting { inner: out, written: 0 });
        for (path, source) in self.files {
            debug_assert!(path.len() <= TAR_NAME_BYTES_MAX, "{path} is longer than a ustar name");
            let mut header = tar::Header::new_ustar();
            header.set_path(&path)?;
            header.set_size(source_size(&source));
            header.set_mode(0o644);
            header.set_mtime(self.mtime);
            header.set_entry_type(tar::EntryType::Regular);
            header.set_cksum();
            match source {
                Source::Bytes(bytes) => builder.append(&header, bytes.as_slice())?,
                Source::Document { blake3, size } => {
                    let reader = open_document(&blake3)?;
                    // A reader that ends early would shift the archive: take exactly `size` and check.
                    let mut limited = reader.take(size);
                    builder.append(&header, &mut limited)?;
                    if limited.limit() != 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("document {blake3} ended early"),
                        ));
                    }
                }
            }
            progress(builder.get_ref().written);
        }
        let counting = builder.into_inner()?;
        progress(counting.written);
        Ok(counting.inner)
    }
}

fn source_size(source: &Source) -> u64 {
    match source {
        Source::Bytes(bytes) => bytes.len() as u64,
        Source::Document { size, .. } => *size,
    }
}

fn pretty<T: Serialize>(value: &T) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(value).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

fn add_receipted<T: StatementBody>(
    add: &mut impl FnMut(String, Vec<u8>),
    dir: &str,
    (name, suffix): (&str, &str),
    statement: &Receipted<T>,
) {
    let (statement_path, receipt_path) = statement_paths(dir, name, suffix);
    add(statement_path, statement.statement.to_envelope());
    add(receipt_path, statement.receipt.to_envelope());
}

fn hexes(hashes: &[Hash]) -> Vec<String> {
    hashes.iter().map(hex::encode).collect()
}

/// `log.json`: the entries the evidence relies on and, for a store, the owner's map proof and chain.
fn log_json(evidence: &Evidence) -> Value {
    let entries = evidence
        .entries
        .iter()
        .map(|(index, entry)| {
            json!({
                "index": index,
                "entry_hex": hex::encode(&entry.bytes),
                "inclusion": entry.inclusion.as_deref().map(hexes),
            })
        })
        .collect::<Vec<_>>();
    let completeness = evidence.access_log.as_ref().map(|log| {
        let proof = &log.completeness.evidence.map_proof;
        json!({
            "commitment_index": log.completeness.evidence.commitment_index,
            "chain": log.chain.iter().map(|(index, _)| index).collect::<Vec<_>>(),
            "map_proof": {
                "siblings": hexes(&proof.siblings),
                "leaf": proof.leaf.as_ref().map(|(key, value)| json!({
                    "key": hex::encode(key),
                    "value": hex::encode(value),
                })),
            },
        })
    });
    json!({
        "checkpoint_size": evidence.checkpoint.checkpoint.size,
        "entries": entries,
        "completeness": completeness,
    })
}

struct Counting<W> {
    inner: W,
    written: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(bytes)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A document as read from a bundle: its hashes and size, computed while it streamed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DocumentDigest {
    pub blake3: Digest,
    pub sha256: Digest,
    pub size: u64,
}

/// A bundle read back: its small files in memory, its documents as digests.
#[derive(Debug, Default)]
pub struct Bundle {
    pub files: BTreeMap<String, Vec<u8>>,
    pub documents: BTreeMap<String, DocumentDigest>,
}

/// Why a file cannot be read as a bundle at all (a damaged part of a readable bundle is a verdict, not
/// this).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    #[error("cannot read the archive: {0}")]
    Io(#[from] io::Error),
    #[error("not a Kho bundle: {0}")]
    NotABundle(String),
    #[error("the archive holds {path} twice")]
    Duplicate { path: String },
    #[error("{path} is {size} bytes, more than the {max} a bundle's metadata file may hold")]
    TooLarge { path: String, size: u64, max: u64 },
    #[error("the archive holds more than {BUNDLE_FILE_COUNT_MAX} files")]
    TooManyFiles,
}

impl Bundle {
    /// Reads an archive: regular files only, each path once; `records/<id>/document.*` files are hashed
    /// as they stream by, the others kept (each at most `BUNDLE_FILE_SIZE_BYTES_MAX`).
    pub fn read(reader: impl Read, mut progress: impl FnMut(u64)) -> Result<Bundle, BundleError> {
        let mut archive = tar::Archive::new(reader);
        let mut bundle = Bundle::default();
        let mut read_bytes = 0u64;
        for (count, entry) in archive.entries()?.enumerate() {
            if count >= BUNDLE_FILE_COUNT_MAX {
                return Err(BundleError::TooManyFiles);
            }
            let mut entry = entry?;
            let path = String::from_utf8(entry.path_bytes().into_owned())
                .map_err(|_| BundleError::NotABundle("a file name is not UTF-8".into()))?;
            match entry.header().entry_type() {
                tar::EntryType::Regular => {}
                tar::EntryType::Directory => continue,
                other => return Err(BundleError::NotABundle(format!("{path} is a {other:?}, not a regular file"))),
            }
            if count == 0 && path != MANIFEST_PATH {
                return Err(BundleError::NotABundle(format!("the first file is {path}, not {MANIFEST_PATH}")));
            }
            let size = entry.size();
            if bundle.files.contains_key(&path) || bundle.documents.contains_key(&path) {
                return Err(BundleError::Duplicate { path });
            }
            if is_document_path(&path) {
                let digest = hash_document(&mut entry)?;
                bundle.documents.insert(path, digest);
            } else {
                if size > BUNDLE_FILE_SIZE_BYTES_MAX {
                    return Err(BundleError::TooLarge { path, size, max: BUNDLE_FILE_SIZE_BYTES_MAX });
                }
                let mut bytes = Vec::with_capacity(size as usize);
                entry.read_to_end(&mut bytes)?;
                bundle.files.insert(path, bytes);
            }
            read_bytes += TAR_BLOCK_BYTES + size;
            progress(read_bytes);
        }
        if bundle.files.is_empty() {
            return Err(BundleError::NotABundle("the archive is empty".into()));
        }
        Ok(bundle)
    }

    /// The manifest, parsed.
    pub fn manifest(&self) -> Result<Manifest, BundleError> {
        let bytes = self.files.get(MANIFEST_PATH).ok_or_else(|| BundleError::NotABundle("no manifest".into()))?;
        let manifest: Manifest = serde_json::from_slice(bytes)
            .map_err(|e| BundleError::NotABundle(format!("{MANIFEST_PATH} does not parse: {e}")))?;
        if manifest.format != BUNDLE_FORMAT || manifest.version != BUNDLE_VERSION {
            return Err(BundleError::NotABundle(format!(
                "format {} version {}; this build reads {BUNDLE_FORMAT} version {BUNDLE_VERSION}",
                manifest.format, manifest.version
            )));
        }
        Ok(manifest)
    }
}

fn is_document_path(path: &str) -> bool {
    path.strip_prefix("records/")
        .and_then(|rest| rest.split_once('/'))
        .is_some_and(|(id, name)| id.len() == 64 && name.starts_with("document.") && !name.contains('/'))
}

/// Size, BLAKE3 and SHA-256 of everything `reader` gives, in one pass.
pub fn hash_document(reader: &mut impl Read) -> io::Result<DocumentDigest> {
    use sha2::Digest as _;
    let mut blake3 = blake3::Hasher::new();
    let mut sha256 = sha2::Sha256::new();
    let mut size = 0u64;
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = reader.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        blake3.update(&buffer[..n]);
        sha256.update(&buffer[..n]);
        size += n as u64;
    }
    Ok(DocumentDigest { blake3: Digest(*blake3.finalize().as_bytes()), sha256: Digest(sha256.finalize().into()), size })
}

/// Whether `head` (the first bytes of a file) starts a bundle: a ustar header naming the manifest.
pub fn looks_like_bundle(head: &[u8]) -> bool {
    head.len() >= 263
        && head.starts_with(MANIFEST_PATH.as_bytes())
        && head[MANIFEST_PATH.len()] == 0
        && &head[257..262] == b"ustar"
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file a record or certificate folder may hold has a name a plain ustar header can carry.
    #[test]
    fn every_statement_file_name_fits_a_ustar_name() {
        let id = Digest([0xab; 32]);
        let files = [RECORD_FILE, REVOCATION_FILE, CERTIFICATION_FILE, SUPERSEDED_BY_FILE];
        for (name, suffix) in files {
            let (statement, receipt) = statement_paths(&record_dir(&id), name, suffix);
            assert!(statement.len() <= TAR_NAME_BYTES_MAX && receipt.len() <= TAR_NAME_BYTES_MAX, "{statement}");
        }
        for (name, suffix) in [CERTIFICATE_FILE, CERTIFICATE_REVOCATION_FILE] {
            let (statement, receipt) = statement_paths(&certificate_dir(&id), name, suffix);
            assert!(statement.len() <= TAR_NAME_BYTES_MAX && receipt.len() <= TAR_NAME_BYTES_MAX, "{statement}");
        }
        assert!(document_path(&id, "application/pdf").len() <= TAR_NAME_BYTES_MAX);
        let (validation, receipt) = validation_paths(&id);
        for path in [validation, receipt, x509_evidence_path(&id), x509_root_path(&id)] {
            assert!(path.len() <= TAR_NAME_BYTES_MAX, "{path}");
        }
    }
}
