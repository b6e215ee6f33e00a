//! Checking a bundle offline: the vault key and checkpoint against trust anchors, every log entry
//! against the checkpoint, every record with the vault's own acceptance rule (docs/FORMAT.md 1.5), its
//! status from signed evidence, its document against its hashes, and for a store, that the access log
//! and the records are all of the owner's entries up to the owner-map commitment.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::bundle::{self, Bundle, DocumentDigest, Manifest};
use super::{check_acceptance, Check, Issuer, VaultTrust};
use crate::ids::{format_unix_ms, Code, Date, Digest, OwnerId};
use crate::log::chain::{verify_completeness, CompletenessEvidence};
use crate::log::checkpoint::{self, Checkpoint};
use crate::log::map::MapProof;
use crate::log::{leaf_hash, verify_inclusion, Entry, Hash, KIND_ACCESS_EVENT, KIND_OWNER_MAP};
use crate::statement::{
    CertificateRevocation, CopyCertification, KeyCertificate, PublicKey, Receipt, Record, RecordRevocation,
    SignatureValidation, Signed, StatementBody, VaultKeyCertificate, VerifiedEnvelopes, X509Signer,
};
use crate::x509::{Anchor, Certificate, RevocationEvidence, TrustStore};

const KIND_RECORD: u8 = <Record as StatementBody>::KIND;
const KIND_RECORD_REVOCATION: u8 = <RecordRevocation as StatementBody>::KIND;
const KIND_COPY_CERTIFICATION: u8 = <CopyCertification as StatementBody>::KIND;
const KIND_SIGNATURE_VALIDATION: u8 = <SignatureValidation as StatementBody>::KIND;

/// The statements of the owner's chain that the bundle's record folders showed to be present.
struct StatementIds {
    records: BTreeSet<Digest>,
    revocations: BTreeSet<Digest>,
    certifications: BTreeSet<Digest>,
}

/// What a document in a bundle turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Every check passed and the record is in force today.
    Valid,
    NotYetValid,
    Expired,
    Superseded,
    Revoked,
    /// Uploaded by its owner (signed by the vault key): authentic as an upload, not legally valid.
    SelfUploaded,
    /// An upload an agency certified as a copy of an original.
    CertifiedCopy,
    /// No certificate from a trusted anchor covers the signer when the vault accepted the record.
    UnknownIssuer,
    /// A signature, receipt or log proof does not hold.
    ProofFails,
    /// The document's bytes (or the record's) are not what was signed.
    Tampered,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Valid => "authentic and valid",
            Verdict::NotYetValid => "authentic, not yet valid",
            Verdict::Expired => "authentic, expired",
            Verdict::Superseded => "authentic, superseded",
            Verdict::Revoked => "authentic, revoked",
            Verdict::SelfUploaded => "uploaded by its owner, not legally valid",
            Verdict::CertifiedCopy => "authentic certified copy",
            Verdict::UnknownIssuer => "unknown issuer",
            Verdict::ProofFails => "proof fails",
            Verdict::Tampered => "tampered",
        }
    }

    /// Whether the evidence failed (as opposed to proving a status).
    pub fn is_failure(self) -> bool {
        self >= Verdict::UnknownIssuer
    }
}

/// One document's verdict and the reasons behind it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DocumentReport {
    pub id: String,
    pub title: String,
    pub verdict: Verdict,
    pub reasons: Vec<String>,
}

/// What a bundle's verification found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub owner: String,
    pub scope: String,
    /// Checks of the bundle as a whole: trust, checkpoint, log, completeness.
    pub checks: Vec<Check>,
    pub documents: Vec<DocumentReport>,
}

impl Report {
    /// Whether anything failed: a bundle-level check or a document's evidence.
    pub fn failed(&self) -> bool {
        self.checks.iter().any(|c| !c.passed) || self.documents.iter().any(|d| d.verdict.is_failure())
    }
}

/// What the verifier trusts from outside the bundle.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Trust anchors given by the caller; `None` takes the bundle's own (and says so).
    pub anchors: Option<Vec<PublicKey>>,
    /// The vault key, known out of band; otherwise the bundle's vault key certificate must chain to an
    /// anchor.
    pub vault_key: Option<PublicKey>,
    /// The day statuses are judged on (default: today in Vietnam).
    pub today: Option<Date>,
    /// Witnesses (cosigner keys) known out of band whose cosignatures the checkpoint must carry.
    pub witnesses: Vec<checkpoint::VerifierKey>,
    /// How many of them must have cosigned; default a majority.
    pub quorum: Option<usize>,
    /// X.509 roots (DER) given by the caller; `None` takes the bundle's own (and says so). Either way
    /// each root's agency mapping is the bundle's.
    pub x509_roots: Option<Vec<Vec<u8>>>,
}

/// The checkpoint's cosignatures: checked against the witnesses given, or, with none given, reported
/// as the bundle states them (a checkpoint below its vault's quorum is marked, not failed).
fn witness_check(note: &str, manifest: &Manifest, options: &VerifyOptions, checks: &mut Checks) {
    let Ok(parsed) = checkpoint::Note::parse(note) else {
        return;
    };
    if options.witnesses.is_empty() {
        if let Some(stated) = &manifest.witnesses {
            let keys: Vec<_> = stated.keys.iter().filter_map(|k| checkpoint::VerifierKey::parse(k).ok()).collect();
            let verified = parsed.cosigners(&keys).len();
            checks.push(
                true,
                format!(
                "the checkpoint carries {verified} cosignature(s) that verify under the {} witness key(s) the bundle \
                 names (quorum {}{}); give --witness to check them against keys you trust",
                keys.len(),
                stated.quorum,
                if verified < stated.quorum { ", BELOW QUORUM" } else { "" }
            ),
            );
        }
        return;
    }
    let given = options.witnesses.len();
    let quorum = options.quorum.unwrap_or(crate::witness::majority(given));
    let cosigners = parsed.cosigners(&options.witnesses);
    let names: Vec<&str> = cosigners.iter().map(|w| w.name.as_str()).collect();
    checks.push(
        cosigners.len() >= quorum,
        format!(
            "the checkpoint is cosigned by {} of the {given} witnesses given (quorum {quorum}){}{}",
            cosigners.len(),
            if names.is_empty() { String::new() } else { format!(": {}", names.join(", ")) },
            if cosigners.len() < quorum { "; BELOW QUORUM" } else { "" }
        ),
    );
}

