//! Reuse figures, the measure Decree 107/2021 is judged by: how often agencies use a document already
//! in the warehouse instead of asking the person for it again. Computed from the log, in log order, so
//! anyone holding the log's entries with the statements and access events they commit to (an
//! auditor's view) gets the same figures (docs/OPERATIONS.md, "Reuse figures"):
//!
//! - a document **reused** by an agency on a day: a record read (its record, its content or its
//!   evidence bundle) by an officer of that agency for a stated dossier, allowed; counted once per
//!   (day, agency, dossier, record);
//! - a document **deposited** by an agency on a day: a record accepted with that issuing agency (owners'
//!   own uploads are not an agency's deposit).
//!
//! Days are calendar days at the vault's UTC offset (Vietnam's). The tally is kept in memory and
//! extended from where it stopped each time it is asked for, so a request reads only new entries.

use std::collections::{BTreeMap, HashSet};

use super::{AccessAction, AccessEvent, AccessOutcome, StorageError, Vault};
use crate::ids::{Code, Date, Digest};
use crate::log::{Entry, KIND_ACCESS_EVENT};
use crate::statement::{Record, StatementBody as _};

/// One agency's figures for one day.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReuseDay {
    pub day: Date,
    pub agency: Code,
    pub documents_reused: u64,
    pub documents_deposited: u64,
}

/// What the log says so far: the reuse figures, and the records and their bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogFigures {
    /// Per day and agency, oldest day first.
    pub days: Vec<ReuseDay>,
    /// Records accepted (uploads included).
    pub records: u64,
    /// Their documents' bytes as deposited (identical content is stored once, so the store may hold less).
    pub record_bytes: u64,
}

/// The figures so far, and where the log was read up to.
#[derive(Debug, Default)]
pub(super) struct ReuseTally {
    /// Log entries read.
    read_to: u64,
    records: u64,
    record_bytes: u64,
    /// (day, agency) → (reused, deposited).
    days: BTreeMap<(Date, Code), (u64, u64)>,
    /// The reuses already counted on the newest day seen (earlier days' are dropped as the log moves on).
    counted: HashSet<(Code, Code, Digest)>,
    counted_day: Option<Date>,
}

impl Vault {
    /// The reuse figures and record totals, from every durable log entry.
    pub fn log_figures(&self) -> Result<LogFigures, StorageError> {
        let mut tally = self.reuse.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let size = self.store.durable_size();
        while tally.read_to < size {
            let index = tally.read_to;
            self.tally_entry(&mut tally, index)?;
            tally.read_to += 1;
        }
        let days = tally
            .days
            .iter()
            .map(|((day, agency), (reused, deposited))| ReuseDay {
                day: *day,
                agency: agency.clone(),
                documents_reused: *reused,
                documents_deposited: *deposited,
            })
            .collect();
        Ok(LogFigures { days, records: tally.records, record_bytes: tally.record_bytes })
    }

    fn tally_entry(&self, tally: &mut ReuseTally, index: u64) -> Result<(), StorageError> {
        let corrupt = |what: String| StorageError::Corrupt(format!("log entry {index}: {what}"));
        let bytes = self.store.log_entry(index)?.ok_or_else(|| corrupt("missing".into()))?;
        let entry = Entry::decode(&bytes).map_err(|e| corrupt(e.to_string()))?;
        let day = self.today(entry.accepted_at_ms);
        if entry.kind == Record::KIND {
            let Some((record, _)) = self.decode_statement::<Record>(self.store.record(&entry.id)?)? else {
                return Err(corrupt(format!("record {} is not stored", entry.id)));
            };
            tally.records += 1;
            tally.record_bytes += record.body().size_bytes;
            let agency = &record.body().issuer_agency;
            if agency.as_str() != crate::statement::SELF_UPLOAD_CODE {
                tally.days.entry((day, agency.clone())).or_default().1 += 1;
            }
            return Ok(());
        }
        if entry.kind != KIND_ACCESS_EVENT {
            return Ok(());
        }
        let owner = entry.owner.as_ref().ok_or_else(|| corrupt("an access event without its owner".into()))?;
        let bytes = self.store.access_event(&owner.owner, index)?.ok_or_else(|| corrupt("event missing".into()))?;
        let event = AccessEvent::decode(&bytes).map_err(|e| corrupt(e.to_string()))?;
        if let Some((agency, dossier, record)) = reuse_of(&event) {
            if tally.counted_day != Some(day) {
                tally.counted.clear();
                tally.counted_day = Some(day);
            }
            if tally.counted.insert((agency.clone(), dossier.clone(), record)) {
                tally.days.entry((day, agency.clone())).or_default().0 += 1;
            }
        }
        Ok(())
    }
}

/// The (agency, dossier, record) an access event reuses, if it is a reuse.
fn reuse_of(event: &AccessEvent) -> Option<(&Code, &Code, Digest)> {
    let read =
        matches!(event.action, AccessAction::ReadRecord | AccessAction::ReadContent | AccessAction::ExportRecord);
    if !read || event.role != "officer" || event.outcome != AccessOutcome::Allowed {
        return None;
    }
    Some((event.agency.as_ref()?, event.purpose.as_ref()?, event.record?))
}
