//! SFTP as the proxy reads it: packets cut from a channel's byte stream (each at most
//! [`MAX_PACKET`]), the requests the gate decides (open, remove, rename, mkdir,
//! rmdir, setstat, links) and those that move bytes of an open file, the server's
//! replies to them, and the status reply the proxy sends itself for a refused
//! request.
//!
//! Version 3 (draft-ietf-secsh-filexfer-02), what OpenSSH and most clients speak,
//! with OpenSSH's extensions. Fields are SSH wire encoding, read with
//! `ssh-encoding` (`RustCrypto`, already used by `russh` for keys): the few fields we
//! need did not justify a second SFTP implementation such as `russh-sftp`.

use crate::policy::FileOp;
use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use russh::keys::ssh_encoding::Decode;

/// Largest packet body either side may send: OpenSSH's own limit (256 KiB).
pub const MAX_PACKET: usize = 256 * 1024;

/// Status codes of a reply (`SSH_FX_*`).
pub const FX_OK: u32 = 0;
pub const FX_PERMISSION_DENIED: u32 = 3;
pub const FX_OP_UNSUPPORTED: u32 = 8;

/// What went wrong reading SFTP.
#[derive(Debug, thiserror::Error)]
pub enum SftpError {
    #[error("an SFTP packet of {0} bytes is larger than the {MAX_PACKET}-byte limit")]
    TooLarge(usize),
    #[error("a malformed SFTP packet (type {0})")]
    Malformed(u8),
}

/// Cuts whole packets (length prefix included) out of a byte stream.
#[derive(Default)]
pub struct Framer {
    buf: BytesMut,
}

impl Framer {
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next whole packet, if one has arrived.
    pub fn next_packet(&mut self) -> Result<Option<Bytes>, SftpError> {
        let Some(prefix) = self.buf.get(..4) else {
            return Ok(None);
        };
        let len = prefix
            .iter()
            .fold(0usize, |n, b| (n << 8) | usize::from(*b));
        if len > MAX_PACKET {
            return Err(SftpError::TooLarge(len));
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        Ok(Some(self.buf.split_to(4 + len).freeze()))
    }
}

/// A client request, as far as the proxy cares.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// Open a file: a read, a write or both.
    Open {
        id: u32,
        path: String,
        ops: Vec<FileOp>,
    },
    /// Another operation on paths (remove, rename, mkdir, rmdir, setstat, a link).
    Op {
        id: u32,
        ops: Vec<FileOp>,
        paths: Vec<String>,
        /// The request's name, for the record (`remove`, `symlink`…).
        name: &'static str,
    },
    /// Change the attributes of an open file.
    Fsetstat {
        id: u32,
        handle: Bytes,
    },
    Read {
        id: u32,
        handle: Bytes,
    },
    Write {
        id: u32,
        handle: Bytes,
        len: u64,
    },
    Close {
        id: u32,
        handle: Bytes,
    },
    /// An extension the proxy does not know: it could do anything, so it is refused.
    Unknown {
        id: u32,
        name: String,
    },
    /// Everything else (init, stat, list, realpath…): passed on as it is.
    Other,
}

const OPEN_READ: u32 = 0x1;
const OPEN_WRITE: u32 = 0x2 | 0x4 | 0x8 | 0x10;

/// Extensions that read or only touch already-opened files: passed on.
const HARMLESS_EXTENSIONS: [&str; 8] = [
    "statvfs@openssh.com",
    "fstatvfs@openssh.com",
    "fsync@openssh.com",
    "limits@openssh.com",
    "expand-path@openssh.com",
    "home-directory",
    "users-groups-by-id@openssh.com",
    "copy-data",
];

