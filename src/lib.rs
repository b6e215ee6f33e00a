//! Kho: the storage engine of a citizen and organization e-data warehouse.
//!
//! Agencies deposit documents with a signed [`statement::Record`] ("agency A attests that the
//! document with this hash is a birth certificate of owner O..."); Kho verifies the signature against
//! issuer key certificates signed by configured trust anchors, stores the content once under its
//! BLAKE3 address in independently compressed frames, and returns a receipt signed with its own key.
//! Everything acknowledged is durable; everything served is verified.
//!
//! ```no_run
//! use kho::statement::{PublicKey, SecretKey};
//! use kho::vault::{Vault, VaultConfig};
//! # fn run(anchor: PublicKey, certificate: &[u8], record: &[u8], file: std::fs::File) -> anyhow::Result<()> {
//! let vault = Vault::open(VaultConfig::new("./kho-data", vec![anchor]))?;
//! vault.add_certificate(certificate)?;          // an anchor-signed issuer key certificate
//! let accepted = vault.deposit(record, file)?;   // a signed record and its content, streamed
//! let view = vault.record(&accepted.id)?;         // the record, its receipt and current status
//! # Ok(()) }
//! ```
//!
//! Modules in reading order: [`ids`] (checked identifiers), [`statement`] (the signed canonical
//! encoding), [`keys`] (key files), [`store`] (the storage seam and durable group commit), [`codec`]
//! (internal stored values), [`content`] (frames), [`vault`] (the use cases), [`json`] (shared JSON
//! shapes), [`config`] (the service configuration), [`backup`] (online backups and restores), [`http`]
//! (the API), [`cli`] (the binary).

pub mod backup;
pub mod cli;
pub mod codec;
pub mod config;
pub mod content;
pub mod error_code;
pub mod evidence;
pub mod files;
pub mod http;
pub mod ids;
pub mod json;
pub mod keys;
pub mod log;
pub mod qr;
pub mod sample;
pub mod statement;
pub mod store;
pub mod vault;
pub mod witness;
pub mod x509;
