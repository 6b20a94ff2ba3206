//! The local journal: every record a session hands the [`super::Recorder`] is first
//! appended here, in one `write(2)`, and only then queued for the store. A result can
//! therefore leave for its client as soon as its record is recorded, without waiting
//! for a store commit (milliseconds on `PostgreSQL`, a shared fsync on `SQLite`), and a
//! `kill -9` still loses no record of a result someone received: the kernel keeps
//! what was written. (A power loss can lose the journal's last writes, as it can lose
//! the store's last commits with `synchronous = NORMAL`.)
//!
//! The recorder's writer stores records in batches and, in the same transaction, the
//! position after the last one (`journal_positions`, one row per journal). At start,
//! [`Journal::open`] writes into the store what the journal holds past that position —
//! what the previous run had not written when it died — and starts a fresh segment.
//!
//! ## On disk
//!
//! `state_dir/journal/` holds `id` (this journal's UUID, the key of its row) and
//! numbered segment files, `0000000000000001.seg`, …: an 8-byte header
//! ([`MAGIC`]) then entries of `u32` length, `u32` CRC-32 of the payload (both little
//! endian) and the payload: a [`Recordable`] in `MessagePack` with field names, so a
//! newer daemon still reads an older one's records. The writer deletes a segment once
//! everything in it is stored; a segment closes past [`SEGMENT_BYTES`].
//!
//! Appending and queuing happen under one lock, so the store receives records in
//! journal order and "everything up to this position" is one number.

mod replay;

pub use replay::Mark;

use super::Recordable;
use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write as _},
    os::unix::fs::{DirBuilderExt as _, FileExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
};

/// The first bytes of every segment.
const MAGIC: &[u8; 8] = b"PCJRNL01";

/// A segment closes once it holds this much; the next record opens the next one.
#[cfg(not(test))]
const SEGMENT_BYTES: u64 = 32 << 20;
#[cfg(test)]
const SEGMENT_BYTES: u64 = 4 << 10;

/// The largest entry read back. Records are capped by their makers (statement text,
/// row samples, bodies); anything larger is damage.
const MAX_ENTRY: usize = 16 << 20;

/// Bytes before an entry's payload: its length and its CRC.
const FRAME_HEAD: usize = 8;

/// Where a record ends in the journal: its segment and the byte after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub segment: u64,
    pub end: u64,
}

/// What can go wrong with the journal; the messages name the file.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("cannot use the journal {path}: {source}; check the disk and state_dir's permissions")]
    Io { path: PathBuf, source: io::Error },
    #[error("cannot encode a record for the journal: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    #[error(
        "the journal id in {0} is not a UUID; move the journal directory away to start a new one"
    )]
    BadId(PathBuf),
    #[error(
        "the journal {0} is in use by another running daemon; give each daemon its own \
         state_dir"
    )]
    InUse(PathBuf),
    #[error("the journal {0} failed earlier and takes no more records; restart the daemon")]
    Broken(PathBuf),
    #[error(
        "cannot replay the journal into the store: {0}; the journal is kept for the next start"
    )]
    Store(#[from] super::StoreError),
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The segment records are appended to.
struct Open {
    number: u64,
    file: File,
    end: u64,
    /// Set when a new segment could not be made: every append fails from then on.
    broken: bool,
}

/// The local journal of one daemon (see the module docs). Shared by every clone of
/// the recorder.
pub struct Journal {
    dir: PathBuf,
    id: Arc<str>,
    /// Held for the journal's life: one daemon per journal.
    _lock: File,
    open: Mutex<Open>,
    /// The lowest segment number that may still be on disk.
    oldest: AtomicU64,
}

impl Journal {
    /// This journal's id: the key of its row in `journal_positions`.
    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }

    /// `position` in this journal, as the store keeps it.
    #[must_use]
    pub fn mark(&self, position: Position) -> Mark {
        Mark {
            journal: Arc::clone(&self.id),
            position,
        }
    }

    /// Frames `record` as a journal entry (length, CRC, `MessagePack`).
    pub fn frame(record: &Recordable) -> Result<Vec<u8>, JournalError> {
        let mut frame = vec![0_u8; FRAME_HEAD];
        rmp_serde::encode::write_named(&mut frame, record)?;
        let payload = frame.get(FRAME_HEAD..).unwrap_or_default();
        let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        let crc = crc32fast::hash(payload);
        frame.splice(
            ..FRAME_HEAD,
            len.to_le_bytes().into_iter().chain(crc.to_le_bytes()),
        );
        Ok(frame)
    }

    /// Appends `frame` (from [`Journal::frame`]) in one write, then calls `then` with
    /// its position while still holding the lock: what `then` queues is queued in
    /// journal order. A failed write leaves the journal as it was (the next entry
    /// overwrites any torn bytes).
    pub fn append<T>(
        &self,
        frame: &[u8],
        then: impl FnOnce(Position) -> T,
    ) -> Result<T, JournalError> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if open.broken {
            return Err(JournalError::Broken(self.dir.clone()));
        }
        if open.end >= SEGMENT_BYTES {
            let next = open.number.saturating_add(1);
            match create_segment(&self.dir, next) {
                Ok(file) => {
                    *open = Open {
                        number: next,
                        file,
                        end: MAGIC.len() as u64,
                        broken: false,
                    };
                }
                Err(e) => {
                    open.broken = true;
                    return Err(e);
                }
            }
        }
        open.file
            .write_all_at(frame, open.end)
            .map_err(io_error(&segment_path(&self.dir, open.number)))?;
        open.end = open.end.saturating_add(frame.len() as u64);
        Ok(then(Position {
            segment: open.number,
            end: open.end,
        }))
    }

    /// Everything up to `stored` is in the store: deletes the segments before its one.
    pub fn release(&self, stored: Position) {
        let oldest = self.oldest.load(Ordering::Relaxed);
        for number in oldest..stored.segment {
            let path = segment_path(&self.dir, number);
            if let Err(e) = fs::remove_file(&path)
                && e.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!(path = %path.display(), error = %e, "Cannot delete a stored journal segment");
                return;
            }
            self.oldest
                .store(number.saturating_add(1), Ordering::Relaxed);
        }
    }
}