/// Checks everything in `bundle`.
pub fn verify_bundle(bundle: &Bundle, manifest: &Manifest, options: &VerifyOptions) -> Report {
    let mut checks = Checks::default();
    let today =
        options.today.unwrap_or_else(|| Date::at(crate::ids::now_unix_ms(), crate::vault::UTC_OFFSET_MINUTES_DEFAULT));
    // Every Ed25519 signature in the bundle checked together first (an auditor's bundle holds
    // thousands); each statement is still decoded and checked where it is used.
    let verified = VerifiedEnvelopes::new(bundle.files.len());
    verified.verify_batch(bundle.files.values().map(Vec::as_slice));
    let mut trust = establish_trust(bundle, &verified, manifest, options, &mut checks);
    let checkpoint = trust.as_ref().and_then(|trust| {
        let note = String::from_utf8_lossy(bundle.files.get(bundle::CHECKPOINT_PATH).map_or(&[][..], |b| b));
        match checkpoint::open(&note, &manifest.log_origin, &trust.vault.key) {
            Ok(checkpoint) => {
                checks.push(
                    checkpoint.size == manifest.checkpoint_size,
                    format!("the checkpoint of {} entries is signed by the vault key", checkpoint.size),
                );
                witness_check(&note, manifest, options, &mut checks);
                Some(checkpoint)
            }
            Err(error) => {
                checks.push(false, format!("the checkpoint does not verify under the vault key: {error}"));
                None
            }
        }
    });
    if let (Some(trust), Some(checkpoint)) = (&mut trust, &checkpoint) {
        trust.vault.retired = retired_keys(bundle, manifest, &trust.vault.key, checkpoint, &mut checks);
    }
    let log = LogEvidence::read(bundle, checkpoint.as_ref(), &mut checks);
    let x509 = x509_roots(bundle, manifest, options, &mut checks);
    let validations = read_validations(bundle, &verified);
    let context = Context {
        bundle,
        verified: &verified,
        trust: trust.as_ref(),
        log: &log,
        x509: &x509,
        validations: &validations,
    };
    let certificates = context.certificates(manifest);

    let owner = OwnerId::parse(&manifest.owner).ok();
    let mut documents = Vec::new();
    let mut record_ids = BTreeSet::new();
    let mut revocation_ids = BTreeSet::new();
    let mut certification_ids = BTreeSet::new();
    for listed in &manifest.records {
        let (report, ids) = context.record(listed, owner.as_ref(), &certificates, today);
        record_ids.extend(ids.record);
        revocation_ids.extend(ids.revocation);
        certification_ids.extend(ids.certification);
        documents.push(report);
    }
    // Nothing in the archive the manifest does not account for.
    let listed: BTreeSet<String> = manifest.records.iter().map(|r| format!("records/{}/", r.id)).collect();
    for path in bundle.files.keys().chain(bundle.documents.keys()) {
        if path.starts_with("records/") && !listed.iter().any(|prefix| path.starts_with(prefix)) {
            checks.push(false, format!("{path} belongs to no record the manifest lists"));
        }
    }
    if manifest.scope == "owner" {
        match (&owner, &checkpoint) {
            (Some(owner), Some(checkpoint)) => {
                let ids = StatementIds {
                    records: record_ids,
                    revocations: revocation_ids,
                    certifications: certification_ids,
                };
                context.completeness(owner, checkpoint, &ids, &mut checks)
            }
            _ => {
                checks.push(false, "the access log's completeness cannot be checked without a valid checkpoint".into())
            }
        }
    }
    Report { owner: manifest.owner.clone(), scope: manifest.scope.clone(), checks: checks.0, documents }
}

#[derive(Default)]
struct Checks(Vec<Check>);

impl Checks {
    fn push(&mut self, passed: bool, what: String) {
        self.0.push(Check { passed, what });
    }
}

/// Decodes a statement file, or says why not.
/// Signatures come from `verified` when the bundle's batch check passed them (else they are checked here).
fn read_statement<T: StatementBody>(
    bundle: &Bundle,
    verified: &VerifiedEnvelopes,
    path: &str,
) -> Result<Signed<T>, String> {
    let bytes = bundle.files.get(path).ok_or_else(|| format!("{path} is missing"))?;
    Signed::<T>::from_envelope_remembered(bytes, verified)
        .map_err(|e| format!("{path} is not a valid signed {}: {e}", T::NAME))
}

struct Trust {
    vault: VaultTrust,
    anchors: Vec<PublicKey>,
}

