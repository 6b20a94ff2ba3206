//! The requester's justification: why they need a held action. It arrives with the
//! action (each protocol reads its own way of saying it into [`super::Ask`]) or later
//! by `portcullis justify ID "…"`, and goes into the request, the audit record, the
//! webhooks and the console.

use super::{Gate, notify::EventKind};
use crate::record::{RequestStatus, StoreError};

/// Longest justification kept, in characters; longer ones are cut.
pub const MAX_JUSTIFICATION: usize = 1000;

/// Why a justification was refused; each says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum JustifyError {
    #[error("no pending request {0} of yours; list them with `portcullis approvals`")]
    NotFound(String),
    #[error("request {0} is no longer pending; nothing to justify")]
    NotPending(String),
    #[error("the justification is empty; say why you need it")]
    Empty,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// `text` on one line without control characters, cut to [`MAX_JUSTIFICATION`]
/// characters.
#[must_use]
pub fn bounded_justification(text: &str) -> String {
    let printable: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    printable
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(MAX_JUSTIFICATION)
        .collect()
}

impl Gate {
    /// The requester (local `uid`) says why they need pending request `id`.
    pub async fn justify(&self, id: &str, uid: u32, text: &str) -> Result<String, JustifyError> {
        let text = bounded_justification(text);
        if text.is_empty() {
            return Err(JustifyError::Empty);
        }
        let request = self
            .store
            .request(id)
            .await?
            .filter(|r| r.principal.uid == uid)
            .ok_or_else(|| JustifyError::NotFound(id.to_owned()))?;
        if request.status != RequestStatus::Pending
            || !self.store.set_justification(&request.id, &text).await?
        {
            return Err(JustifyError::NotPending(request.id));
        }
        self.audit(
            "request_justified",
            &request.id,
            Some(&request.principal.label()),
            serde_json::json!({ "justification": text }),
        )
        .await;
        if let Some(r) = self.store.request(&request.id).await? {
            self.announce(EventKind::RequestJustified, &r, "pending");
        }
        Ok(request.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn justifications_are_one_bounded_line() {
        assert_eq!(bounded_justification("  fix\n\tOPS-1 \u{7}"), "fix OPS-1");
        assert_eq!(
            bounded_justification(&"x".repeat(5000)).len(),
            MAX_JUSTIFICATION
        );
    }
}