/// The path of segment `number` in `dir`.
fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:016}.seg"))
}

/// Creates segment `number` (it must not exist) with its header.
fn create_segment(dir: &Path, number: u64) -> Result<File, JournalError> {
    let path = segment_path(dir, number);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(io_error(&path))?;
    file.write_all(MAGIC).map_err(io_error(&path))?;
    Ok(file)
}

/// The journal's directory made (owner only) and locked, and its id read, or made on
/// first use. Another daemon holding the lock is an error: two daemons replaying and
/// deleting each other's segments would record events twice.
fn prepare_dir(dir: &Path) -> Result<(String, File), JournalError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_error(dir))?;
    let lock_path = dir.join("lock");
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock_path)
        .map_err(io_error(&lock_path))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => return Err(JournalError::InUse(dir.to_owned())),
        Err(fs::TryLockError::Error(e)) => return Err(io_error(&lock_path)(e)),
    }
    let id = read_or_make_id(dir)?;
    Ok((id, lock))
}

/// This journal's id from `dir/id`, made on first use.
fn read_or_make_id(dir: &Path) -> Result<String, JournalError> {
    let path = dir.join("id");
    match fs::read_to_string(&path) {
        Ok(text) => {
            let id = text.trim();
            uuid::Uuid::parse_str(id).map_err(|_| JournalError::BadId(path.clone()))?;
            Ok(id.to_owned())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let id = uuid::Uuid::now_v7().to_string();
            let tmp = dir.join("id.tmp");
            fs::write(&tmp, format!("{id}\n")).map_err(io_error(&tmp))?;
            fs::rename(&tmp, &path).map_err(io_error(&path))?;
            Ok(id)
        }
        Err(e) => Err(io_error(&path)(e)),
    }
}

/// The segment numbers in `dir`, lowest first.
fn segments(dir: &Path) -> Result<Vec<u64>, JournalError> {
    let mut numbers = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error(dir))? {
        let name = entry.map_err(io_error(dir))?.file_name();
        let name = name.to_string_lossy();
        if let Some(number) = name
            .strip_suffix(".seg")
            .and_then(|n| n.parse::<u64>().ok())
        {
            numbers.push(number);
        }
    }
    numbers.sort_unstable();
    Ok(numbers)
}

/// Entries read back, each payload with the position after it.
type Entries = Vec<(Position, Vec<u8>)>;

/// The entries of one segment from byte `from`, and a note of what ended the reading
/// early (a torn or damaged tail), if anything did.
fn read_segment(
    dir: &Path,
    number: u64,
    from: u64,
) -> Result<(Entries, Option<String>), JournalError> {
    let path = segment_path(dir, number);
    let bytes = fs::read(&path).map_err(io_error(&path))?;
    if !bytes.starts_with(MAGIC) {
        return Ok((Vec::new(), Some("no journal header".into())));
    }
    let mut at = usize::try_from(from).unwrap_or(usize::MAX).max(MAGIC.len());
    let mut entries = Vec::new();
    while at < bytes.len() {
        let Some(head) = bytes.get(at..at.saturating_add(FRAME_HEAD)) else {
            return Ok((entries, Some(format!("a torn entry at byte {at}"))));
        };
        let (len, crc) = head.split_at(4);
        let len = u32::from_le_bytes(len.try_into().unwrap_or_default()) as usize;
        let crc = u32::from_le_bytes(crc.try_into().unwrap_or_default());
        let start = at.saturating_add(FRAME_HEAD);
        let payload = (len <= MAX_ENTRY)
            .then(|| bytes.get(start..start.saturating_add(len)))
            .flatten();
        let Some(payload) = payload.filter(|p| crc32fast::hash(p) == crc) else {
            return Ok((
                entries,
                Some(format!("a torn or damaged entry at byte {at}")),
            ));
        };
        at = start.saturating_add(len);
        let end = at as u64;
        entries.push((
            Position {
                segment: number,
                end,
            },
            payload.to_vec(),
        ));
    }
    Ok((entries, None))
}
