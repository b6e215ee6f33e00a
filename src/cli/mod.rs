//! The `kho` command line: key and statement tools for agencies and trust anchors, offline
//! verification for anyone, and bulk import into a local vault. The only module that knows clap and
//! anyhow.
//!
//! Exit codes: 0 success; 1 an error (unreadable file, storage failure, server unreachable or failing);
//! 2 bad usage; 3 the input was checked and found invalid (`verify` failed, `import` rejected some
//! documents, the server rejected a deposit, a downloaded document did not verify); 4 the server
//! refused the caller (401/403); 5 not found (404).

mod audit;
mod backup;
mod bench;
mod client;
mod evidence;
mod log;
mod x509;

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use clap::{Args, Parser, Subcommand};
use sha2::Digest as _;

use crate::ids::{format_unix_ms, now_unix_ms, Code, Date, Digest, MediaType, OwnerId, Title};
use crate::json::{key_json, record_json};
use crate::keys;
use crate::statement::{
    self, CertificateRevocation, CopyCertification, KeyCertificate, Receipt, Record, RecordRevocation, Signed,
};
use crate::vault::{Vault, VaultConfig};

pub const EXIT_INVALID: u8 = 3;
/// The server refused the caller (401 or 403).
pub const EXIT_DENIED: u8 = 4;
/// The server has no such thing (404).
pub const EXIT_NOT_FOUND: u8 = 5;

/// File name suffixes the tools write and `import` looks for.
pub const RECORD_SUFFIX: &str = ".kho-record";
pub const CERTIFICATE_SUFFIX: &str = ".kho-cert";
/// The vault's receipt for a record, kept beside its document by `import`, `deposit`, `get` and `demo`.
pub const RECEIPT_SUFFIX: &str = ".kho-receipt";

