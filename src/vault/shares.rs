//! Share links: an owner lets a third party (a bank, an employer) see one document for a limited time.
//!
//! A share is the owner's setting, kept in the catalog; it is not a statement and not a log entry, but
//! every use of it is an access event in the owner's log (the HTTP edge records it before answering).
//! Its token is the share's random id followed by a keyed hash of that id under a key derived from the
//! vault key: the catalog holds no secret, a forged or altered token is refused before any lookup, and
//! the vault can show the owner the same link again. A revoked or expired share stops working at once,
//! because every use reads the grant and its revocation from the catalog.

use crate::error_code::ErrorCode;
use base64::Engine as _;
use rand_core::RngCore as _;
use serde::{Deserialize, Serialize};

use super::{StorageError, Vault};
use crate::codec;
use crate::ids::{now_unix_ms, Digest, OwnerId, Title};

/// Longest a share may last.
pub const SHARE_DAYS_MAX: u32 = 30;
/// Most shares an owner may have active at once.
pub const SHARES_ACTIVE_PER_OWNER_MAX: usize = 50;
/// Most shares listed for an owner (active ones first come from the newest).
pub const SHARES_LISTED_MAX: usize = 200;
/// The context of the key that makes share tokens (never reused for anything else).
pub(super) const SHARE_TOKEN_KEY_CONTEXT: &str = "kho 2026-11 share link token v1";
const TOKEN_MAC_BYTES: usize = 16;
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// A share's random id (shown to the owner; its token is what the recipient holds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ShareId(pub [u8; 16]);

impl ShareId {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn parse_hex(text: &str) -> Option<ShareId> {
        let bytes = hex::decode(text).ok()?;
        Some(ShareId(bytes.try_into().ok()?))
    }
}

impl std::fmt::Display for ShareId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// A share as stored, with its revocation if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    pub id: ShareId,
    pub owner: OwnerId,
    pub record: Digest,
    /// Who it is for, in the owner's words ("Vietcombank, loan application").
    pub recipient: Title,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
}

/// Whether a share may be used now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShareState {
    Active,
    Expired,
    Revoked,
}

impl Share {
    pub fn state(&self, now_ms: i64) -> ShareState {
        if self.revoked_at_ms.is_some_and(|at| at <= now_ms) {
            ShareState::Revoked
        } else if now_ms >= self.expires_at_ms {
            ShareState::Expired
        } else {
            ShareState::Active
        }
    }
}

