//! The requester's justification of a pending request, set after the fact by
//! `portcullis justify`.

use super::{Store, StoreError};

impl Store {
    /// Sets the justification of pending request `id`; `Ok(false)` if it is no
    /// longer pending.
    pub async fn set_justification(&self, id: &str, text: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE requests SET justification = $1 WHERE id = $2 AND status = 'pending'",
        )
        .bind(text)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(|source| self.query_error("record a justification", source))?;
        Ok(done.rows_affected() == 1)
    }
}