/// Reads a client packet (length prefix included).
pub fn request(packet: &[u8]) -> Result<Request, SftpError> {
    let (kind, mut r) = body(packet)?;
    let bad = |_| SftpError::Malformed(kind);
    let op = |id, ops: &[FileOp], paths, name| Request::Op {
        id,
        ops: ops.to_vec(),
        paths,
        name,
    };
    Ok(match kind {
        3 => {
            let id = u32::decode(&mut r).map_err(bad)?;
            let path = text(&mut r).map_err(bad)?;
            let flags = u32::decode(&mut r).map_err(bad)?;
            let mut ops = Vec::new();
            if flags & OPEN_READ != 0 || flags & OPEN_WRITE == 0 {
                ops.push(FileOp::Read);
            }
            if flags & OPEN_WRITE != 0 {
                ops.push(FileOp::Write);
            }
            Request::Open { id, path, ops }
        }
        4 | 5 | 6 | 10 => {
            let id = u32::decode(&mut r).map_err(bad)?;
            let handle = Bytes::from(Vec::<u8>::decode(&mut r).map_err(bad)?);
            match kind {
                4 => Request::Close { id, handle },
                5 => Request::Read { id, handle },
                6 => {
                    let _offset = u64::decode(&mut r).map_err(bad)?;
                    let len = u32::decode(&mut r).map_err(bad)?;
                    Request::Write {
                        id,
                        handle,
                        len: len.into(),
                    }
                }
                _ => Request::Fsetstat { id, handle },
            }
        }
        9 | 13 | 14 | 15 => {
            let id = u32::decode(&mut r).map_err(bad)?;
            let path = text(&mut r).map_err(bad)?;
            let (o, name) = match kind {
                9 => (FileOp::Setstat, "setstat"),
                13 => (FileOp::Remove, "remove"),
                14 => (FileOp::Mkdir, "mkdir"),
                _ => (FileOp::Rmdir, "rmdir"),
            };
            op(id, &[o], vec![path], name)
        }
        18 | 20 => {
            let id = u32::decode(&mut r).map_err(bad)?;
            let paths = vec![text(&mut r).map_err(bad)?, text(&mut r).map_err(bad)?];
            if kind == 18 {
                op(id, &[FileOp::Rename], paths, "rename")
            } else {
                // A link makes one path reach the other's file: both read and write.
                op(id, &[FileOp::Read, FileOp::Write], paths, "symlink")
            }
        }
        200 => extended(&mut r).map_err(bad)?,
        _ => Request::Other,
    })
}

fn extended(r: &mut &[u8]) -> Result<Request, russh::keys::ssh_encoding::Error> {
    let id = u32::decode(r)?;
    let name = text(r)?;
    let two = |r: &mut &[u8]| Ok::<_, russh::keys::ssh_encoding::Error>(vec![text(r)?, text(r)?]);
    Ok(match name.as_str() {
        "posix-rename@openssh.com" => Request::Op {
            id,
            ops: vec![FileOp::Rename],
            paths: two(r)?,
            name: "rename",
        },
        "hardlink@openssh.com" => Request::Op {
            id,
            ops: vec![FileOp::Read, FileOp::Write],
            paths: two(r)?,
            name: "hardlink",
        },
        "lsetstat@openssh.com" => Request::Op {
            id,
            ops: vec![FileOp::Setstat],
            paths: vec![text(r)?],
            name: "setstat",
        },
        n if HARMLESS_EXTENSIONS.contains(&n) => Request::Other,
        _ => Request::Unknown { id, name },
    })
}

/// A server reply, as far as the proxy cares.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    Status { id: u32, code: u32, message: String },
    Handle { id: u32, handle: Bytes },
    Data { id: u32, len: u64 },
    Other,
}

/// Reads a server packet (length prefix included).
pub fn reply(packet: &[u8]) -> Result<Reply, SftpError> {
    let (kind, mut r) = body(packet)?;
    let bad = |_| SftpError::Malformed(kind);
    Ok(match kind {
        101 => {
            let id = u32::decode(&mut r).map_err(bad)?;
            let code = u32::decode(&mut r).map_err(bad)?;
            // Version 3 servers may omit the message.
            let message = text(&mut r).unwrap_or_default();
            Reply::Status { id, code, message }
        }
        102 => Reply::Handle {
            id: u32::decode(&mut r).map_err(bad)?,
            handle: Bytes::from(Vec::<u8>::decode(&mut r).map_err(bad)?),
        },
        103 => {
            let id = u32::decode(&mut r).map_err(bad)?;
            let len = u32::decode(&mut r).map_err(bad)?;
            Reply::Data {
                id,
                len: len.into(),
            }
        }
        _ => Reply::Other,
    })
}

