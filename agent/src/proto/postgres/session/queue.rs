//! The queue of statements the server has been sent and not yet answered, as the
//! server's replies complete them: a command's tag and row count, an error that
//! ends the rest of its batch, the end of a batch.

use super::super::wire::Message;
use super::{PendingKind, Shared};
use crate::record::StatementRecord;

/// A `CommandComplete` (or `EmptyQueryResponse`, `PortalSuspended`): its tag and
/// row count go in the front statement's record, which an `Execute` completes.
pub(super) fn completed(shared: &mut Shared, m: &Message, done: &mut Vec<StatementRecord>) {
    let tag = if m.tag() == b'C' {
        m.fields().cstr().ok().map(str::to_owned)
    } else {
        None
    };
    if let Some(p) = shared.pending.front_mut()
        && let (Some(r), Some(tag)) = (p.record.as_mut(), tag)
    {
        let rows = tag.rsplit(' ').next().and_then(|n| n.parse::<i64>().ok());
        if let Some(rows) = rows {
            r.rows_affected = Some(r.rows_affected.unwrap_or(0) + rows);
        }
        r.command_tag = Some(match r.command_tag.take() {
            Some(before) => format!("{before}; {tag}"),
            None => tag,
        });
    }
    if front_is_execute(shared) {
        done.extend(pop(shared));
    }
}

pub(super) fn front_is_execute(shared: &Shared) -> bool {
    shared
        .pending
        .front()
        .is_some_and(|p| p.kind == PendingKind::Execute)
}

/// Describes not answered yet never will be (after an error, the server skips the
/// rest of the batch; at `ReadyForQuery` the batch is over).
pub(super) fn skip_describes(shared: &mut Shared) {
    while shared
        .pending
        .front()
        .is_some_and(|p| matches!(p.kind, PendingKind::Describe { .. }))
    {
        shared.pending.pop_front();
    }
}

/// After an error the server skips the rest of the batch, up to its Sync: those
/// statements are recorded as not run.
pub(super) fn skip_batch(shared: &mut Shared, done: &mut Vec<StatementRecord>) {
    while shared
        .pending
        .front()
        .is_some_and(|p| matches!(p.kind, PendingKind::Execute | PendingKind::Describe { .. }))
    {
        if let Some(mut p) = shared.pending.pop_front() {
            if p.risky {
                shared.risky_in_flight = shared.risky_in_flight.saturating_sub(1);
            }
            if let Some(r) = p.record.as_mut() {
                r.error.get_or_insert_with(|| {
                    "not run: an earlier message of its batch failed".into()
                });
            }
            done.extend(p.finish());
        }
    }
}

/// Pops the front statement, returning its finished record.
pub(super) fn pop(shared: &mut Shared) -> Option<StatementRecord> {
    let p = shared.pending.pop_front()?;
    if p.risky {
        shared.risky_in_flight = shared.risky_in_flight.saturating_sub(1);
    }
    p.finish()
}