fn establish_trust(
    bundle: &Bundle,
    verified: &VerifiedEnvelopes,
    manifest: &Manifest,
    options: &VerifyOptions,
    checks: &mut Checks,
) -> Option<Trust> {
    let anchors = match &options.anchors {
        Some(anchors) => anchors.clone(),
        None => {
            let anchors: Vec<PublicKey> = manifest
                .trust_anchors
                .iter()
                .filter_map(|hex| hex::decode(hex).ok().and_then(|raw| PublicKey::from_raw(1, &raw).ok()))
                .collect();
            checks.push(
                !anchors.is_empty(),
                format!(
                    "trusting the bundle's own trust anchors {} (compare them with the published fingerprints, or \
                     give --anchor)",
                    anchors.iter().map(|a| a.fingerprint().to_hex()[..16].to_owned()).collect::<Vec<_>>().join(", ")
                ),
            );
            anchors
        }
    };
    let bundle_key = hex::decode(&manifest.vault_key).ok().and_then(|raw| PublicKey::from_raw(1, &raw).ok());
    let Some(key) = bundle_key else {
        checks.push(false, "the manifest's vault key is not an Ed25519 public key".into());
        return None;
    };
    if let Some(given) = &options.vault_key {
        checks.push(given == &key, format!("the bundle's vault key is the given one ({})", given.fingerprint()));
        return (given == &key).then_some(Trust { vault: VaultTrust::given(key), anchors });
    }
    match read_statement::<VaultKeyCertificate>(bundle, verified, bundle::VAULT_CERTIFICATE_PATH) {
        Err(error) => {
            checks.push(false, format!("the vault key is not trusted: {error}; give the vault key"));
            None
        }
        Ok(certificate) => {
            let body = certificate.body();
            let ok =
                anchors.contains(certificate.signer()) && body.subject == key && body.origin == manifest.log_origin;
            checks.push(
                ok,
                format!(
                    "the vault key {} is certified for log {} by trust anchor {} ({} to {})",
                    key.fingerprint().to_hex().get(..16).unwrap_or_default(),
                    body.origin,
                    certificate.signer().fingerprint().to_hex().get(..16).unwrap_or_default(),
                    format_unix_ms(body.valid_from_ms),
                    format_unix_ms(body.valid_until_ms)
                ),
            );
            ok.then_some(Trust {
                vault: VaultTrust { key, window: Some((body.valid_from_ms, body.valid_until_ms)), retired: Vec::new() },
                anchors,
            })
        }
    }
}

/// The vault's earlier keys the bundle lists, trusted back from the trusted current key: each handover
/// note must name the key that followed it (already trusted) and be signed by both, and be a prefix of
/// the bundle's checkpoint (its consistency proof). The chain stops at the first that fails.
fn retired_keys(
    bundle: &Bundle,
    manifest: &Manifest,
    current: &PublicKey,
    trusted: &checkpoint::Checkpoint,
    checks: &mut Checks,
) -> Vec<(PublicKey, u64)> {
    let mut retired = Vec::new();
    let (mut successor, mut successor_size) = (current.clone(), trusted.size);
    for listed in manifest.retired_vault_keys.iter().rev() {
        let handed_over = (|| {
            let key = hex::decode(&listed.key)
                .ok()
                .and_then(|raw| PublicKey::from_raw(1, &raw).ok())
                .ok_or("its key is not an Ed25519 public key")?;
            let note = bundle.files.get(&listed.handover).ok_or_else(|| format!("{} is missing", listed.handover))?;
            let note = std::str::from_utf8(note).map_err(|_| "its handover note is not text")?;
            let (by_it, named) =
                checkpoint::open_handover(note, &manifest.log_origin, &key).map_err(|e| e.to_string())?;
            if named != successor {
                return Err("its handover names another key than the one that followed".to_owned());
            }
            if by_it.size > successor_size {
                return Err("its handover is after the next key's".to_owned());
            }
            let proof = listed
                .consistency
                .iter()
                .map(|h| hex::decode(h).ok().and_then(|b| Hash::try_from(b).ok()))
                .collect::<Option<Vec<Hash>>>()
                .ok_or("its consistency proof is not hex hashes")?;
            if by_it.size == 0 {
                if by_it.root != crate::log::empty_root() {
                    return Err("a handover of size 0 must have the empty tree's root".to_owned());
                }
            } else {
                crate::log::verify_consistency(by_it.size, trusted.size, &by_it.root, &trusted.root, &proof)
                    .map_err(|e| format!("its handover is not a prefix of the checkpoint: {e}"))?;
            }
            Ok::<_, String>((key, by_it.size))
        })();
        match handed_over {
            Ok((key, size)) => {
                checks.push(
                    true,
                    format!(
                        "the earlier vault key {} handed over to {} at log size {size} (both signed that checkpoint,                          a prefix of this one)",
                        key.fingerprint().to_hex().get(..16).unwrap_or_default(),
                        successor.fingerprint().to_hex().get(..16).unwrap_or_default()
                    ),
                );
                successor = key.clone();
                successor_size = size;
                retired.push((key, size));
            }
            Err(reason) => {
                checks.push(false, format!("the earlier vault key {} is not trusted: {reason}", listed.key));
                break;
            }
        }
    }
    retired.reverse();
    retired
}

/// The X.509 roots statements may have been signed under: the bundle's own (said so), or those of them
/// the caller gave; each with the agency mapping the bundle states for it. Revocation is judged by the
/// evidence each validation names, and a certificate it had none for is reported, not refused (the
/// vault's policy may not have required it).
fn x509_roots(bundle: &Bundle, manifest: &Manifest, options: &VerifyOptions, checks: &mut Checks) -> TrustStore {
    let mut store = TrustStore::default();
    store.revocation.required = false;
    let given: Option<Vec<[u8; 32]>> =
        options.x509_roots.as_ref().map(|roots| roots.iter().map(|der| Digest::sha256(der).0).collect());
    for root in &manifest.x509_roots {
        let anchor = (|| {
            let der = bundle.files.get(&root.certificate).ok_or("it is missing")?;
            let certificate = Certificate::from_der(der).map_err(|e| e.to_string())?;
            if bundle::x509_root_path(&Digest(certificate.fingerprint())) != root.certificate {
                return Err("its name is not its SHA-256".to_owned());
            }
            let agency_attribute =
                root.agency_attribute.parse().map_err(|_| "its agency attribute is not an OID".to_owned())?;
            Ok::<_, String>(Anchor { certificate, agency_attribute, agency_prefix: root.agency_prefix.clone() })
        })();
        match anchor {
            Err(error) => checks.push(false, format!("the X.509 root {}: {error}", root.certificate)),
            Ok(anchor) => {
                if given.as_ref().is_none_or(|given| given.contains(&anchor.certificate.fingerprint())) {
                    store.anchors.push(anchor);
                }
            }
        }
    }
    let subjects: Vec<String> = store
        .anchors
        .iter()
        .map(|a| format!("{} ({}…)", a.certificate.subject(), &hex::encode(a.certificate.fingerprint())[..16]))
        .collect();
    match &given {
        None if !store.anchors.is_empty() => checks.push(
            true,
            format!(
                "trusting the bundle's own X.509 roots {} (compare them with the CAs' published fingerprints, or \
                 give --x509-root)",
                subjects.join("; ")
            ),
        ),
        None => {}
        Some(given) => checks.push(
            store.anchors.len() == given.len(),
            format!(
                "the {} X.509 root(s) given are among the bundle's, with their agency mapping: {}",
                given.len(),
                if subjects.is_empty() { "none".to_owned() } else { subjects.join("; ") }
            ),
        ),
    }
    store
}