/// A status reply to request `id`, as a server sends it.
#[must_use]
pub fn status(id: u32, code: u32, message: &str) -> Bytes {
    let lang = b"en";
    let len = 1 + 4 + 4 + 4 + message.len() + 4 + lang.len();
    let mut out = BytesMut::with_capacity(4 + len);
    out.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
    out.put_u8(101);
    out.put_u32(id);
    out.put_u32(code);
    put_string(&mut out, message.as_bytes());
    put_string(&mut out, lang);
    out.freeze()
}

fn put_string(out: &mut BytesMut, s: &[u8]) {
    out.put_u32(u32::try_from(s.len()).unwrap_or(u32::MAX));
    out.put_slice(s);
}

/// The packet's type and the rest of its body.
fn body(packet: &[u8]) -> Result<(u8, &[u8]), SftpError> {
    let mut rest = packet.get(4..).ok_or(SftpError::Malformed(0))?;
    if rest.remaining() < 1 {
        return Err(SftpError::Malformed(0));
    }
    let kind = rest.get_u8();
    Ok((kind, rest))
}

/// A path or name: bytes, shown as UTF-8 (invalid bytes replaced).
fn text(r: &mut &[u8]) -> Result<String, russh::keys::ssh_encoding::Error> {
    let bytes = Vec::<u8>::decode(r)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    fn packet(kind: u8, fields: &[&[u8]]) -> Vec<u8> {
        let mut body = vec![kind];
        for f in fields {
            body.extend_from_slice(f);
        }
        let mut out = u32::try_from(body.len()).unwrap().to_be_bytes().to_vec();
        out.extend(body);
        out
    }

    fn s(text: &str) -> Vec<u8> {
        let mut out = u32::try_from(text.len()).unwrap().to_be_bytes().to_vec();
        out.extend_from_slice(text.as_bytes());
        out
    }

    #[test]
    fn requests_name_their_operations_and_paths() {
        let open = packet(3, &[&7u32.to_be_bytes(), &s("/a"), &0x1au32.to_be_bytes()]);
        assert_eq!(
            request(&open).unwrap(),
            Request::Open {
                id: 7,
                path: "/a".into(),
                ops: vec![FileOp::Write]
            }
        );
        let rename = packet(18, &[&1u32.to_be_bytes(), &s("/a"), &s("/b")]);
        assert!(
            matches!(request(&rename).unwrap(), Request::Op { ops, paths, .. }
            if ops == [FileOp::Rename] && paths == ["/a", "/b"])
        );
        let ext = packet(200, &[&2u32.to_be_bytes(), &s("evil@example.com")]);
        assert!(matches!(
            request(&ext).unwrap(),
            Request::Unknown { id: 2, .. }
        ));
        let short = packet(13, &[&1u32.to_be_bytes()]);
        assert!(request(&short).is_err());
    }

    #[test]
    fn framer_cuts_whole_packets_and_bounds_them() {
        let mut f = Framer::default();
        let p = packet(13, &[&1u32.to_be_bytes(), &s("/x")]);
        let (a, b) = p.split_at(5);
        f.push(a);
        assert!(f.next_packet().unwrap().is_none());
        f.push(b);
        assert_eq!(f.next_packet().unwrap().unwrap().as_ref(), p.as_slice());
        f.push(&u32::MAX.to_be_bytes());
        assert!(f.next_packet().is_err());
    }

    #[test]
    fn status_reply_reads_back() {
        let st = status(9, FX_PERMISSION_DENIED, "no");
        assert_eq!(
            reply(&st).unwrap(),
            Reply::Status {
                id: 9,
                code: FX_PERMISSION_DENIED,
                message: "no".into()
            }
        );
    }
}
