//! Each person's access log: who (subject, role, agency) did what with their data, why, when, and how
//! it ended. Every event goes through the sequencer like a statement, so it is a leaf of the
//! transparency log and a link of the owner's chain, and it is durable before any of the owner's data
//! is sent.
//!
//! Events have a canonical encoding (docs/FORMAT.md section 4.3), so that anyone holding an event can
//! rebuild its log leaf; each carries a random salt, so that its public leaf hash cannot be confirmed
//! by guessing who read what.

use rand_core::RngCore as _;

use super::sequencer::{Acceptance, Decision};
use super::{check_page, QueryError, StorageError, Vault};
use crate::ids::{Code, Digest, OwnerId};
use crate::log::KIND_ACCESS_EVENT;
use crate::statement::{DecodeError, Reader, Writer};
use crate::store::{Change, Cursor};

/// The version byte in front of an event's canonical bytes.
pub const ACCESS_EVENT_VERSION: u8 = 1;

/// What someone did with a person's documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessAction {
    ReadRecord,
    ReadContent,
    ListRecords,
    ReadAccessLog,
    /// An owner's whole store as an evidence bundle.
    ExportStore,
    /// One record's evidence bundle (its document included).
    ExportRecord,
}

impl AccessAction {
    pub fn as_str(self) -> &'static str {
        match self {
            AccessAction::ReadRecord => "read_record",
            AccessAction::ReadContent => "read_content",
            AccessAction::ListRecords => "list_records",
            AccessAction::ReadAccessLog => "read_access_log",
            AccessAction::ExportStore => "export_store",
            AccessAction::ExportRecord => "export_record",
        }
    }

    fn code(self) -> u8 {
        match self {
            AccessAction::ReadRecord => 1,
            AccessAction::ReadContent => 2,
            AccessAction::ListRecords => 3,
            AccessAction::ReadAccessLog => 4,
            AccessAction::ExportStore => 5,
            AccessAction::ExportRecord => 6,
        }
    }

    fn from_code(code: u8) -> Result<AccessAction, DecodeError> {
        Ok(match code {
            1 => AccessAction::ReadRecord,
            2 => AccessAction::ReadContent,
            3 => AccessAction::ListRecords,
            4 => AccessAction::ReadAccessLog,
            5 => AccessAction::ExportStore,
            6 => AccessAction::ExportRecord,
            other => return Err(DecodeError::BadOptionFlag { field: "action", flag: other }),
        })
    }
}

/// Whether the access was allowed; denials are logged too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessOutcome {
    Allowed,
    Denied { reason: String },
}

/// Sixteen random bytes in every event: its leaf hash cannot be confirmed from a guess of the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Salt(pub [u8; 16]);

impl Salt {
    pub fn random() -> Salt {
        let mut bytes = [0u8; 16];
        rand_core::OsRng.fill_bytes(&mut bytes);
        Salt(bytes)
    }
}

/// One entry of an owner's access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessEvent {
    pub at_ms: i64,
    pub owner: OwnerId,
    pub subject: String,
    pub role: String,
    pub agency: Option<Code>,
    /// The dossier code the reader stated.
    pub purpose: Option<Code>,
    pub record: Option<Digest>,
    pub action: AccessAction,
    pub outcome: AccessOutcome,
    pub salt: Salt,
}