#[derive(Parser)]
#[command(name = "kho", version, about = "Kho: the e-data warehouse storage engine")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate an Ed25519 key pair (for an issuing agency or a trust anchor): PREFIX.pem, PREFIX.pub.pem.
    Keygen {
        /// Path prefix of the two key files.
        prefix: PathBuf,
    },
    /// As a trust anchor, certify an agency's public key.
    Certify(CertifyArgs),
    /// As a trust anchor, certify a vault's own key (receipts and checkpoints then verify from the
    /// anchor alone); written into the vault's data folder, served from the next start.
    CertifyVault(CertifyVaultArgs),
    /// As a trust anchor, revoke a certificate.
    RevokeCertificate {
        #[arg(long)]
        anchor_key: PathBuf,
        /// The certificate file to revoke.
        certificate: PathBuf,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// As an issuing agency, sign a record for a document file (writes FILE.kho-record).
    Sign(Box<SignArgs>),
    /// As an issuing agency, sign the revocation of one of its records.
    Revoke {
        #[arg(long)]
        key: PathBuf,
        /// The record file to revoke.
        record: PathBuf,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// As an issuing agency, certify a citizen's uploaded scan as a true copy of an original an officer
    /// compared it with (post the file to the server's /v1/certifications).
    CertifyCopy(CertifyCopyArgs),
    /// Check offline: a document against its record, receipt, certificate and trust anchor; or an
    /// evidence bundle (`kho export`), with a verdict per document.
    Verify(VerifyArgs),
    /// Check a signed document as agencies issue them (a PAdES-signed PDF, or any file with its
    /// detached CMS signature) against the X.509 roots and revocation evidence of the configuration:
    /// who signed, under which root, when (the timestamp's time if it has one), and that nothing was
    /// revoked then. Exit 3 if it does not hold.
    CheckSignature(x509::CheckSignatureArgs),
    /// Print any Kho statement file (record, certificate, revocation, receipt) as JSON.
    Show { file: PathBuf },
    /// Deposit a folder (files with FILE.kho-record beside them, *.kho-cert certificates) or a JSON
    /// manifest into a local vault. Safe to run again: documents already stored are skipped.
    Import(ImportArgs),
    /// Re-read and re-check everything a vault holds (frames, document hashes, statement signatures, the
    /// log's root against its newest checkpoint); report damage by record and owner, change nothing.
    /// Exit 3 if anything is damaged.
    Scrub(ScrubArgs),
    /// Replace Kho's own signing key (receipts, checkpoints, the vault's own records); everything signed
    /// before stays verifiable. Stop the server first. Run with --prepare beforehand (the server may
    /// run) to make the next key and tell the witnesses and the trust anchor of it.
    RotateKey(RotateKeyArgs),
    /// Back up the vault into a folder while the server keeps serving: a consistent copy of the store
    /// with the checkpoint it extends. Run again into the same folder, it copies only what is new.
    Backup(backup::BackupArgs),
    /// Restore a backup into a new data folder, check every byte against the backup's manifest, open it
    /// (the log must extend the backup's checkpoint) and scrub it. Exit 3 if anything does not hold.
    Restore(backup::RestoreArgs),
    /// Run the HTTP service.
    Serve(ServeArgs),
    /// Mint a token signed by the local dev key (accepted only by a server in dev mode).
    DevToken(DevTokenArgs),
    /// Print the OpenAPI document of the HTTP API.
    Openapi,
    /// As an issuing agency, sign a document and deposit it on a server.
    Deposit(Box<DepositArgs>),
    /// Download an evidence bundle from a server: an owner's whole store, or one record (--record).
    Export(evidence::ExportArgs),
    /// Download a record and its document from a server and verify both locally.
    Get {
        /// The record id.
        id: String,
        /// Where to write the document; default the record id in the current folder.
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List an owner's records on a server.
    Ls {
        owner: String,
        #[arg(long = "type")]
        document_type: Option<String>,
        #[arg(long)]
        status: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show who read an owner's documents (the owner's own token).
    AccessLog {
        owner: String,
        /// Also check that the list is complete: every access to the owner's data up to the newest
        /// owner-map commitment in a checkpoint signed by the vault key, and nothing else.
        #[arg(long)]
        verify: bool,
        /// How the vault key is trusted (needed by --verify).
        #[command(flatten)]
        trust: log::VaultTrustArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Fetch the log's newest checkpoint from a server and verify its signature.
    Checkpoint(log::LogClientArgs),
    /// Follow a server's log: verify each checkpoint it shows against the last one verified (kept on disk)
    /// with a consistency proof; exit 3 with a report on a split view, a rewritten log or a bad signature.
    Audit(Box<audit::AuditArgs>),
    /// Run a witness (C2SP tlog-witness): cosign the checkpoints of the logs given, each only if it
    /// extends the last one cosigned.
    Witness(audit::WitnessArgs),
    /// Fetch a proof from a server's log and verify it against a signed checkpoint.
    #[command(subcommand)]
    Proof(log::ProofCommand),
    /// Measure deposits and purpose-bound reads over HTTP against a scratch server.
    Bench(bench::BenchArgs),
    /// Print the QR code of a record's public verification page, for an issuer's print template
    /// (Decree 45/2020 Art. 18): whoever scans a paper copy sees whether it is authentic and valid.
    Qr(QrArgs),
    /// Build a demo: keys, a certificate, signed documents and a vault in DIR, then show the records.
    Demo {
        /// Where to put the demo (created; must not hold a demo already).
        #[arg(default_value = "kho-demo")]
        dir: PathBuf,
    },
}

#[derive(Args)]
struct QrArgs {
    /// The record id (64 hex digits).
    record: String,
    /// The address people reach Kho at; the code opens BASE_URL/verify/RECORD.
    #[arg(long, env = "KHO_PUBLIC_URL")]
    base_url: String,
    /// Image format; default from the output file's extension, else SVG.
    #[arg(long, value_parser = ["svg", "png"])]
    format: Option<String>,
    /// Pixels per module of a PNG.
    #[arg(long, default_value_t = 8)]
    module_pixels: u32,
    /// Where to write the image; default standard output.
    #[arg(long, short)]
    output: Option<PathBuf>,
}

#[derive(Args)]
struct CertifyCopyArgs {
    /// The agency's signing key (certified for --agency).
    #[arg(long)]
    key: PathBuf,
    /// The certifying agency's code.
    #[arg(long)]
    agency: String,
    /// The uploaded record's id (64 hex digits), from the agency's list of requests.
    #[arg(long)]
    record: String,
    /// The officer who compared the scan with the original: name or staff id.
    #[arg(long)]
    officer: String,
    /// The original's document type code.
    #[arg(long)]
    original_type: String,
    /// The original as the officer saw it: title, number, date of issue.
    #[arg(long)]
    original: String,
    /// Where to write the statement; default RECORD.kho-certification.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Args)]
struct CertifyArgs {
    /// The anchor's secret key.
    #[arg(long)]
    anchor_key: PathBuf,
    /// The agency code the key is certified for.
    #[arg(long)]
    agency: String,
    /// The agency's public key.
    #[arg(long)]
    issuer_key: PathBuf,
    /// Start of validity (YYYY-MM-DD or RFC 3339); default now.
    #[arg(long)]
    valid_from: Option<String>,
    /// Days of validity.
    #[arg(long, default_value_t = 730)]
    valid_days: u32,
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
struct CertifyVaultArgs {
    /// The anchor's secret key.
    #[arg(long)]
    anchor_key: PathBuf,
    /// The vault's data directory (its vault-key.pub.pem is certified; the certificate goes there).
    #[arg(long, env = "KHO_DATA_DIR", default_value = "kho-data")]
    data_dir: PathBuf,
    /// The vault's log origin, if configured (`log_origin`); default the one derived from its first key.
    #[arg(long)]
    origin: Option<String>,
    /// Certify the prepared next key (`kho rotate-key --prepare`) instead of the current one; the
    /// rotation installs the certificate with it.
    #[arg(long)]
    next: bool,
    /// Start of validity (YYYY-MM-DD or RFC 3339); default when the vault key was made (its public key
    /// file's time), so that the receipts it signed since are covered.
    #[arg(long)]
    valid_from: Option<String>,
    /// Days of validity.
    #[arg(long, default_value_t = 3650)]
    valid_days: u32,
}

/// The fields of a record an agency signs.
#[derive(Args)]
struct RecordFields {
    /// Owner: 12-digit citizen id or 10/13-digit organization code.
    #[arg(long)]
    owner: String,
    /// Document type code.
    #[arg(long = "type")]
    document_type: String,
    #[arg(long)]
    title: String,
    /// The issuing agency's code.
    #[arg(long)]
    agency: String,
    /// Issue date, YYYY-MM-DD; default today.
    #[arg(long)]
    issued_on: Option<String>,
    /// First day of validity, YYYY-MM-DD; default the issue date.
    #[arg(long)]
    valid_from: Option<String>,
    /// Last day of validity, YYYY-MM-DD; default none (does not expire).
    #[arg(long)]
    valid_until: Option<String>,
    /// Administrative procedure code.
    #[arg(long)]
    procedure: String,
    /// Dossier code.
    #[arg(long)]
    dossier: String,
    /// Media type; default guessed from the file extension.
    #[arg(long)]
    media_type: Option<String>,
    /// Id of the record this one replaces.
    #[arg(long)]
    supersedes: Option<String>,
}

#[derive(Args)]
struct SignArgs {
    #[command(flatten)]
    signer: SignerArgs,
    #[command(flatten)]
    fields: RecordFields,
    /// Output file; default FILE.kho-record.
    #[arg(long)]
    out: Option<PathBuf>,
    /// The document.
    file: PathBuf,
}

/// The key a record is signed with: an Ed25519 key Kho's anchors certified, or an X.509 key with its
/// certificate chain from the agency's CA.
#[derive(Args)]
struct SignerArgs {
    /// The agency's secret key: Ed25519 (PKCS#8 PEM), or with --chain an RSA or ECDSA P-256 key
    /// (PKCS#8 PEM) whose certificate a CA issued.
    #[arg(long)]
    key: PathBuf,
    /// The key's X.509 certificate chain (PEM: its own certificate first, then the intermediates up to,
    /// not including, the root): the record then names its signer by this chain.
    #[arg(long)]
    chain: Option<PathBuf>,
    /// The RSA signature scheme, with an RSA key: pkcs1 (PKCS#1 v1.5) or pss.
    #[arg(long, default_value = "pkcs1", value_parser = ["pkcs1", "pss"])]
    rsa_padding: String,
}

impl SignerArgs {
    fn load(&self) -> anyhow::Result<Box<dyn statement::StatementSigner>> {
        Ok(match &self.chain {
            None => Box::new(keys::read_secret_key(&self.key)?),
            Some(chain) => {
                let padding = if self.rsa_padding == "pss" {
                    statement::RsaPadding::Pss
                } else {
                    statement::RsaPadding::Pkcs1v15
                };
                Box::new(keys::X509SigningKey::read(&self.key, chain, padding)?)
            }
        })
    }
}

/// Where the server is and who is calling.
#[derive(Args)]
struct ClientArgs {
    /// The Kho server.
    #[arg(long, env = "KHO_SERVER", default_value = "http://127.0.0.1:8080")]
    server: String,
    /// A bearer token (see `kho dev-token` for trying Kho out).
    #[arg(long, env = "KHO_TOKEN", hide_env_values = true)]
    token: String,
    /// The dossier code you are processing (officers; auditors reading content).
    #[arg(long, env = "KHO_PURPOSE")]
    purpose: Option<String>,
}

#[derive(Args)]
struct DepositArgs {
    #[command(flatten)]
    signer: SignerArgs,
    #[command(flatten)]
    fields: RecordFields,
    #[command(flatten)]
    client: ClientArgs,
    /// The document.
    file: PathBuf,
}

#[derive(Args)]
struct ServeArgs {
    /// The configuration file (TOML); every key can also come from KHO_* environment variables.
    #[arg(long, env = "KHO_CONFIG")]
    config: Option<PathBuf>,
    /// Try Kho out: build a demo data set in ./kho-demo (once), enable dev tokens, and print tokens
    /// and curl commands for each role.
    #[arg(long)]
    demo: bool,
    /// Open even if the catalog lacks batches that were acknowledged (its files were damaged or
    /// replaced), restoring them from the catalog journal. Without it such a store refuses to open.
    #[arg(long)]
    recover: bool,
}

#[derive(Args)]
struct DevTokenArgs {
    #[arg(long, value_parser = ["citizen", "officer", "issuer", "auditor", "admin"])]
    role: String,
    /// Who the token is for.
    #[arg(long)]
    subject: String,
    /// The agency (officer, issuer).
    #[arg(long)]
    agency: Option<String>,
    /// The owner id (citizen).
    #[arg(long)]
    owner: Option<String>,
    /// Hours until the token expires (the server refuses tokens living longer than
    /// auth.token_lifetime_seconds_max, 12 hours by default).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=12))]
    hours: u32,
    /// The server's configuration file: the dev key lives in its data directory.
    #[arg(long, env = "KHO_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Args)]
struct VerifyArgs {
    /// The document, or an evidence bundle (`kho export`).
    file: PathBuf,
    /// Its record; default FILE.kho-record.
    #[arg(long)]
    record: Option<PathBuf>,
    /// The vault's receipt for the record; default FILE.kho-receipt. The key must have been certified,
    /// and not revoked, when the vault accepted the record (the receipt's time), as the vault checks.
    #[arg(long)]
    receipt: Option<PathBuf>,
    /// The issuer's key certificate (a document only; a bundle carries its certificates).
    #[arg(long)]
    certificate: Option<PathBuf>,
    /// The trust anchor's public key. For a bundle, repeat for several; without it, the bundle's own
    /// anchors are used and their fingerprints printed for comparison.
    #[arg(long)]
    anchor: Vec<PathBuf>,
    /// The vault's public key (PEM), which signs receipts (`vault-key.pub.pem` in its data folder).
    #[arg(long, conflicts_with = "vault_certificate")]
    vault_key: Option<PathBuf>,
    /// Or the vault key certificate (`GET /v1/vault-certificate`): the vault key is then trusted because
    /// the trust anchor certified it, for receipts inside the certificate's validity. A bundle carries it.
    #[arg(long)]
    vault_certificate: Option<PathBuf>,
    /// The certificate's revocation, if it was revoked (`GET /v1/certificates` gives it).
    #[arg(long, requires = "revocation_receipt")]
    certificate_revocation: Option<PathBuf>,
    /// The vault's receipt for that revocation: it counts from the time the vault accepted it.
    #[arg(long, requires = "certificate_revocation")]
    revocation_receipt: Option<PathBuf>,
    /// For a bundle: judge validity on this day (YYYY-MM-DD) instead of today in Vietnam.
    #[arg(long)]
    at: Option<String>,
    /// For a bundle: print the report as JSON.
    #[arg(long)]
    json: bool,
    /// For a bundle: a witness's cosigner key (`name+id+key`, as `kho witness` prints it) whose
    /// cosignature the checkpoint must carry; repeat for several.
    #[arg(long = "witness")]
    witnesses: Vec<String>,
    /// For a bundle: how many of the --witness keys must have cosigned; default a majority.
    #[arg(long, requires = "witnesses")]
    quorum: Option<usize>,
    /// For a bundle: an X.509 root certificate (PEM or DER) that records signed under X.509 must chain
    /// to; repeat for several. Without it, the bundle's own roots are used and their fingerprints printed.
    #[arg(long = "x509-root")]
    x509_roots: Vec<PathBuf>,
}

#[derive(Args)]
struct ScrubArgs {
    /// The server's configuration file (its data folder and trust anchors). Stop the server first, or
    /// let its background scrub do this (scrub_interval_hours).
    #[arg(long, env = "KHO_CONFIG")]
    config: Option<PathBuf>,
    /// Read documents at most this many bytes per second (default: as fast as the disk gives).
    #[arg(long)]
    bytes_per_second: Option<u64>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct RotateKeyArgs {
    /// The server's configuration file (its data folder, log origin and anchors).
    #[arg(long, env = "KHO_CONFIG")]
    config: Option<PathBuf>,
    /// Only make the next key (vault-key.next.pem) and print what to give the witnesses and the trust
    /// anchor; the rotation itself then uses it.
    #[arg(long)]
    prepare: bool,
}

#[derive(Args)]
struct ImportArgs {
    /// A folder, or a JSON manifest: {"certificates": [paths], "documents": [{"file", "record"}]}.
    source: PathBuf,
    /// The vault's data directory.
    #[arg(long, env = "KHO_DATA_DIR", default_value = "kho-data")]
    data_dir: PathBuf,
    /// Trust anchor public keys (repeat, or comma-separate in KHO_TRUST_ANCHORS).
    #[arg(long = "anchor", env = "KHO_TRUST_ANCHORS", value_delimiter = ',', required = true)]
    anchors: Vec<PathBuf>,
    /// Documents deposited in parallel; concurrent deposits share each durable sync.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    jobs: u16,
    /// Print "stored <record id> <file>" once each document is durable.
    #[arg(long, short)]
    verbose: bool,
    /// Sign a checkpoint of the log this often while importing (and once at the end).
    #[arg(long, default_value_t = crate::config::CHECKPOINT_INTERVAL_MS_DEFAULT,
          value_parser = clap::value_parser!(u64).range(1..))]
    checkpoint_interval_ms: u64,
}

/// Runs the CLI with the process's arguments.
pub fn run() -> anyhow::Result<ExitCode> {
    match Cli::parse().command {
        Command::Keygen { prefix } => keygen(&prefix),
        Command::Certify(args) => certify(args),
        Command::CertifyVault(args) => certify_vault(args),
        Command::RevokeCertificate { anchor_key, certificate, reason, out } => {
            let anchor = keys::read_secret_key(&anchor_key)?;
            let certificate = read_statement::<KeyCertificate>(&certificate)?;
            let revocation = CertificateRevocation {
                certificate: certificate.id(),
                reason: Title::parse(&reason)?,
                signed_at_ms: now_unix_ms(),
            };
            write_statement(&out, &Signed::sign(revocation, &anchor))
        }
        Command::Sign(args) => {
            let key = args.signer.load()?;
            let record = sign_record(&args.fields, key.as_ref(), &args.file)?;
            let out = args.out.unwrap_or_else(|| with_suffix(&args.file, RECORD_SUFFIX));
            write_statement(&out, &record)
        }
        Command::Revoke { key, record, reason, out } => {
            let key = keys::read_secret_key(&key)?;
            let record = read_statement::<Record>(&record)?;
            let revocation = RecordRevocation {
                record: record.id(),
                issuer_agency: record.body().issuer_agency.clone(),
                reason: Title::parse(&reason)?,
                signed_at_ms: now_unix_ms(),
            };
            write_statement(&out, &Signed::sign(revocation, &key))
        }
        Command::CertifyCopy(args) => {
            let key = keys::read_secret_key(&args.key)?;
            let record = Digest::parse_hex("record", &args.record)?;
            let certification = CopyCertification {
                record,
                agency: Code::parse("agency", &args.agency)?,
                officer: Title::parse(&args.officer)?,
                original_type: Code::parse("original type", &args.original_type)?,
                original: Title::parse(&args.original)?,
                signed_at_ms: now_unix_ms(),
            };
            let out = args.out.unwrap_or_else(|| PathBuf::from(format!("{record}.kho-certification")));
            write_statement(&out, &Signed::sign(certification, &key))
        }
        Command::Verify(args) => verify(args),
        Command::CheckSignature(args) => x509::check_signature(args),
        Command::Show { file } => show(&file),
        Command::Import(args) => import(args),
        Command::Demo { dir } => demo(&dir).map(|_| ExitCode::SUCCESS),
        Command::Qr(args) => qr(&args),
        Command::Scrub(args) => scrub(args),
        Command::RotateKey(args) => rotate_key(args),
        Command::Backup(args) => backup::backup(args),
        Command::Restore(args) => backup::restore(args),
        Command::Serve(args) => serve(args),
        Command::Bench(args) => bench::bench(args),
        Command::DevToken(args) => {
            let config = crate::config::Config::load(args.config.as_deref())?;
            println!("{}", dev_token(&config, &args)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Openapi => {
            println!("{}", serde_json::to_string_pretty(&crate::http::openapi::document())?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Deposit(args) => client::deposit(*args),
        Command::Export(args) => evidence::export(args),
        Command::Get { id, out, client } => client::get(&client, &id, out),
        Command::Ls { owner, document_type, status, client } => client::ls(&client, &owner, document_type, status),
        Command::AccessLog { owner, verify: false, client, .. } => client::access_log(&client, &owner),
        Command::AccessLog { owner, trust, client, .. } => client::verify_access_log(&client, &owner, &trust),
        Command::Checkpoint(client) => log::checkpoint(&client),
        Command::Proof(command) => log::proof(command),
        Command::Audit(args) => audit::audit(*args),
        Command::Witness(args) => audit::witness(args),
    }
}

/// Sample papers of a citizen: (file name, document type, title, issuing agency key index, content).
const DEMO_DOCUMENTS: [(&str, &str, &str, usize, &str); 3] = [
    (
        "giay-khai-sinh.xml",
        "GKS",
        "Giấy khai sinh",
        0,
        "<giayKhaiSinh><hoTen>Nguyễn Văn An</hoTen><ngaySinh>2004-01-15</ngaySinh></giayKhaiSinh>\n",
    ),
    (
        "bang-tot-nghiep.xml",
        "BTN",
        "Bằng tốt nghiệp THPT",
        1,
        "<bangTotNghiep><hoTen>Nguyễn Văn An</hoTen><nam>2022</nam></bangTotNghiep>\n",
    ),
    (
        "xac-nhan-cu-tru.xml",
        "XNCT",
        "Giấy xác nhận cư trú",
        0,
        "<xacNhanCuTru><diaChi>Hà Nội</diaChi></xacNhanCuTru>\n",
    ),
];
const DEMO_AGENCIES: [&str; 2] = ["000.00.00.H26", "000.00.00.G09"];
use crate::sample::DEMO_OWNER;

fn demo(dir: &Path) -> anyhow::Result<()> {
    if dir.join("anchor.pem").exists() {
        bail!("{} already holds a demo; remove it or name another folder", dir.display());
    }
    let documents = dir.join("documents");
    std::fs::create_dir_all(&documents).with_context(|| format!("cannot create {}", documents.display()))?;
    let anchor = statement::SecretKey::generate();
    keys::write_secret_key(&dir.join("anchor.pem"), &anchor)?;
    keys::write_public_key(&dir.join("anchor.pub.pem"), &anchor.public_key())?;
    let vault = Vault::open(VaultConfig::new(dir.join("data"), vec![anchor.public_key()]))?;
    // The anchor certifies the vault key too, so receipts verify from the anchor alone.
    let now = now_unix_ms();
    let vault_certificate = statement::VaultKeyCertificate {
        origin: vault.log_origin().to_owned(),
        subject: vault.public_key(),
        valid_from_ms: now - 86_400_000,
        valid_until_ms: now + 3650 * 86_400_000,
        signed_at_ms: now,
    };
    std::fs::write(
        dir.join("data").join(crate::vault::VAULT_CERTIFICATE_FILE),
        Signed::sign(vault_certificate, &anchor).to_envelope(),
    )?;
    let mut issuers = Vec::new();
    for (index, agency) in DEMO_AGENCIES.iter().enumerate() {
        let key = statement::SecretKey::generate();
        keys::write_secret_key(&dir.join(format!("issuer-{index}.pem")), &key)?;
        let now = now_unix_ms();
        let certificate = Signed::sign(
            KeyCertificate {
                agency: Code::parse("agency", agency)?,
                subject: key.public_key(),
                valid_from_ms: now - 86_400_000,
                valid_until_ms: now + 730 * 86_400_000,
                signed_at_ms: now,
            },
            &anchor,
        );
        std::fs::write(dir.join(format!("issuer-{index}.kho-cert")), certificate.to_envelope())?;
        vault.add_certificate(&certificate.to_envelope())?;
        issuers.push(key);
    }
    let today = Date::at(now_unix_ms(), crate::vault::UTC_OFFSET_MINUTES_DEFAULT);
    let mut ids = Vec::new();
    for (file, document_type, title, issuer, text) in DEMO_DOCUMENTS {
        let path = documents.join(file);
        std::fs::write(&path, text)?;
        let content = text.as_bytes();
        let record = Record {
            owner: OwnerId::parse(DEMO_OWNER)?,
            document_type: Code::parse("document type", document_type)?,
            title: Title::parse(title)?,
            issuer_agency: Code::parse("agency", DEMO_AGENCIES[issuer])?,
            issued_on: today,
            valid_from: today,
            valid_until: None,
            procedure: Code::parse("procedure", "1.001193")?,
            dossier: Code::parse("dossier", "DEMO-0001")?,
            blake3: Digest(*blake3::hash(content).as_bytes()),
            sha256: Digest(sha2::Sha256::digest(content).into()),
            size_bytes: content.len() as u64,
            media_type: MediaType::parse("application/xml")?,
            supersedes: None,
            signed_at_ms: now_unix_ms(),
        };
        let signed = Signed::sign(record, &issuers[issuer]);
        std::fs::write(with_suffix(&path, RECORD_SUFFIX), signed.to_envelope())?;
        let accepted = vault.deposit(&signed.to_envelope(), content)?;
        std::fs::write(with_suffix(&path, RECEIPT_SUFFIX), accepted.receipt.to_envelope())?;
        ids.push(accepted.id);
    }
    // The residence confirmation is withdrawn by its issuer.
    let revocation = RecordRevocation {
        record: ids[2],
        issuer_agency: Code::parse("agency", DEMO_AGENCIES[0])?,
        reason: Title::parse("Cấp nhầm địa chỉ")?,
        signed_at_ms: now_unix_ms(),
    };
    vault.revoke(&Signed::sign(revocation, &issuers[0]).to_envelope())?;
    let page = vault.list_owner(&OwnerId::parse(DEMO_OWNER)?, &crate::vault::ListFilter::default(), None, 50)?;
    println!("Demo vault in {} (owner {DEMO_OWNER}):", dir.join("data").display());
    for view in &page.records {
        let body = view.record.body();
        let status = serde_json::to_value(view.status.kind()).unwrap_or_default();
        println!(
            "  {}  {:<22} {:<14} {:<8} log entry #{}",
            view.id(),
            body.title.as_str(),
            body.issuer_agency.as_str(),
            status.as_str().unwrap_or("?"),
            view.receipt.body().log_index
        );
    }
    let first = documents.join(DEMO_DOCUMENTS[0].0);
    println!("\nTry:");
    println!(
        "  kho verify {} --certificate {} --anchor {} --vault-certificate {}",
        first.display(),
        dir.join("issuer-0.kho-cert").display(),
        dir.join("anchor.pub.pem").display(),
        dir.join("data").join(crate::vault::VAULT_CERTIFICATE_FILE).display()
    );
    println!("  kho show {}", with_suffix(&first, RECORD_SUFFIX).display());
    println!(
        "  kho import {} --data-dir {} --anchor {}   # resumable: all already present",
        documents.display(),
        dir.join("data").display(),
        dir.join("anchor.pub.pem").display()
    );
    Ok(())
}

fn qr(args: &QrArgs) -> anyhow::Result<ExitCode> {
    let record = Digest::parse_hex("record id", &args.record)?;
    let url = crate::qr::verification_url(&args.base_url, &record);
    if !url.starts_with("https://") && !url.starts_with("http://") {
        bail!("--base-url must start with https:// (or http://), such as https://kho.gov.vn");
    }
    let by_extension = args.output.as_ref().and_then(|p| p.extension()).is_some_and(|e| e.eq_ignore_ascii_case("png"));
    let png = args.format.as_deref().map_or(by_extension, |format| format == "png");
    let image = if png { crate::qr::png(&url, args.module_pixels)? } else { crate::qr::svg(&url)?.into_bytes() };
    match &args.output {
        Some(path) => {
            std::fs::write(path, &image).with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("{} encodes {url}", path.display());
        }
        None => std::io::Write::write_all(&mut std::io::stdout(), &image)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// The demo folder `serve --demo` uses.
pub const DEMO_DIR: &str = "kho-demo";

/// Logs to stderr, at `info` unless RUST_LOG says otherwise (the server and the witness).
fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    init_logging();
    let mut config = match crate::config::Config::load(args.config.as_deref()) {
        Ok(config) => config,
        // The demo supplies what a bare configuration lacks (dev mode, anchors).
        Err(crate::config::ConfigError::Invalid(_)) if args.demo => {
            let mut config = crate::config::Config::default();
            config.apply_env(|name| std::env::var(name).ok())?;
            config
        }
        Err(error) => return Err(error.into()),
    };
    if args.demo {
        let dir = PathBuf::from(DEMO_DIR);
        if !dir.join("anchor.pem").exists() {
            demo(&dir)?;
        }
        config.data_dir = dir.join("data");
        config.trust_anchors = vec![dir.join("anchor.pub.pem")];
        config.auth.dev_mode = true;
        config.check()?;
    }
    config.recover = args.recover;
    let demo_tokens = if args.demo { Some(demo_tokens(&config)?) } else { None };
    crate::http::serve(&config, |address| {
        let scheme = if config.tls.is_some() { "https" } else { "http" };
        println!("kho listening on {scheme}://{address}");
        if let Some(tokens) = &demo_tokens {
            print_demo_help(address, tokens);
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

fn scrub(args: ScrubArgs) -> anyhow::Result<ExitCode> {
    let config = offline_config(args.config.as_deref())?;
    let vault = Vault::open(config.vault_config()?)
        .with_context(|| format!("cannot open the vault in {}", config.data_dir.display()))?;
    scrub_vault(&vault, args.bytes_per_second, args.json)
}

fn rotate_key(args: RotateKeyArgs) -> anyhow::Result<ExitCode> {
    let config = offline_config(args.config.as_deref())?.vault_config()?;
    let dir = config.data_dir.clone();
    if args.prepare {
        let prepared = crate::vault::prepare_next_key(&config)?;
        println!(
            "{} next vault key {} ({})",
            if prepared.created { "made the" } else { "already prepared:" },
            prepared.key.fingerprint(),
            prepared.public_key_file.display()
        );
        println!("witnesses: add this verifier key for log {} (keep the current one):", prepared.origin);
        println!("  {}", crate::log::checkpoint::verifier_key(&prepared.origin, &prepared.key));
        println!(
            "trust anchor (optional): kho certify-vault --next --data-dir {} --anchor-key ANCHOR.pem",
            dir.display()
        );
        println!("then stop the server and run `kho rotate-key` without --prepare");
        return Ok(ExitCode::SUCCESS);
    }
    let vault = Vault::open(config).with_context(|| {
        format!("cannot open the vault in {} (stop the server first: the rotation needs it alone)", dir.display())
    })?;
    let rotation = vault.rotate_key()?;
    println!("retired vault key {} at log size {}", rotation.retired.fingerprint(), rotation.size);
    println!(
        "vault key is now {}{}",
        rotation.current.fingerprint(),
        if rotation.certified { " (with the trust anchor's certificate)" } else { " (no certificate installed)" }
    );
    println!("handover checkpoint, signed by both keys:\n{}", rotation.handover);
    println!("start the server again; receipts and checkpoints signed before stay verifiable");
    Ok(ExitCode::SUCCESS)
}

/// The configuration of a command that works on the data folder with the server stopped or beside it
/// (scrub, backup, restore): it needs the data folder and the anchors, not a way to sign in.
fn offline_config(path: Option<&std::path::Path>) -> anyhow::Result<crate::config::Config> {
    Ok(crate::config::Config::load(path).or_else(|error| match error {
        crate::config::ConfigError::Invalid(_) => {
            let mut config = crate::config::Config::default();
            config.apply_env(|name| std::env::var(name).ok())?;
            Ok(config)
        }
        other => Err(other),
    })?)
}

/// Scrubs `vault` with a progress bar and prints what it found; exit 3 if anything is damaged.
fn scrub_vault(vault: &Vault, bytes_per_second: Option<u64>, json: bool) -> anyhow::Result<ExitCode> {
    let progress = indicatif::ProgressBar::new(0);
    progress.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} entries {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let options = crate::vault::ScrubOptions { bytes_per_second };
    let report = vault.scrub(options, |state| {
        progress.set_length(state.entries_total);
        progress.set_position(state.entries_checked);
        progress.set_message(format!("{} MiB of documents read", state.document_bytes_read >> 20));
    })?;
    progress.finish_and_clear();
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for finding in &report.findings {
            let records = finding.records.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
            let owners = finding.owners.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
            println!(
                "DAMAGED {:?}{}{}{}: {}",
                finding.kind,
                finding.log_index.map(|i| format!(" log entry #{i}")).unwrap_or_default(),
                if records.is_empty() { String::new() } else { format!(" record {records}") },
                if owners.is_empty() { String::new() } else { format!(" owner {owners}") },
                finding.detail
            );
        }
        println!(
            "scrubbed {} log entries (newest checkpoint {}), {} records, {} documents ({} bytes): {}",
            report.entries,
            report.checkpoint_size.map_or("none".to_owned(), |s| s.to_string()),
            report.records,
            report.documents,
            report.document_bytes,
            if report.findings.is_empty() {
                "no damage found".to_owned()
            } else {
                format!("{} damaged; nothing was changed", report.findings.len())
            }
        );
    }
    Ok(if report.findings.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(EXIT_INVALID) })
}

fn dev_token(config: &crate::config::Config, args: &DevTokenArgs) -> anyhow::Result<String> {
    let key = crate::http::dev_token_key(config)?;
    let role: crate::http::Role = serde_json::from_value(serde_json::Value::String(args.role.clone()))?;
    let now = now_unix_ms() / 1000;
    let claims = crate::http::auth::Claims {
        iss: crate::config::DEV_TOKEN_ISSUER.into(),
        aud: crate::http::auth::Audience::One(config.auth.audience.clone()),
        sub: args.subject.clone(),
        exp: now + i64::from(args.hours) * 3600,
        nbf: Some(now),
        iat: Some(now),
        role,
        agency: args.agency.clone(),
        owner: args.owner.clone(),
    };
    Ok(crate::http::auth::mint(&claims, &key))
}

/// (role, token) for each demo user.
fn demo_tokens(config: &crate::config::Config) -> anyhow::Result<Vec<(&'static str, String)>> {
    let make = |role: &str, subject: &str, agency: Option<&str>, owner: Option<&str>| {
        let args = DevTokenArgs {
            role: role.into(),
            subject: subject.into(),
            agency: agency.map(Into::into),
            owner: owner.map(Into::into),
            hours: 8,
            config: None,
        };
        dev_token(config, &args)
    };
    Ok(vec![
        ("citizen", make("citizen", "nguyen-van-an", None, Some(DEMO_OWNER))?),
        ("officer", make("officer", "officer-hanoi-1", Some("000.00.00.H26"), None)?),
        ("issuer", make("issuer", "tuphap-system", Some(DEMO_AGENCIES[0]), None)?),
        ("auditor", make("auditor", "auditor-1", None, None)?),
        ("admin", make("admin", "admin-1", None, None)?),
    ])
}

fn print_demo_help(address: std::net::SocketAddr, tokens: &[(&str, String)]) {
    let base = format!("http://{address}");
    println!("\nOpen {base}/ in a browser and press \"Sign in as the demo citizen\" ({DEMO_OWNER}):");
    println!("the citizen's documents, who looked at them, share links, and the public check of a printed copy.");
    println!("\nDEV MODE (demo): these tokens are signed by a local dev key; never use dev mode in production.\n");
    for (role, token) in tokens {
        println!("export KHO_{}_TOKEN={token}", role.to_uppercase());
    }
    println!("\n# the citizen's records, and who looked at them");
    println!("curl -s {base}/v1/owners/{DEMO_OWNER}/records -H \"Authorization: Bearer $KHO_CITIZEN_TOKEN\"");
    println!("curl -s {base}/v1/owners/{DEMO_OWNER}/access-log -H \"Authorization: Bearer $KHO_CITIZEN_TOKEN\"");
    println!("# an officer processing dossier H26.99-0001 (without Kho-Purpose: denied, and logged)");
    println!(
        "curl -s {base}/v1/owners/{DEMO_OWNER}/records -H \"Authorization: Bearer $KHO_OFFICER_TOKEN\" -H \"Kho-Purpose: H26.99-0001\""
    );
    println!("# auditors and everyone: certificates and trust anchors");
    println!("curl -s {base}/v1/certificates -H \"Authorization: Bearer $KHO_AUDITOR_TOKEN\"");
    println!("# an issuer signs and deposits a document");
    println!(
        "KHO_TOKEN=$KHO_ISSUER_TOKEN kho deposit --server {base} --key {DEMO_DIR}/issuer-0.pem --owner {DEMO_OWNER} --type GKS --title \"Trích lục\" --agency {} --procedure 1.001193 --dossier H26.99-0002 FILE",
        DEMO_AGENCIES[0]
    );
    println!("# the API: {base}/v1/openapi.json");
}

fn keygen(prefix: &Path) -> anyhow::Result<ExitCode> {
    let key = statement::SecretKey::generate();
    let secret = with_suffix(prefix, ".pem");
    let public = with_suffix(prefix, ".pub.pem");
    keys::write_secret_key(&secret, &key)?;
    keys::write_public_key(&public, &key.public_key())?;
    println!("secret key: {} (owner-only; keep it off shared disks)", secret.display());
    println!("public key: {}", public.display());
    println!("fingerprint: {}", key.public_key().fingerprint());
    Ok(ExitCode::SUCCESS)
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut text = path.as_os_str().to_owned();
    text.push(suffix);
    PathBuf::from(text)
}

/// Parses YYYY-MM-DD (midnight UTC) or an RFC 3339 timestamp into Unix milliseconds.
fn parse_instant(text: &str) -> anyhow::Result<i64> {
    if let Ok(time) = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339) {
        return Ok(i64::try_from(time.unix_timestamp_nanos() / 1_000_000)?);
    }
    let date = Date::parse(text).map_err(|_| anyhow::anyhow!("{text:?} is neither YYYY-MM-DD nor RFC 3339"))?;
    let time = time::Date::parse(&date.to_string(), time::macros::format_description!("[year]-[month]-[day]"))?;
    Ok(time.midnight().assume_utc().unix_timestamp() * 1000)
}

fn certify(args: CertifyArgs) -> anyhow::Result<ExitCode> {
    let anchor = keys::read_secret_key(&args.anchor_key)?;
    let subject = keys::read_public_key(&args.issuer_key)?;
    let valid_from_ms = args.valid_from.as_deref().map(parse_instant).transpose()?.unwrap_or_else(now_unix_ms);
    let certificate = KeyCertificate {
        agency: Code::parse("agency", &args.agency)?,
        subject,
        valid_from_ms,
        valid_until_ms: valid_from_ms + i64::from(args.valid_days) * 86_400_000,
        signed_at_ms: now_unix_ms(),
    };
    write_statement(&args.out, &Signed::sign(certificate, &anchor))
}

fn certify_vault(args: CertifyVaultArgs) -> anyhow::Result<ExitCode> {
    let anchor = keys::read_secret_key(&args.anchor_key)?;
    let (key_file, certificate_file) = if args.next {
        (crate::vault::NEXT_PUBLIC_KEY_FILE, crate::vault::NEXT_CERTIFICATE_FILE)
    } else {
        (crate::vault::VAULT_PUBLIC_KEY_FILE, crate::vault::VAULT_CERTIFICATE_FILE)
    };
    let key_file = args.data_dir.join(key_file);
    let subject = keys::read_public_key(&key_file)?;
    let first_key = crate::vault::first_key(&args.data_dir)?.unwrap_or_else(|| subject.clone());
    let origin = args.origin.unwrap_or_else(|| crate::vault::default_log_origin(&first_key));
    if !crate::log::checkpoint::is_key_name(&origin) {
        bail!("log origin {origin:?} is not usable: no spaces, control characters or '+'");
    }
    let key_made_ms = std::fs::metadata(&key_file)
        .and_then(|metadata| metadata.modified())
        .ok()
        .and_then(|time| time.duration_since(std::time::UNIX_EPOCH).ok())
        .and_then(|since| i64::try_from(since.as_millis()).ok());
    let valid_from_ms = match args.valid_from.as_deref() {
        Some(text) => parse_instant(text)?,
        None => key_made_ms.unwrap_or_else(now_unix_ms),
    };
    let certificate = statement::VaultKeyCertificate {
        origin,
        subject,
        valid_from_ms,
        valid_until_ms: valid_from_ms + i64::from(args.valid_days) * 86_400_000,
        signed_at_ms: now_unix_ms(),
    };
    println!(
        "certifying vault key {} for log {} from {} for {} days",
        certificate.subject.fingerprint(),
        certificate.origin,
        format_unix_ms(valid_from_ms),
        args.valid_days
    );
    write_statement(&args.data_dir.join(certificate_file), &Signed::sign(certificate, &anchor))
}

/// BLAKE3, SHA-256 and size of a file, streamed.
fn hash_file(path: &Path) -> anyhow::Result<(Digest, Digest, u64)> {
    let mut file = BufReader::new(File::open(path).with_context(|| format!("cannot open {}", path.display()))?);
    let digest =
        crate::evidence::bundle::hash_document(&mut file).with_context(|| format!("cannot read {}", path.display()))?;
    Ok((digest.blake3, digest.sha256, digest.size))
}

/// Hashes `file` and signs a record for it with `key`.
fn sign_record(
    fields: &RecordFields,
    key: &dyn statement::StatementSigner,
    file: &Path,
) -> anyhow::Result<Signed<Record>> {
    let (blake3, sha256, size_bytes) = hash_file(file)?;
    let today = Date::at(now_unix_ms(), crate::vault::UTC_OFFSET_MINUTES_DEFAULT);
    let issued_on = fields.issued_on.as_deref().map(Date::parse).transpose()?.unwrap_or(today);
    let record = Record {
        owner: OwnerId::parse(&fields.owner)?,
        document_type: Code::parse("document type", &fields.document_type)?,
        title: Title::parse(&fields.title)?,
        issuer_agency: Code::parse("agency", &fields.agency)?,
        issued_on,
        valid_from: fields.valid_from.as_deref().map(Date::parse).transpose()?.unwrap_or(issued_on),
        valid_until: fields.valid_until.as_deref().map(Date::parse).transpose()?,
        procedure: Code::parse("procedure", &fields.procedure)?,
        dossier: Code::parse("dossier", &fields.dossier)?,
        blake3,
        sha256,
        size_bytes,
        media_type: match &fields.media_type {
            Some(text) => MediaType::parse(text)?,
            None => MediaType::guess_from_path(file),
        },
        supersedes: fields.supersedes.as_deref().map(|t| Digest::parse_hex("supersedes", t)).transpose()?,
        signed_at_ms: now_unix_ms(),
    };
    if let Some(until) = record.valid_until {
        if until < record.valid_from {
            bail!("--valid-until {until} is before the first day of validity {}", record.valid_from);
        }
    }
    Ok(Signed::sign(record, key))
}

fn write_statement<T: statement::StatementBody>(path: &Path, statement: &Signed<T>) -> anyhow::Result<ExitCode> {
    std::fs::write(path, statement.to_envelope()).with_context(|| format!("cannot write {}", path.display()))?;
    println!("{} {} written to {}", T::NAME, statement.id(), path.display());
    Ok(ExitCode::SUCCESS)
}

fn read_statement<T: statement::StatementBody>(path: &Path) -> anyhow::Result<Signed<T>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Signed::from_envelope(&bytes).with_context(|| format!("{} is not a valid signed {}", path.display(), T::NAME))
}

/// One line of a verification report.
struct Check {
    passed: bool,
    what: String,
}

fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let mut head = Vec::with_capacity(512);
    File::open(&args.file)
        .with_context(|| format!("cannot open {}", args.file.display()))?
        .take(512)
        .read_to_end(&mut head)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    if crate::evidence::bundle::looks_like_bundle(&head) {
        let trust = evidence::BundleTrust {
            anchors: &args.anchor,
            vault_key: args.vault_key.as_deref(),
            at: args.at.as_deref(),
            json: args.json,
            witnesses: &args.witnesses,
            quorum: args.quorum,
            x509_roots: &args.x509_roots,
        };
        return evidence::verify(&args.file, trust);
    }
    let (Some(certificate_path), [anchor_path]) = (&args.certificate, args.anchor.as_slice()) else {
        bail!("to verify a document, give --certificate and one --anchor (a bundle carries its own)");
    };
    if args.vault_key.is_none() && args.vault_certificate.is_none() {
        bail!("to verify a document, give --vault-key or --vault-certificate");
    }
    let record_path = args.record.clone().unwrap_or_else(|| with_suffix(&args.file, RECORD_SUFFIX));
    let receipt_path = args.receipt.clone().unwrap_or_else(|| with_suffix(&args.file, RECEIPT_SUFFIX));
    let anchor = keys::read_public_key(anchor_path)?;
    let mut checks = Vec::new();
    let mut check = |passed: bool, what: String| checks.push(Check { passed, what });
    let (vault_key, vault_window) = match (&args.vault_key, &args.vault_certificate) {
        (Some(path), _) => (keys::read_public_key(path)?, None),
        (None, Some(path)) => {
            let certificate = read_statement::<statement::VaultKeyCertificate>(path)?;
            let body = certificate.body();
            check(
                certificate.signer() == &anchor,
                format!(
                    "the vault key certificate (log {}) is signed by the trust anchor {}",
                    body.origin,
                    anchor.fingerprint()
                ),
            );
            (body.subject.clone(), Some((body.valid_from_ms, body.valid_until_ms)))
        }
        (None, None) => bail!("give --vault-key or --vault-certificate"),
    };
    let statements = (|| {
        let revocation = match (&args.certificate_revocation, &args.revocation_receipt) {
            (Some(revocation), Some(receipt)) => Some((
                read_statement::<CertificateRevocation>(revocation)?,
                read_statement::<statement::Receipt>(receipt)?,
            )),
            _ => None,
        };
        anyhow::Ok((
            read_statement::<Record>(&record_path)?,
            read_statement::<statement::Receipt>(&receipt_path)?,
            read_statement::<KeyCertificate>(certificate_path)?,
            revocation,
        ))
    })();
    match statements {
        Err(error) => check(false, format!("{error:#}")),
        Ok((record, receipt, certificate, revocation)) => {
            let body = record.body();
            let cert = certificate.body();
            let accepted_at = receipt.body().accepted_at_ms;
            check(true, format!("record {} is signed by key {}", record.id(), record.signer().fingerprint()));
            check(
                receipt.signer() == &vault_key,
                format!("the receipt is signed by the vault key {}", vault_key.fingerprint()),
            );
            if let Some((from, until)) = vault_window {
                check(
                    (from..=until).contains(&accepted_at),
                    format!(
                        "the vault key was certified when it signed the receipt (certificate valid {} to {})",
                        format_unix_ms(from),
                        format_unix_ms(until)
                    ),
                );
            }
            check(
                receipt.body().statement == record.id()
                    && receipt.body().statement_kind == <Record as statement::StatementBody>::KIND,
                format!(
                    "the receipt is for this record: accepted at {}, log entry #{}",
                    format_unix_ms(accepted_at),
                    receipt.body().log_index
                ),
            );
            check(
                certificate.signer() == &anchor,
                format!("certificate {} is signed by the trust anchor {}", certificate.id(), anchor.fingerprint()),
            );
            check(&cert.subject == record.signer(), "the certificate is for the key that signed the record".into());
            check(
                cert.agency == body.issuer_agency,
                format!("the certificate's agency {} is the record's issuer {}", cert.agency, body.issuer_agency),
            );
            check(
                (cert.valid_from_ms..=cert.valid_until_ms).contains(&accepted_at),
                format!(
                    "the key was certified when the vault accepted the record ({}; certificate valid {} to {})",
                    format_unix_ms(accepted_at),
                    format_unix_ms(cert.valid_from_ms),
                    format_unix_ms(cert.valid_until_ms)
                ),
            );
            if let Some((revocation, revocation_receipt)) = revocation {
                let revoked_at = revocation_receipt.body().accepted_at_ms;
                check(
                    revocation.signer() == &anchor && revocation.body().certificate == certificate.id(),
                    "the revocation is of this certificate, signed by the trust anchor".into(),
                );
                check(
                    revocation_receipt.signer() == &vault_key
                        && revocation_receipt.body().statement == revocation.id()
                        && revocation_receipt.body().statement_kind
                            == <CertificateRevocation as statement::StatementBody>::KIND,
                    "the revocation's receipt is the vault's, for this revocation".into(),
                );
                check(
                    revoked_at > accepted_at,
                    format!(
                        "the certificate was revoked at {}, {} the vault accepted the record",
                        format_unix_ms(revoked_at),
                        if revoked_at > accepted_at { "after" } else { "before" }
                    ),
                );
            }
            match hash_file(&args.file) {
                Err(error) => check(false, format!("{error:#}")),
                Ok((blake3, sha256, size)) => {
                    check(
                        size == body.size_bytes,
                        format!("size is {size} bytes; the record says {}", body.size_bytes),
                    );
                    check(blake3 == body.blake3, format!("BLAKE3 is {blake3}; the record says {}", body.blake3));
                    check(sha256 == body.sha256, format!("SHA-256 is {sha256}; the record says {}", body.sha256));
                }
            }
        }
    }
    for item in &checks {
        println!("{} {}", if item.passed { "ok  " } else { "FAIL" }, item.what);
    }
    if checks.iter().all(|c| c.passed) {
        println!(
            "VERIFIED: {} is the document the record describes, signed by a key certified and unrevoked when the \
             vault accepted it",
            args.file.display()
        );
        Ok(ExitCode::SUCCESS)
    } else {
        println!("NOT VERIFIED: see the FAIL lines above");
        Ok(ExitCode::from(EXIT_INVALID))
    }
}

fn show(path: &Path) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let json = match statement::peek_kind(&bytes) {
        Some(kind) if kind == <Record as statement::StatementBody>::KIND => {
            serde_json::json!({"kind": "record", "record": record_json(&Signed::<Record>::from_envelope(&bytes)?)})
        }
        Some(kind) if kind == <RecordRevocation as statement::StatementBody>::KIND => {
            let revocation = Signed::<RecordRevocation>::from_envelope(&bytes)?;
            let body = revocation.body();
            serde_json::json!({"kind": "record revocation", "id": revocation.id().to_hex(),
                "record": body.record.to_hex(), "issuer_agency": body.issuer_agency.as_str(),
                "reason": body.reason.as_str(), "signed_at": format_unix_ms(body.signed_at_ms),
                "signer": key_json(revocation.signer())})
        }
        Some(kind) if kind == <CopyCertification as statement::StatementBody>::KIND => serde_json::to_value(
            crate::json::copy_certification_json(&Signed::<CopyCertification>::from_envelope(&bytes)?),
        )?,
        Some(kind) if kind == <KeyCertificate as statement::StatementBody>::KIND => {
            let certificate = Signed::<KeyCertificate>::from_envelope(&bytes)?;
            let body = certificate.body();
            serde_json::json!({"kind": "key certificate", "id": certificate.id().to_hex(),
                "agency": body.agency.as_str(), "subject": key_json(&body.subject),
                "valid_from": format_unix_ms(body.valid_from_ms), "valid_until": format_unix_ms(body.valid_until_ms),
                "signed_at": format_unix_ms(body.signed_at_ms), "signer": key_json(certificate.signer())})
        }
        Some(kind) if kind == <CertificateRevocation as statement::StatementBody>::KIND => {
            let revocation = Signed::<CertificateRevocation>::from_envelope(&bytes)?;
            let body = revocation.body();
            serde_json::json!({"kind": "certificate revocation", "id": revocation.id().to_hex(),
                "certificate": body.certificate.to_hex(), "reason": body.reason.as_str(),
                "signed_at": format_unix_ms(body.signed_at_ms), "signer": key_json(revocation.signer())})
        }
        Some(kind) if kind == <statement::VaultKeyCertificate as statement::StatementBody>::KIND => {
            let certificate = Signed::<statement::VaultKeyCertificate>::from_envelope(&bytes)?;
            let body = certificate.body();
            serde_json::json!({"kind": "vault key certificate", "id": certificate.id().to_hex(),
                "origin": body.origin, "subject": key_json(&body.subject),
                "valid_from": format_unix_ms(body.valid_from_ms), "valid_until": format_unix_ms(body.valid_until_ms),
                "signed_at": format_unix_ms(body.signed_at_ms), "signer": key_json(certificate.signer())})
        }
        Some(kind) if kind == <Receipt as statement::StatementBody>::KIND => {
            let receipt = Signed::<Receipt>::from_envelope(&bytes)?;
            let body = receipt.body();
            serde_json::json!({"kind": "receipt", "id": receipt.id().to_hex(), "statement": body.statement.to_hex(),
                "statement_kind": body.statement_kind, "log_index": body.log_index,
                "accepted_at": format_unix_ms(body.accepted_at_ms), "signer": key_json(receipt.signer())})
        }
        _ => bail!("{} is not a Kho statement", path.display()),
    };
    println!("{}", serde_json::to_string_pretty(&json)?);
    Ok(ExitCode::SUCCESS)
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    #[serde(default)]
    certificates: Vec<PathBuf>,
    documents: Vec<ManifestDocument>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestDocument {
    file: PathBuf,
    record: Option<PathBuf>,
}

/// What to import: certificate files, then (document, record) pairs.
struct ImportPlan {
    certificates: Vec<PathBuf>,
    documents: Vec<(PathBuf, PathBuf)>,
}

fn import_plan(source: &Path) -> anyhow::Result<ImportPlan> {
    if source.is_dir() {
        let mut certificates = Vec::new();
        let mut documents = Vec::new();
        let mut entries: Vec<PathBuf> = std::fs::read_dir(source)
            .with_context(|| format!("cannot list {}", source.display()))?
            .map(|entry| entry.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
        entries.sort();
        for path in entries {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if name.ends_with(CERTIFICATE_SUFFIX) {
                certificates.push(path);
            } else if path.is_file()
                && ![RECORD_SUFFIX, RECEIPT_SUFFIX].iter().any(|suffix| name.ends_with(suffix))
                && !name.starts_with('.')
            {
                let record = with_suffix(&path, RECORD_SUFFIX);
                documents.push((path, record));
            }
        }
        return Ok(ImportPlan { certificates, documents });
    }
    let text = std::fs::read_to_string(source).with_context(|| format!("cannot read {}", source.display()))?;
    let manifest: Manifest =
        serde_json::from_str(&text).with_context(|| format!("{} is not a valid import manifest", source.display()))?;
    let base = source.parent().unwrap_or(Path::new("."));
    let documents = manifest
        .documents
        .into_iter()
        .map(|d| {
            let record = d.record.unwrap_or_else(|| with_suffix(&d.file, RECORD_SUFFIX));
            (base.join(d.file), base.join(record))
        })
        .collect();
    Ok(ImportPlan { certificates: manifest.certificates.into_iter().map(|c| base.join(c)).collect(), documents })
}

/// Keeps the vault's receipt beside a document (FILE.kho-receipt), for `kho verify`. A folder that cannot
/// take it gets a warning: the document is stored either way.
/// A progress bar counting bytes towards `total` (on stderr, drawn only on a terminal).
fn byte_progress(total: u64) -> indicatif::ProgressBar {
    let progress = indicatif::ProgressBar::new(total);
    progress.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    progress
}

fn keep_receipt(file: &Path, receipt: &Signed<statement::Receipt>, progress: &indicatif::ProgressBar) {
    let path = with_suffix(file, RECEIPT_SUFFIX);
    if let Err(error) = std::fs::write(&path, receipt.to_envelope()) {
        progress.suspend(|| eprintln!("warning: cannot keep the receipt in {}: {error}", path.display()));
    }
}

/// Imports one document: `Ok(Some(record id))` once it is durable, `Ok(None)` if it was already there.
/// Either way its receipt is kept beside it.
fn import_one(
    vault: &Vault,
    file: &Path,
    record_path: &Path,
    progress: &indicatif::ProgressBar,
) -> Result<Option<Digest>, String> {
    let envelope =
        std::fs::read(record_path).map_err(|e| format!("cannot read record {}: {e}", record_path.display()))?;
    let record =
        Signed::<Record>::from_envelope(&envelope).map_err(|e| format!("invalid record (malformed_record): {e}"))?;
    if let Some(view) = vault.record(&record.id()).map_err(|e| e.to_string())? {
        progress.inc(record.body().size_bytes);
        keep_receipt(file, &view.receipt, progress);
        return Ok(None);
    }
    let content = File::open(file).map_err(|e| format!("cannot open {}: {e}", file.display()))?;
    let accepted = vault
        .deposit(&envelope, progress.wrap_read(BufReader::new(content)))
        .map_err(|e| format!("{e} ({})", e.code()))?;
    keep_receipt(file, &accepted.receipt, progress);
    Ok(accepted.newly_accepted.then_some(accepted.id))
}

fn import(args: ImportArgs) -> anyhow::Result<ExitCode> {
    let anchors = args.anchors.iter().map(|path| keys::read_public_key(path)).collect::<Result<Vec<_>, _>>()?;
    let vault = Vault::open(VaultConfig::new(&args.data_dir, anchors))
        .with_context(|| format!("cannot open the vault in {}", args.data_dir.display()))?;
    let ImportPlan { certificates, documents } = import_plan(&args.source)?;
    let mut rejected: Vec<(PathBuf, String)> = Vec::new();
    let mut certified = 0;
    for path in &certificates {
        let result = std::fs::read(path)
            .map_err(|e| e.to_string())
            .and_then(|bytes| vault.add_certificate(&bytes).map_err(|e| format!("{e} ({})", e.code())));
        match result {
            Ok(accepted) => certified += usize::from(accepted.newly_accepted),
            Err(reason) => rejected.push((path.clone(), reason)),
        }
    }
    let total_bytes: u64 = documents.iter().filter_map(|(file, _)| std::fs::metadata(file).ok()).map(|m| m.len()).sum();
    let progress = byte_progress(total_bytes);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let outcomes = std::sync::Mutex::new(Vec::with_capacity(documents.len()));
    let (done, stop_checkpoints) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|scope| {
        // Checkpoints while the import runs, as the server signs them, so that what is imported is
        // provable without waiting for the end.
        let (checkpoint_vault, checkpoint_progress) = (&vault, &progress);
        let interval = std::time::Duration::from_millis(args.checkpoint_interval_ms);
        scope.spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stop_checkpoints.recv_timeout(interval) {
                if let Err(error) = checkpoint_vault.sign_checkpoint() {
                    checkpoint_progress.suspend(|| eprintln!("warning: signing a checkpoint failed: {error}"));
                }
            }
        });
        let workers: Vec<_> = (0..args.jobs)
            .map(|_| {
                scope.spawn(|| loop {
                    let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some((file, record)) = documents.get(index) else { break };
                    let outcome = import_one(&vault, file, record, &progress);
                    if let (true, Ok(Some(id))) = (args.verbose, &outcome) {
                        progress.suspend(|| println!("stored {id} {}", file.display()));
                    }
                    outcomes.lock().unwrap_or_else(|p| p.into_inner()).push((file.clone(), outcome));
                })
            })
            .collect();
        for worker in workers {
            let _ = worker.join();
        }
        drop(done);
    });
    let checkpoint = vault.sign_checkpoint().context("signing the last checkpoint")?;
    let (mut imported, mut present) = (0usize, 0usize);
    let mut outcomes = outcomes.into_inner().unwrap_or_else(|p| p.into_inner());
    outcomes.sort_by(|a, b| a.0.cmp(&b.0));
    for (file, outcome) in outcomes {
        match outcome {
            Ok(Some(_)) => imported += 1,
            Ok(None) => present += 1,
            Err(reason) => rejected.push((file, reason)),
        }
    }
    progress.finish_and_clear();
    println!(
        "certificates added: {certified}; documents imported: {imported}; already present (skipped): {present}; rejected: {}",
        rejected.len()
    );
    if let Some(checkpoint) = checkpoint {
        println!(
            "log checkpoint: {} entries, root {}",
            checkpoint.checkpoint.size,
            hex::encode(checkpoint.checkpoint.root)
        );
    }
    for (path, reason) in &rejected {
        println!("rejected {}: {reason}", path.display());
    }
    Ok(if rejected.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(EXIT_INVALID) })
}
