//! Links between local accounts and identity-provider identities: the same person
//! under two names. `portcullis login` will make them; the gate reads them so that
//! nobody approves their own request under the other identity.

use super::{Store, StoreError, session::now_ms};
use serde::{Deserialize, Serialize};
use sqlx::Row as _;

/// A local account known to be the same person as an identity-provider subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityLink {
    pub uid: u32,
    /// The uid's user name when the link was made, for people reading it.
    pub user: Option<String>,
    pub issuer: String,
    pub subject: String,
    /// Unix milliseconds.
    pub created_at: i64,
}

impl IdentityLink {
    /// Whether this link names the identity-provider identity `issuer`/`subject`.
    #[must_use]
    pub fn is_idp(&self, issuer: &str, subject: &str) -> bool {
        self.issuer == issuer && self.subject == subject
    }
}

impl Store {
    /// Records that local account `uid` (called `user`) is the identity-provider
    /// subject `subject` of `issuer`. `Ok(false)` if that link already existed.
    pub async fn link_identity(
        &self,
        uid: u32,
        user: Option<&str>,
        issuer: &str,
        subject: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO identity_links (uid, user_name, issuer, subject, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(i64::from(uid))
        .bind(user)
        .bind(issuer)
        .bind(subject)
        .bind(now_ms())
        .execute(&self.pool)
        .await;
        match done {
            Ok(_) => Ok(true),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(false),
            Err(source) => Err(self.query_error("link an identity", source)),
        }
    }

    /// Links local account `uid` to `issuer`/`subject` until `expires_at` (Unix ms),
    /// renewing the link if it exists (`portcullis login`).
    pub async fn link_identity_until(
        &self,
        uid: u32,
        user: Option<&str>,
        issuer: &str,
        subject: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO identity_links (uid, user_name, issuer, subject, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (uid, issuer, subject) DO UPDATE SET expires_at = excluded.expires_at",
        )
        .bind(i64::from(uid))
        .bind(user)
        .bind(issuer)
        .bind(subject)
        .bind(now_ms())
        .bind(expires_at)
        .execute(&self.pool)
        .await
        .map_err(|source| self.query_error("link an identity", source))?;
        Ok(())
    }

    /// Ends every link of local account `uid` (`portcullis logout`); how many.
    pub async fn unlink_identities(&self, uid: u32) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM identity_links WHERE uid = $1")
            .bind(i64::from(uid))
            .execute(&self.pool)
            .await
            .map_err(|source| self.query_error("unlink identities", source))?;
        Ok(done.rows_affected())
    }

    /// The identity-provider identities linked to local account `uid`, oldest first.
    pub async fn linked_identities(&self, uid: u32) -> Result<Vec<IdentityLink>, StoreError> {
        let rows = sqlx::query(
            "SELECT uid, user_name, issuer, subject, created_at FROM identity_links \
             WHERE uid = $1 AND (expires_at IS NULL OR expires_at > $2) ORDER BY created_at, issuer, subject",
        )
        .bind(i64::from(uid))
        .bind(now_ms())
        .fetch_all(&self.pool)
        .await
        .map_err(|source| self.query_error("list linked identities", source))?;
        let read = |source| self.query_error("read an identity link row", source);
        rows.iter()
            .map(|row| {
                Ok(IdentityLink {
                    uid,
                    user: row.try_get("user_name").map_err(read)?,
                    issuer: row.try_get("issuer").map_err(read)?,
                    subject: row.try_get("subject").map_err(read)?,
                    created_at: row.try_get("created_at").map_err(read)?,
                })
            })
            .collect()
    }
}