impl AccessEvent {
    /// The canonical bytes: `version u8 | at_ms i64 | owner | subject | role | agency? | purpose? |
    /// record? | action u8 | outcome u8 (1 allowed, 2 denied + reason) | salt [16]`, strings as u32 length
    /// and UTF-8, options as a 0/1 flag before the value.
    pub fn encode(&self) -> Vec<u8> {
        let mut writer = Writer::default();
        writer.u8(ACCESS_EVENT_VERSION);
        writer.i64(self.at_ms);
        writer.str(self.owner.as_str());
        writer.str(&self.subject);
        writer.str(&self.role);
        writer.option(self.agency.as_ref(), |w, code| w.str(code.as_str()));
        writer.option(self.purpose.as_ref(), |w, code| w.str(code.as_str()));
        writer.option(self.record.as_ref(), |w, digest| w.digest(digest));
        writer.u8(self.action.code());
        match &self.outcome {
            AccessOutcome::Allowed => writer.u8(1),
            AccessOutcome::Denied { reason } => {
                writer.u8(2);
                writer.str(reason);
            }
        }
        writer.raw(&self.salt.0);
        writer.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<AccessEvent, DecodeError> {
        let mut reader = Reader::new(bytes);
        let version = reader.u8("access event version")?;
        if version != ACCESS_EVENT_VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        let event = AccessEvent {
            at_ms: reader.i64("at_ms")?,
            owner: OwnerId::parse(reader.str("owner")?)?,
            subject: reader.str("subject")?.to_owned(),
            role: reader.str("role")?.to_owned(),
            agency: reader.option("agency", |r| r.code("agency"))?,
            purpose: reader.option("purpose", |r| r.code("purpose"))?,
            record: reader.option("record", |r| r.digest("record"))?,
            action: AccessAction::from_code(reader.u8("action")?)?,
            outcome: match reader.u8("outcome")? {
                1 => AccessOutcome::Allowed,
                2 => AccessOutcome::Denied { reason: reader.str("reason")?.to_owned() },
                other => return Err(DecodeError::BadOptionFlag { field: "outcome", flag: other }),
            },
            salt: Salt(reader.take(16, "salt")?.try_into().map_err(|_| DecodeError::Truncated("salt"))?),
        };
        reader.finish()?;
        Ok(event)
    }

    /// The event's id: SHA-256 of its canonical bytes (what its log leaf names).
    pub fn id(&self) -> Digest {
        Digest::sha256(&self.encode())
    }
}

/// An access entry in the log, not yet durable ([`Vault::commit_access`]).
#[must_use = "nothing may be answered on an access entry's strength before it is durable (Vault::access_durable)"]
#[derive(Debug)]
pub struct CommittedAccess {
    index: u64,
}

/// A page of an owner's access log, newest first, with each entry's log index.
#[derive(Debug, Clone)]
pub struct AccessPage {
    pub entries: Vec<(u64, AccessEvent)>,
    pub next_cursor: Option<String>,
}

impl Vault {
    /// Records an access to an owner's documents and returns once it is durable, with its log index.
    /// Callers must not send any of the owner's data before this returns `Ok`.
    pub fn record_access(&self, event: &AccessEvent) -> Result<u64, StorageError> {
        let committed = self.commit_access(event)?;
        self.store.sync()?;
        Ok(committed.index)
    }

    /// Records an access like [`Vault::record_access`] but returns as soon as it is committed, for a
    /// caller that waits for it without holding a thread ([`Vault::access_durable`]), which it must
    /// before sending any of the owner's data.
    pub fn commit_access(&self, event: &AccessEvent) -> Result<CommittedAccess, StorageError> {
        let bytes = event.encode();
        let id = Digest::sha256(&bytes);
        let sequenced = self.accept_committed(move || {
            Ok::<_, StorageError>(Decision::Accept(Acceptance {
                kind: KIND_ACCESS_EVENT,
                id,
                owner: Some(event.owner.clone()),
                accepted_at_ms: event.at_ms,
                change: Change::Access { owner: event.owner.clone(), event: bytes },
                receipted: false,
            }))
        })?;
        Ok(CommittedAccess { index: sequenced.index })
    }

    /// Returns once a committed access entry is durable, with its log index. Awaited on tokio's
    /// runtime: the sync runs on its blocking pool, one at a time for every waiter (`Store::durable`).
    pub async fn access_durable(&self, committed: CommittedAccess) -> Result<u64, StorageError> {
        self.store.durable(committed.index + 1).await?;
        Ok(committed.index)
    }

    /// An owner's access log, newest first, one page at a time.
    pub fn access_log(
        &self,
        owner: &OwnerId,
        cursor: Option<&str>,
        page_size: usize,
    ) -> Result<AccessPage, QueryError> {
        let after = check_page(cursor, page_size)?;
        let mut entries: Vec<(u64, AccessEvent)> = Vec::new();
        let mut last_cursor = None;
        for item in self.store.access_log(owner, after) {
            let (cursor, sequence, value) = item?;
            if !self.store.is_visible(sequence) {
                continue;
            }
            if entries.len() == page_size {
                return Ok(AccessPage { entries, next_cursor: last_cursor.map(|c: Cursor| c.to_string()) });
            }
            let event = AccessEvent::decode(&value)
                .map_err(|e| StorageError::Corrupt(format!("access log entry {sequence}: {e}")))?;
            entries.push((sequence, event));
            last_cursor = Some(cursor);
        }
        Ok(AccessPage { entries, next_cursor: None })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_canonically_and_salts_differ() {
        let event = AccessEvent {
            at_ms: 1_700_000_000_123,
            owner: OwnerId::parse("001204012345").expect("owner"),
            subject: "officer-7".into(),
            role: "officer".into(),
            agency: Some(Code::parse("agency", "000.00.00.H26").expect("code")),
            purpose: None,
            record: Some(Digest([3; 32])),
            action: AccessAction::ReadContent,
            outcome: AccessOutcome::Denied { reason: "purpose_required".into() },
            salt: Salt::random(),
        };
        let bytes = event.encode();
        assert_eq!(AccessEvent::decode(&bytes), Ok(event.clone()));
        assert!(AccessEvent::decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(AccessEvent::decode(&[bytes.clone(), vec![0]].concat()).is_err());
        let resalted = AccessEvent { salt: Salt::random(), ..event.clone() };
        assert_ne!(resalted.id(), event.id(), "the same access twice has two unlinkable ids");
    }
}