/// The vault's validations of X.509 signers the bundle carries, decoded once, by the statement each
/// names (each is checked where a statement relies on it, and for the owner's chain).
fn read_validations(
    bundle: &Bundle,
    verified: &VerifiedEnvelopes,
) -> BTreeMap<Digest, Vec<Signed<SignatureValidation>>> {
    let mut validations: BTreeMap<Digest, Vec<Signed<SignatureValidation>>> = BTreeMap::new();
    let files = bundle
        .files
        .iter()
        .filter(|(path, _)| path.starts_with(bundle::VALIDATIONS_DIR) && path.ends_with(".kho-validation"));
    for validation in
        files.filter_map(|(_, bytes)| Signed::<SignatureValidation>::from_envelope_remembered(bytes, verified).ok())
    {
        validations.entry(validation.body().statement).or_default().push(validation);
    }
    validations
}

/// An entry of `log.json`: its bytes, its inclusion proof if it has one, and whether that proof holds.
struct LoggedEntry {
    bytes: Vec<u8>,
    inclusion: Option<Vec<Hash>>,
    proven: Result<(), String>,
}

/// The log entries of `log.json`, each proven in the checkpoint or not.
struct LogEvidence {
    entries: BTreeMap<u64, LoggedEntry>,
    json: Value,
}

impl LogEvidence {
    fn read(bundle: &Bundle, checkpoint: Option<&Checkpoint>, checks: &mut Checks) -> LogEvidence {
        let json: Value = match bundle.files.get(bundle::LOG_PATH).map(|b| serde_json::from_slice(b)) {
            Some(Ok(json)) => json,
            Some(Err(error)) => {
                checks.push(false, format!("{} does not parse: {error}", bundle::LOG_PATH));
                Value::Null
            }
            None => {
                checks.push(false, format!("{} is missing", bundle::LOG_PATH));
                Value::Null
            }
        };
        let mut entries = BTreeMap::new();
        for item in json["entries"].as_array().map(Vec::as_slice).unwrap_or_default() {
            let (Some(index), Some(bytes)) =
                (item["index"].as_u64(), item["entry_hex"].as_str().and_then(|h| hex::decode(h).ok()))
            else {
                checks.push(false, format!("a malformed entry in {}", bundle::LOG_PATH));
                continue;
            };
            let inclusion = hashes(&item["inclusion"]);
            let proven = match (&item["inclusion"], &inclusion, checkpoint) {
                (Value::Null, _, _) => Err("it has no inclusion proof".to_owned()),
                (_, None, _) => Err("its inclusion proof is malformed".to_owned()),
                (_, _, None) => Err("there is no valid checkpoint to prove it in".to_owned()),
                (_, Some(proof), Some(checkpoint)) => {
                    verify_inclusion(index, checkpoint.size, &leaf_hash(&bytes), proof, &checkpoint.root)
                        .map_err(|e| format!("its inclusion proof fails ({e})"))
                }
            };
            entries.insert(index, LoggedEntry { bytes, inclusion, proven });
        }
        LogEvidence { entries, json }
    }

    /// The entry at `index`, checked to be in the checkpoint and to name `id` of `kind` at `at_ms`.
    fn statement_entry(&self, index: u64, kind: u8, id: &Digest, at_ms: i64) -> Result<Entry, String> {
        let logged = self.entries.get(&index).ok_or_else(|| format!("log entry #{index} is not in the bundle"))?;
        logged.proven.clone().map_err(|e| format!("log entry #{index}: {e}"))?;
        let entry = Entry::decode(&logged.bytes).map_err(|e| format!("log entry #{index} does not decode: {e}"))?;
        if entry.kind != kind || &entry.id != id || entry.accepted_at_ms != at_ms {
            return Err(format!("log entry #{index} is not this statement's (kind, id or time differ)"));
        }
        Ok(entry)
    }
}

fn hashes(value: &Value) -> Option<Vec<Hash>> {
    value
        .as_array()?
        .iter()
        .map(|h| h.as_str().and_then(|h| hex::decode(h).ok()).and_then(|b| <Hash>::try_from(b.as_slice()).ok()))
        .collect()
}

struct Context<'a> {
    bundle: &'a Bundle,
    verified: &'a VerifiedEnvelopes,
    trust: Option<&'a Trust>,
    log: &'a LogEvidence,
    x509: &'a TrustStore,
    validations: &'a BTreeMap<Digest, Vec<Signed<SignatureValidation>>>,
}

/// The ids a record's folder showed to be in the bundle.
#[derive(Default)]
struct FolderIds {
    record: Option<Digest>,
    revocation: Option<Digest>,
    certification: Option<Digest>,
}

