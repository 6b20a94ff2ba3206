//! Links between local accounts and identity-provider identities: the same person
//! under two names. `portcullis login` makes them; the gate reads them so that
//! nobody approves their own request under the other identity, and a connection's
//! principal carries the newest one (its email and groups) into policy and records.

use super::{Store, StoreError, session::now_ms};
use crate::identity::{LinkedIdentity, MAX_LINKED_GROUPS};
use serde::{Deserialize, Serialize};
use sqlx::{Row as _, any::AnyRow};

/// A local account known to be the same person as an identity-provider subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityLink {
    pub uid: u32,
    /// The uid's user name when the link was made, for people reading it.
    pub user: Option<String>,
    pub issuer: String,
    pub subject: String,
    /// The provider's verified email at sign-in (`portcullis login`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The provider's group claims at sign-in (`portcullis login`).
    #[serde(default)]
    pub groups: Vec<String>,
    /// Unix milliseconds: when the link was made or last renewed.
    pub created_at: i64,
    /// Unix milliseconds; `None` for a link without end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}

impl IdentityLink {
    /// Whether this link names the identity-provider identity `issuer`/`subject`.
    #[must_use]
    pub fn is_idp(&self, issuer: &str, subject: &str) -> bool {
        self.issuer == issuer && self.subject == subject
    }

    /// The identity this link names, as a principal carries it.
    #[must_use]
    pub fn identity(&self) -> LinkedIdentity {
        LinkedIdentity {
            issuer: self.issuer.clone(),
            subject: self.subject.clone(),
            email: self.email.clone(),
            groups: self.groups.clone(),
            expires_at: self.expires_at,
        }
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

    /// Links local account `uid` (called `user`) to `identity` until its
    /// `expires_at` (Unix ms), renewing the link, its email and groups if it exists
    /// (`portcullis login`). Keeps at most [`MAX_LINKED_GROUPS`] groups.
    pub async fn link_identity_until(
        &self,
        uid: u32,
        user: Option<&str>,
        identity: &LinkedIdentity,
    ) -> Result<(), StoreError> {
        let groups = identity
            .groups
            .iter()
            .take(MAX_LINKED_GROUPS)
            .collect::<Vec<_>>();
        let groups = serde_json::to_string(&groups).map_err(|source| StoreError::Encode {
            op: "encode the linked identity's groups",
            source,
        })?;
        sqlx::query(
            "INSERT INTO identity_links \
             (uid, user_name, issuer, subject, created_at, expires_at, email, idp_groups) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (uid, issuer, subject) DO UPDATE SET expires_at = excluded.expires_at, \
             created_at = excluded.created_at, email = excluded.email, \
             idp_groups = excluded.idp_groups",
        )
        .bind(i64::from(uid))
        .bind(user)
        .bind(&identity.issuer)
        .bind(&identity.subject)
        .bind(now_ms())
        .bind(identity.expires_at)
        .bind(identity.email.as_deref())
        .bind(groups)
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
            "SELECT uid, user_name, issuer, subject, created_at, expires_at, email, idp_groups \
             FROM identity_links WHERE uid = $1 AND (expires_at IS NULL OR expires_at > $2) \
             ORDER BY created_at, issuer, subject",
        )
        .bind(i64::from(uid))
        .bind(now_ms())
        .fetch_all(&self.pool)
        .await
        .map_err(|source| self.query_error("list linked identities", source))?;
        rows.iter().map(|row| self.link_row(uid, row)).collect()
    }

    /// The identity a connection by `uid` carries: its newest live link (the last
    /// `portcullis login`), if any.
    pub async fn linked_identity(&self, uid: u32) -> Result<Option<LinkedIdentity>, StoreError> {
        let links = self.linked_identities(uid).await?;
        Ok(links.last().map(IdentityLink::identity))
    }

    fn link_row(&self, uid: u32, row: &AnyRow) -> Result<IdentityLink, StoreError> {
        let read = |source| self.query_error("read an identity link row", source);
        let groups: Option<String> = row.try_get("idp_groups").map_err(read)?;
        let groups = match groups {
            None => Vec::new(),
            Some(text) => {
                serde_json::from_str::<Vec<String>>(&text).map_err(|e| StoreError::Corrupt {
                    url: self.url.to_string(),
                    id: format!("identity link of uid {uid}"),
                    column: "idp_groups",
                    detail: e.to_string(),
                })?
            }
        };
        Ok(IdentityLink {
            uid,
            user: row.try_get("user_name").map_err(read)?,
            issuer: row.try_get("issuer").map_err(read)?,
            subject: row.try_get("subject").map_err(read)?,
            email: row.try_get("email").map_err(read)?,
            groups,
            created_at: row.try_get("created_at").map_err(read)?,
            expires_at: row.try_get("expires_at").map_err(read)?,
        })
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    fn identity(subject: &str, groups: &[&str], expires_at: i64) -> LinkedIdentity {
        LinkedIdentity {
            issuer: "https://id.example.com".into(),
            subject: subject.into(),
            email: Some(format!("{subject}@example.com")),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            expires_at: Some(expires_at),
        }
    }

    #[tokio::test]
    async fn a_login_link_keeps_email_and_groups_and_the_newest_one_wins() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("p.db").display());
        let store = Store::open(&url).await.unwrap();
        assert_eq!(store.linked_identity(65534).await.unwrap(), None);
        let later = now_ms() + 60_000;
        let carol = identity("carol", &["analysts"], later);
        store
            .link_identity_until(65534, Some("nobody"), &carol)
            .await
            .unwrap();
        assert_eq!(
            store.linked_identity(65534).await.unwrap(),
            Some(carol.clone())
        );
        // A second sign-in as someone else: the newest link is the one carried.
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let dana = identity("dana", &[], later);
        store.link_identity_until(65534, None, &dana).await.unwrap();
        assert_eq!(store.linked_identity(65534).await.unwrap(), Some(dana));
        // Signing in as carol again renews her link, with the groups she has now.
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let renewed = identity("carol", &["analysts", "oncall"], later + 1);
        store
            .link_identity_until(65534, None, &renewed)
            .await
            .unwrap();
        assert_eq!(store.linked_identity(65534).await.unwrap(), Some(renewed));
        assert_eq!(store.linked_identities(65534).await.unwrap().len(), 2);
        // An expired link is not carried.
        store
            .link_identity_until(1000, None, &identity("erin", &["x"], now_ms() - 1))
            .await
            .unwrap();
        assert_eq!(store.linked_identity(1000).await.unwrap(), None);
        store.close().await;
    }
}