/// The stored grant (`codec`).
#[derive(Serialize, Deserialize)]
struct StoredShare {
    owner: String,
    record: [u8; 32],
    recipient: String,
    created_at_ms: i64,
    expires_at_ms: i64,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShareError {
    /// Also for another owner's record or share: an owner cannot learn that they exist.
    #[error("no such record or share in your store")]
    NotFound,
    #[error("a share lasts from one second to {SHARE_DAYS_MAX} days")]
    InvalidDuration,
    #[error("you already have {SHARES_ACTIVE_PER_OWNER_MAX} active shares; revoke one first")]
    TooMany,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl ShareError {
    pub fn code(&self) -> ErrorCode {
        match self {
            ShareError::NotFound => ErrorCode::ShareNotFound,
            ShareError::InvalidDuration => ErrorCode::InvalidShareDuration,
            ShareError::TooMany => ErrorCode::TooManyShares,
            ShareError::Storage(_) => ErrorCode::StorageError,
        }
    }
}

impl From<crate::store::StoreError> for ShareError {
    fn from(error: crate::store::StoreError) -> Self {
        ShareError::Storage(error.into())
    }
}

impl Vault {
    /// Lets whoever holds the returned share's token see `owner`'s record `record` for `valid_for`
    /// (at most [`SHARE_DAYS_MAX`] days). Durable when it returns.
    pub fn create_share(
        &self,
        owner: &OwnerId,
        record: &Digest,
        recipient: Title,
        valid_for: std::time::Duration,
    ) -> Result<Share, ShareError> {
        let valid_for_ms = i64::try_from(valid_for.as_millis()).unwrap_or(i64::MAX);
        if !(1000..=i64::from(SHARE_DAYS_MAX) * 86_400_000).contains(&valid_for_ms) {
            return Err(ShareError::InvalidDuration);
        }
        match self.record(record)? {
            Some(view) if &view.record.body().owner == owner => {}
            _ => return Err(ShareError::NotFound),
        }
        let now = now_unix_ms();
        let active = self.shares(owner)?.iter().filter(|share| share.state(now) == ShareState::Active).count();
        if active >= SHARES_ACTIVE_PER_OWNER_MAX {
            return Err(ShareError::TooMany);
        }
        let mut id = [0u8; 16];
        rand_core::OsRng.fill_bytes(&mut id);
        let share = Share {
            id: ShareId(id),
            owner: owner.clone(),
            record: *record,
            recipient,
            created_at_ms: now,
            expires_at_ms: now + valid_for_ms,
            revoked_at_ms: None,
        };
        let stored = StoredShare {
            owner: owner.as_str().to_owned(),
            record: record.0,
            recipient: share.recipient.as_str().to_owned(),
            created_at_ms: share.created_at_ms,
            expires_at_ms: share.expires_at_ms,
        };
        self.store.put_share(&id, owner, now, &codec::encode(&stored))?;
        self.store.sync()?;
        Ok(share)
    }

    /// An owner's shares, newest first (at most [`SHARES_LISTED_MAX`]).
    pub fn shares(&self, owner: &OwnerId) -> Result<Vec<Share>, StorageError> {
        let mut shares = Vec::new();
        for id in self.store.owner_shares(owner).take(SHARES_LISTED_MAX) {
            let id = ShareId(id?);
            let share = self.load_share(id)?.ok_or_else(|| StorageError::Corrupt(format!("share {id} is missing")))?;
            shares.push(share);
        }
        Ok(shares)
    }

    /// Revokes one of `owner`'s shares; it stops working at once. Revoking twice keeps the first time.
    pub fn revoke_share(&self, owner: &OwnerId, id: ShareId) -> Result<Share, ShareError> {
        let mut share = match self.load_share(id)? {
            Some(share) if &share.owner == owner => share,
            _ => return Err(ShareError::NotFound),
        };
        if share.revoked_at_ms.is_none() {
            let now = now_unix_ms();
            self.store.revoke_share(&id.0, now)?;
            self.store.sync()?;
            share.revoked_at_ms = Some(now);
        }
        Ok(share)
    }

    /// The link token of a share: what its recipient presents.
    pub fn share_token(&self, id: ShareId) -> String {
        let mut bytes = id.0.to_vec();
        bytes.extend_from_slice(&self.share_mac(id).as_bytes()[..TOKEN_MAC_BYTES]);
        B64.encode(bytes)
    }

    /// The share a token stands for, whatever its state; `None` for a token this vault did not make.
    pub fn share_by_token(&self, token: &str) -> Result<Option<Share>, StorageError> {
        let Some(id) = self.share_id_of_token(token) else { return Ok(None) };
        self.load_share(id)
    }

    fn share_id_of_token(&self, token: &str) -> Option<ShareId> {
        if token.len() > 64 {
            return None;
        }
        let bytes = B64.decode(token).ok()?;
        let (id, mac) = bytes.split_at_checked(16)?;
        if mac.len() != TOKEN_MAC_BYTES {
            return None;
        }
        let id = ShareId(id.try_into().ok()?);
        // Made under the current key or, before a rotation, a retired one. Compared as hashes
        // (blake3::Hash equality is constant-time), so a token cannot be guessed byte by byte.
        let given = blake3::hash(mac);
        self.share_token_keys(SHARE_TOKEN_KEY_CONTEXT)
            .iter()
            .any(|key| given == blake3::hash(&blake3::keyed_hash(key, &id.0).as_bytes()[..TOKEN_MAC_BYTES]))
            .then_some(id)
    }

    fn share_mac(&self, id: ShareId) -> blake3::Hash {
        blake3::keyed_hash(&self.key.derive_key(SHARE_TOKEN_KEY_CONTEXT), &id.0)
    }

    fn load_share(&self, id: ShareId) -> Result<Option<Share>, StorageError> {
        let Some(entry) = self.store.share(&id.0)? else { return Ok(None) };
        let revoked_at_ms = entry.revoked_at_ms;
        let stored: StoredShare =
            codec::decode(&entry.grant).map_err(|e| StorageError::Corrupt(format!("share {id}: {e}")))?;
        let owner = OwnerId::parse(&stored.owner).map_err(|e| StorageError::Corrupt(format!("share {id}: {e}")))?;
        let recipient =
            Title::parse(&stored.recipient).map_err(|e| StorageError::Corrupt(format!("share {id}: {e}")))?;
        Ok(Some(Share {
            id,
            owner,
            record: Digest(stored.record),
            recipient,
            created_at_ms: stored.created_at_ms,
            expires_at_ms: stored.expires_at_ms,
            revoked_at_ms,
        }))
    }
}