impl Context<'_> {
    /// Whether `key` is a trust anchor (none is when the vault key is not trusted).
    fn anchored(&self, key: &PublicKey) -> bool {
        self.trust.is_some_and(|trust| trust.anchors.contains(key))
    }

    /// The certificates in the bundle whose own evidence holds: signed by a trusted anchor, receipted
    /// by the vault and in the log; each with its revocation's time if it has a valid one.
    fn certificates(&self, manifest: &Manifest) -> Vec<Issuer> {
        let mut issuers = Vec::new();
        for id in &manifest.certificates {
            let dir = format!("certs/{id}");
            let (certificate_path, receipt_path) =
                bundle::statement_paths(&dir, bundle::CERTIFICATE_FILE.0, bundle::CERTIFICATE_FILE.1);
            let Ok(certificate) = read_statement::<KeyCertificate>(self.bundle, self.verified, &certificate_path)
            else {
                continue;
            };
            let Ok(receipt) = self.receipted(&certificate, &receipt_path) else { continue };
            if !self.anchored(certificate.signer()) {
                issuers.push(Issuer {
                    certificate,
                    accepted_at_ms: receipt.body().accepted_at_ms,
                    revoked_at_ms: None,
                    anchor_trusted: false,
                });
                continue;
            }
            let (revocation_path, revocation_receipt_path) = bundle::statement_paths(
                &dir,
                bundle::CERTIFICATE_REVOCATION_FILE.0,
                bundle::CERTIFICATE_REVOCATION_FILE.1,
            );
            let revoked_at_ms = read_statement::<CertificateRevocation>(self.bundle, self.verified, &revocation_path)
                .ok()
                .filter(|revocation| {
                    revocation.body().certificate == certificate.id() && self.anchored(revocation.signer())
                })
                .and_then(|revocation| self.receipted(&revocation, &revocation_receipt_path).ok())
                .map(|receipt| receipt.body().accepted_at_ms);
            issuers.push(Issuer {
                certificate,
                accepted_at_ms: receipt.body().accepted_at_ms,
                revoked_at_ms,
                anchor_trusted: true,
            });
        }
        issuers
    }

    /// The receipt at `path` for `statement`, checked: by the trusted vault key, in its window, naming
    /// the statement, and its log entry proven.
    fn receipted<T: StatementBody>(&self, statement: &Signed<T>, path: &str) -> Result<Signed<Receipt>, String> {
        let trust = self.trust.ok_or("the vault key is not trusted")?;
        let receipt = read_statement::<Receipt>(self.bundle, self.verified, path)?;
        trust.vault.check_receipt(&receipt, statement.id(), T::KIND)?;
        let body = receipt.body();
        self.log.statement_entry(body.log_index, T::KIND, &statement.id(), body.accepted_at_ms)?;
        Ok(receipt)
    }

    /// The vault's acceptance rule for `statement`, signed for `agency` and receipted by `receipt`: a Kho
    /// key certificate for an Ed25519 signer; for an X.509 signer, the vault's validation of it,
    /// re-checked here (then a line saying who signed under which root).
    fn acceptance<T: StatementBody>(
        &self,
        statement: &Signed<T>,
        agency: &Code,
        receipt: &Receipt,
        issuers: &[Issuer],
    ) -> Result<Option<String>, String> {
        match statement.signer() {
            PublicKey::X509(signer) => self.x509_acceptance(Some(signer), &statement.id(), agency, receipt).map(Some),
            // A signed document deposited as it is: the vault's record, trusted through the validation
            // of the document's own signature.
            signer if self.trust.is_some_and(|trust| trust.vault.is_vault_key(signer)) && T::KIND == KIND_RECORD => {
                self.x509_acceptance(None, &statement.id(), agency, receipt).map(Some)
            }
            signer => check_acceptance(signer, agency, receipt.accepted_at_ms, issuers).map(|()| None),
        }
    }

    /// FORMAT.md 1.5 for an X.509 signer: the vault's validation (kind 10) of this statement's signer,
    /// for this agency, receipted and in the log before the statement and at most
    /// `VALIDATION_AGE_MS_MAX` earlier; and the same validation done again here from the bundle: the
    /// chain to a trusted root at the time the vault decided, the CRLs and OCSP responses it names, and
    /// the agency the root's mapping reads.
    fn x509_acceptance(
        &self,
        signer: Option<&X509Signer>,
        statement: &Digest,
        agency: &Code,
        receipt: &Receipt,
    ) -> Result<String, String> {
        let validations = self.validations.get(statement).map(Vec::as_slice).unwrap_or_default();
        if validations.is_empty() {
            return Err("the bundle holds no validation by the vault of this statement's X.509 signer".to_owned());
        }
        let mut reasons = Vec::new();
        for validation in validations {
            match self.x509_validation(signer, validation, agency, receipt) {
                Ok(line) => return Ok(line),
                Err(reason) => reasons.push(format!("validation {}: {reason}", validation.id())),
            }
        }
        Err(reasons.join("; "))
    }

    /// One validation checked for the statement receipted by `receipt`, and done again for a statement
    /// signed under X.509. For a document deposited with its own signature (`signer` None) the chain is
    /// in the document: the line says how to check it again.
    fn x509_validation(
        &self,
        signer: Option<&X509Signer>,
        validation: &Signed<SignatureValidation>,
        agency: &Code,
        receipt: &Receipt,
    ) -> Result<String, String> {
        let trust = self.trust.ok_or("the vault key is not trusted")?;
        if !trust.vault.is_vault_key(validation.signer()) {
            return Err("it is not signed by the vault key".to_owned());
        }
        let (_, receipt_path) = bundle::validation_paths(&validation.id());
        let validated = self.receipted(validation, &receipt_path)?;
        let (v, validated) = (validation.body(), validated.body());
        if &v.agency != agency {
            return Err(format!("it is for agency {}, not {agency}", v.agency));
        }
        let age = receipt.accepted_at_ms - validated.accepted_at_ms;
        if validated.log_index >= receipt.log_index || !(0..=crate::vault::VALIDATION_AGE_MS_MAX).contains(&age) {
            return Err("it was not logged in the minutes before the statement".to_owned());
        }
        let mut evidence = RevocationEvidence::default();
        for digest in &v.evidence {
            let file = bundle::x509_evidence_path(digest);
            let der = self.bundle.files.get(&file).ok_or_else(|| format!("{file} is missing"))?;
            if Digest::sha256(der) != *digest {
                return Err(format!("{file} is not the evidence the validation names"));
            }
            evidence.push_der(der).map_err(|e| format!("{file}: {e}"))?;
        }
        let Some(signer) = signer else {
            if let Some(line) = self.detached_again(validation, agency, &evidence)? {
                return Ok(line);
            }
            return Ok(format!(
                "the document's own signature: signed by {} under {}, at {}{}, as the vault validated it with {} CRL \
                 or OCSP response(s); check it again with `kho check-signature` on the document with --at {} and \
                 --evidence x509/evidence",
                v.signer,
                v.root_subject,
                format_unix_ms(v.decided_at_ms),
                match &v.basis {
                    crate::statement::ValidationBasis::Timestamp { authority, .. } => {
                        format!(", timestamped by {authority}")
                    }
                    _ => String::new(),
                },
                v.evidence.len(),
                format_unix_ms(v.decided_at_ms),
            ));
        };
        if v.signer_certificate.0 != signer.certificate().fingerprint() {
            return Err("it is of another certificate than the statement's signer".to_owned());
        }
        let at = v.decided_at_ms;
        let path = self
            .x509
            .validate(signer.certificate(), signer.intermediates(), at, &evidence)
            .map_err(|e| format!("the signer's chain does not validate at {}: {e}", format_unix_ms(at)))?;
        if path.root().fingerprint() != v.root.0 {
            return Err("the chain leads to another root than the validation names".to_owned());
        }
        let found = self.x509.anchors[path.anchor].agency_of(signer.certificate());
        if found.as_deref() != Some(agency.as_str()) {
            return Err(format!("under its root's mapping the signer's certificate is for {found:?}, not {agency}"));
        }
        let unchecked = path.revocation.iter().filter(|source| source.is_none()).count();
        Ok(format!(
            "signed by {} under {}, validated at {}{}",
            signer.certificate().subject(),
            path.root().subject(),
            format_unix_ms(at),
            if unchecked == 0 {
                String::new()
            } else {
                format!("; REVOCATION UNCHECKED for {unchecked} certificate(s) (the vault did not require evidence)")
            }
        ))
    }

    /// A document deposited with a detached signature: the `.p7s` beside the record checked again
    /// against the record's SHA-256 (its message digest), and its signer validated again at the time
    /// the vault decided, with the evidence the validation names. None without a `.p7s`.
    fn detached_again(
        &self,
        validation: &Signed<SignatureValidation>,
        agency: &Code,
        evidence: &RevocationEvidence,
    ) -> Result<Option<String>, String> {
        let v = validation.body();
        let Some(p7s) = self.bundle.files.get(&bundle::detached_signature_path(&v.statement)) else {
            return Ok(None);
        };
        let dir = bundle::record_dir(&v.statement);
        let (record_path, _) = bundle::statement_paths(&dir, bundle::RECORD_FILE.0, bundle::RECORD_FILE.1);
        let record = read_statement::<Record>(self.bundle, self.verified, &record_path)?;
        let signature = crate::x509::cms::verify_detached_sha256(p7s, &record.body().sha256.0)
            .map_err(|e| format!("the detached signature does not verify over the document: {e}"))?;
        let check = crate::x509::check_signature(self.x509, &signature, evidence, v.decided_at_ms)
            .map_err(|e| format!("the detached signature's signer does not validate: {e}"))?;
        if check.at_ms != v.decided_at_ms
            || check.signer_path.root().fingerprint() != v.root.0
            || check.signer_path.signer().fingerprint() != v.signer_certificate.0
        {
            return Err("the detached signature is not the one the validation describes".to_owned());
        }
        if check.agency.as_deref() != Some(agency.as_str()) {
            return Err(format!("the detached signature's certificate is for {:?}, not {agency}", check.agency));
        }
        Ok(Some(format!("the document's detached signature, checked again: {check}")))
    }

    fn record(
        &self,
        listed: &bundle::ManifestRecord,
        owner: Option<&OwnerId>,
        issuers: &[Issuer],
        today: Date,
    ) -> (DocumentReport, FolderIds) {
        let mut report = DocumentReport {
            id: listed.id.clone(),
            title: listed.title.clone(),
            verdict: Verdict::Valid,
            reasons: Vec::new(),
        };
        let mut ids = FolderIds::default();
        let fail = |report: &mut DocumentReport, verdict: Verdict, reason: String| {
            report.verdict = report.verdict.max(verdict);
            report.reasons.push(reason);
        };
        let Ok(id) = Digest::parse_hex("record", &listed.id) else {
            fail(&mut report, Verdict::Tampered, format!("the manifest's record id {} is not a digest", listed.id));
            return (report, ids);
        };
        let dir = bundle::record_dir(&id);
        let (record_path, receipt_path) = bundle::statement_paths(&dir, bundle::RECORD_FILE.0, bundle::RECORD_FILE.1);
        let record = match read_statement::<Record>(self.bundle, self.verified, &record_path) {
            Ok(record) if record.id() == id => record,
            Ok(record) => {
                fail(&mut report, Verdict::Tampered, format!("{record_path} is record {}, not {id}", record.id()));
                return (report, ids);
            }
            Err(error) => {
                fail(&mut report, Verdict::Tampered, error);
                return (report, ids);
            }
        };
        ids.record = Some(id);
        let body = record.body();
        if owner != Some(&body.owner) {
            fail(&mut report, Verdict::Tampered, format!("the record's owner {} is not the bundle's", body.owner));
        }
        // The document.
        let document_path = bundle::document_path(&id, body.media_type.as_str());
        match self.bundle.documents.get(&document_path) {
            None => fail(&mut report, Verdict::Tampered, format!("{document_path} is missing")),
            Some(DocumentDigest { blake3, sha256, size }) => {
                if *size != body.size_bytes || *blake3 != body.blake3 || *sha256 != body.sha256 {
                    fail(
                        &mut report,
                        Verdict::Tampered,
                        format!(
                            "the document is not the one signed: {size} bytes, BLAKE3 {}…; the record says {} bytes, \
                             BLAKE3 {}…",
                            &blake3.to_hex()[..16],
                            body.size_bytes,
                            &body.blake3.to_hex()[..16]
                        ),
                    );
                }
            }
        }
        // Acceptance: receipt, log entry, issuer certificate at the receipt's time.
        let mut signed_by = None;
        match self.receipted(&record, &receipt_path) {
            Err(error) => fail(&mut report, Verdict::ProofFails, format!("record: {error}")),
            Ok(receipt) => {
                let accepted = if body.is_self_upload() {
                    self.uploaded_by_vault(record.signer()).map(|()| None)
                } else {
                    self.acceptance(&record, &body.issuer_agency, receipt.body(), issuers)
                };
                match accepted {
                    Ok(line) => signed_by = line,
                    Err(error) => fail(&mut report, Verdict::UnknownIssuer, error),
                }
            }
        }
        if report.verdict.is_failure() {
            return (report, ids);
        }
        report.reasons.extend(signed_by);
        if body.is_self_upload() {
            self.upload_status(&dir, &id, issuers, &mut report, &mut ids);
            return (report, ids);
        }
        // Status, from signed evidence only.
        let (revocation_path, revocation_receipt) =
            bundle::statement_paths(&dir, bundle::REVOCATION_FILE.0, bundle::REVOCATION_FILE.1);
        let (by_path, by_receipt) =
            bundle::statement_paths(&dir, bundle::SUPERSEDED_BY_FILE.0, bundle::SUPERSEDED_BY_FILE.1);
        if self.bundle.files.contains_key(&revocation_path) {
            let checked = read_statement::<RecordRevocation>(self.bundle, self.verified, &revocation_path).and_then(
                |revocation| {
                    let r = revocation.body();
                    if r.record != id || r.issuer_agency != body.issuer_agency {
                        return Err("the revocation names another record or agency".to_owned());
                    }
                    let receipt = self.receipted(&revocation, &revocation_receipt)?;
                    self.acceptance(&revocation, &r.issuer_agency, receipt.body(), issuers)?;
                    Ok((revocation, receipt))
                },
            );
            match checked {
                Ok((revocation, receipt)) => {
                    ids.revocation = Some(revocation.id());
                    report.verdict = Verdict::Revoked;
                    report.reasons.push(format!(
                        "revoked by {} at {}: {}",
                        body.issuer_agency,
                        format_unix_ms(receipt.body().accepted_at_ms),
                        revocation.body().reason
                    ));
                }
                Err(error) => fail(&mut report, Verdict::ProofFails, format!("revocation: {error}")),
            }
        } else if self.bundle.files.contains_key(&by_path) {
            let checked = read_statement::<Record>(self.bundle, self.verified, &by_path).and_then(|by| {
                let b = by.body();
                if b.supersedes != Some(id) || b.owner != body.owner || b.issuer_agency != body.issuer_agency {
                    return Err("the superseding record does not supersede this one".to_owned());
                }
                let receipt = self.receipted(&by, &by_receipt)?;
                self.acceptance(&by, &b.issuer_agency, receipt.body(), issuers)?;
                Ok((by, receipt))
            });
            match checked {
                Ok((by, receipt)) => {
                    report.verdict = Verdict::Superseded;
                    report.reasons.push(format!(
                        "superseded by record {} at {}",
                        by.id(),
                        format_unix_ms(receipt.body().accepted_at_ms)
                    ));
                }
                Err(error) => fail(&mut report, Verdict::ProofFails, format!("superseding record: {error}")),
            }
        } else if today < body.valid_from {
            report.verdict = Verdict::NotYetValid;
            report.reasons.push(format!("valid from {}", body.valid_from));
        } else if let Some(until) = body.valid_until.filter(|until| today > *until) {
            report.verdict = Verdict::Expired;
            report.reasons.push(format!("valid until {until}"));
        } else {
            report.reasons.push(format!(
                "issued by {} on {}, signed by a certified key, accepted by the vault and in its log",
                body.issuer_agency, body.issued_on
            ));
        }
        (report, ids)
    }

    /// A self-uploaded record is the vault's statement: signed by the vault key itself.
    fn uploaded_by_vault(&self, signer: &PublicKey) -> Result<(), String> {
        match self.trust {
            Some(trust) if trust.vault.is_vault_key(signer) => Ok(()),
            _ => Err("a self-uploaded record must be signed by the vault key".to_owned()),
        }
    }

    /// An upload's status: certified as a copy if its certification's evidence holds.
    fn upload_status(
        &self,
        dir: &str,
        id: &Digest,
        issuers: &[Issuer],
        report: &mut DocumentReport,
        ids: &mut FolderIds,
    ) {
        let (path, receipt_path) =
            bundle::statement_paths(dir, bundle::CERTIFICATION_FILE.0, bundle::CERTIFICATION_FILE.1);
        if !self.bundle.files.contains_key(&path) {
            report.verdict = Verdict::SelfUploaded;
            report.reasons.push("uploaded by its owner; no agency has certified it as a copy".to_owned());
            return;
        }
        let checked =
            read_statement::<CopyCertification>(self.bundle, self.verified, &path).and_then(|certification| {
                let c = certification.body();
                if &c.record != id {
                    return Err("the certification names another record".to_owned());
                }
                let receipt = self.receipted(&certification, &receipt_path)?;
                self.acceptance(&certification, &c.agency, receipt.body(), issuers)?;
                Ok((certification, receipt))
            });
        match checked {
            Ok((certification, receipt)) => {
                let c = certification.body();
                ids.certification = Some(certification.id());
                report.verdict = Verdict::CertifiedCopy;
                report.reasons.push(format!(
                    "certified by {} at {} as a copy of {} ({}), compared by {}",
                    c.agency,
                    format_unix_ms(receipt.body().accepted_at_ms),
                    c.original,
                    c.original_type,
                    c.officer
                ));
            }
            Err(error) => {
                report.verdict = Verdict::ProofFails;
                report.reasons.push(format!("certification: {error}"));
            }
        }
    }

    /// For a store: the owner's chain is complete up to the commitment, every record, revocation and copy
    /// certification in it is in the bundle, and the access log is exactly the chain's access events.
    fn completeness(&self, owner: &OwnerId, checkpoint: &Checkpoint, ids: &StatementIds, checks: &mut Checks) {
        let json = &self.log.json["completeness"];
        let evidence = (|| {
            let commitment_index = json["commitment_index"].as_u64()?;
            let commitment = self.log.entries.get(&commitment_index)?;
            let (commitment_entry, commitment_proof) = (&commitment.bytes, commitment.inclusion.clone()?);
            let siblings = hashes(&json["map_proof"]["siblings"])?;
            let leaf = match &json["map_proof"]["leaf"] {
                Value::Null => None,
                leaf => {
                    let key = hex::decode(leaf["key"].as_str()?).ok()?;
                    Some((<[u8; 32]>::try_from(key.as_slice()).ok()?, hex::decode(leaf["value"].as_str()?).ok()?))
                }
            };
            let chain = json["chain"]
                .as_array()?
                .iter()
                .map(|index| index.as_u64().and_then(|i| self.log.entries.get(&i).map(|e| (i, e.bytes.clone()))))
                .collect::<Option<Vec<_>>>()?;
            Some((
                CompletenessEvidence {
                    checkpoint: checkpoint.clone(),
                    commitment_index,
                    commitment_entry: commitment_entry.clone(),
                    commitment_proof,
                    map_proof: MapProof { siblings, leaf },
                },
                chain,
            ))
        })();
        let Some((evidence, chain)) = evidence else {
            checks.push(false, "the completeness evidence in log.json is missing or malformed".into());
            return;
        };
        let complete = match verify_completeness(owner, &evidence, &chain) {
            Ok(complete) => complete,
            Err(error) => {
                checks.push(false, format!("the owner's log entries are not shown complete: {error}"));
                return;
            }
        };
        let through = Entry::decode(&evidence.commitment_entry).map(|e| e.accepted_at_ms).unwrap_or_default();
        checks.push(
            Entry::decode(&evidence.commitment_entry).is_ok_and(|e| e.kind == KIND_OWNER_MAP),
            format!(
                "the owner's {} log entries are complete through entry #{} ({}), by the owner map in the checkpoint",
                complete.entries.len(),
                evidence.commitment_index,
                format_unix_ms(through)
            ),
        );
        // The access log file: exactly the chain's access events.
        let events: BTreeMap<u64, Digest> =
            match self.bundle.files.get(bundle::ACCESS_LOG_PATH).map(|b| serde_json::from_slice::<Value>(b)) {
                Some(Ok(json)) => json["events"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|event| {
                        use base64::Engine as _;
                        let canonical = base64::engine::general_purpose::STANDARD
                            .decode(event["canonical_base64"].as_str()?)
                            .ok()?;
                        crate::vault::AccessEvent::decode(&canonical).ok().filter(|e| &e.owner == owner)?;
                        Some((event["log_index"].as_u64()?, Digest::sha256(&canonical)))
                    })
                    .collect(),
                _ => {
                    checks.push(false, format!("{} is missing or does not parse", bundle::ACCESS_LOG_PATH));
                    BTreeMap::new()
                }
            };
        // The validations in the bundle that are receipted and in the log.
        let validations: BTreeSet<Digest> = self
            .validations
            .values()
            .flatten()
            .filter(|validation| {
                let (_, receipt_path) = bundle::validation_paths(&validation.id());
                self.receipted(*validation, &receipt_path).is_ok()
            })
            .map(Signed::id)
            .collect();
        let mut missing = Vec::new();
        let mut chained_events = BTreeMap::new();
        for (index, entry) in &complete.entries {
            match entry.kind {
                KIND_RECORD if !ids.records.contains(&entry.id) => {
                    missing.push(format!("record {} (entry #{index})", entry.id))
                }
                KIND_RECORD_REVOCATION if !ids.revocations.contains(&entry.id) => {
                    missing.push(format!("revocation {} (entry #{index})", entry.id))
                }
                KIND_COPY_CERTIFICATION if !ids.certifications.contains(&entry.id) => {
                    missing.push(format!("copy certification {} (entry #{index})", entry.id))
                }
                KIND_SIGNATURE_VALIDATION if !validations.contains(&entry.id) => {
                    missing.push(format!("signature validation {} (entry #{index})", entry.id))
                }
                KIND_ACCESS_EVENT => {
                    chained_events.insert(*index, entry.id);
                }
                _ => {}
            }
        }
        checks.push(
            missing.is_empty(),
            if missing.is_empty() {
                format!(
                    "every record, revocation and certification of the owner's log is in the bundle ({})",
                    ids.records.len()
                )
            } else {
                format!("the bundle leaves out {}", missing.join(", "))
            },
        );
        checks.push(
            events == chained_events,
            format!(
                "the access log holds exactly the owner's {} access events of the log ({} given)",
                chained_events.len(),
                events.len()
            ),
        );
    }
}
