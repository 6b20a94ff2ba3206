//! The zero-copy relay of `tcp` targets: each direction moves bytes socket → pipe →
//! socket with `splice(2)`, so they never enter user space.
//!
//! Both sockets stay the nonblocking tokio sockets they are; every `splice` goes
//! through [`TcpStream::try_io`], so a `WouldBlock` clears tokio's readiness and the
//! direction waits on [`TcpStream::readable`] / [`TcpStream::writable`] like any
//! other I/O. Traffic is counted into the session's [`Meter`] right after each call,
//! so the counts are exact even if the relay future is dropped midway.

use crate::proto::Meter;
use nix::{
    fcntl::{FcntlArg, OFlag, fcntl},
    unistd::pipe2,
};
use std::{
    io,
    net::Shutdown,
    os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd},
    ptr,
};
use tokio::{io::Interest, net::TcpStream, task::coop::consume_budget};

/// The two pipes of a relay, one per direction, checked against both sockets.
pub struct Splice {
    /// Client → upstream.
    up: Pipe,
    /// Upstream → client.
    down: Pipe,
}

impl Splice {
    /// Opens a pipe per direction holding at most `size` bytes, and checks that both
    /// sockets accept spliced writes. An error here means: relay some other way.
    pub fn new(client: &TcpStream, upstream: &TcpStream, size: usize) -> io::Result<Self> {
        let splice = Self {
            up: Pipe::new(size)?,
            down: Pipe::new(size)?,
        };
        splice.up.probe(upstream)?;
        splice.down.probe(client)?;
        Ok(splice)
    }

    /// Relays until both directions are done: EOF from one side is passed on as
    /// `shutdown(Write)` to the other. The first error ends the relay. What is read
    /// from the client counts as `up`, what is written to it as `down`.
    pub async fn run(
        self,
        client: &TcpStream,
        upstream: &TcpStream,
        meter: &Meter,
    ) -> io::Result<()> {
        let Self { mut up, mut down } = self;
        tokio::try_join!(
            up.pump(client, upstream, |n| meter.add_up(n), |_| ()),
            down.pump(upstream, client, |_| (), |n| meter.add_down(n)),
        )
        .map(|_| ())
    }
}

/// One direction's pipe; both ends are closed when it is dropped.
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// Most bytes the relay puts in the pipe: its buffer, the per-direction bound.
    capacity: usize,
    /// Bytes in the pipe now: spliced in, not yet spliced out.
    held: usize,
}

impl Pipe {
    fn new(size: usize) -> io::Result<Self> {
        let (read, write) = pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
        let request = i32::try_from(size).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("pipe size {size} is too large"),
            )
        })?;
        // The kernel rounds the size up to a power of two pages; hold no more than
        // asked, so memory per direction stays within `size`.
        let got = fcntl(&write, FcntlArg::F_SETPIPE_SZ(request))?;
        let capacity = usize::try_from(got).map_or(size, |got| got.min(size));
        Ok(Self {
            read,
            write,
            capacity,
            held: 0,
        })
    }

    /// Splices from the (empty) pipe to `to`: a socket that takes spliced writes says
    /// `EAGAIN` (nothing to move yet); any other answer means it does not.
    fn probe(&self, to: &TcpStream) -> io::Result<()> {
        match splice(self.read.as_fd(), to.as_fd(), 1) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(e),
            Ok(n) => Err(io::Error::other(format!(
                "splice from an empty pipe moved {n} bytes"
            ))),
        }
    }

    /// Moves bytes `from` → `to` until `from` ends and all it sent is passed on, then
    /// shuts down `to`'s write side. `read` counts bytes taken from `from`, `wrote`
    /// bytes given to `to`.
    async fn pump(
        &mut self,
        from: &TcpStream,
        to: &TcpStream,
        read: impl Fn(u64),
        wrote: impl Fn(u64),
    ) -> io::Result<()> {
        let mut eof = false;
        loop {
            let mut moved = false;
            if !eof && self.held < self.capacity {
                match from.try_io(Interest::READABLE, || self.fill(from)) {
                    Ok(Some(0)) => eof = true,
                    Ok(Some(n)) => {
                        self.held += n;
                        read(n as u64);
                        moved = true;
                    }
                    Ok(None) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => moved = true,
                    Err(e) => return Err(e),
                }
            }
            if self.held > 0 {
                match to.try_io(Interest::WRITABLE, || self.drain(to)) {
                    Ok(n) => {
                        self.held = self.held.saturating_sub(n);
                        wrote(n as u64);
                        moved = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => moved = true,
                    Err(e) => return Err(e),
                }
            }
            if eof && self.held == 0 {
                return socket2::SockRef::from(to).shutdown(Shutdown::Write);
            }
            if moved {
                // `try_io` spends no task budget: give the other direction and other
                // tasks their turn now and then, as tokio's own I/O does.
                consume_budget().await;
            } else if self.held == 0 {
                from.readable().await?;
            } else {
                to.writable().await?;
            }
        }
    }

    /// Splices what `from` has into the pipe: `Some(0)` at EOF. With bytes already in
    /// the pipe, `EAGAIN` may mean the pipe is full rather than `from` empty, so it is
    /// `None` (no progress) and `from`'s readiness is kept; with an empty pipe it can
    /// only mean `from` has nothing, and is passed on so tokio clears the readiness.
    fn fill(&self, from: &TcpStream) -> io::Result<Option<usize>> {
        let room = self.capacity.saturating_sub(self.held);
        match splice(from.as_fd(), self.write.as_fd(), room) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && self.held > 0 => Ok(None),
            result => result.map(Some),
        }
    }

    /// Splices what the pipe holds into `to`.
    fn drain(&self, to: &TcpStream) -> io::Result<usize> {
        match splice(self.read.as_fd(), to.as_fd(), self.held)? {
            0 => Err(io::ErrorKind::WriteZero.into()),
            n => Ok(n),
        }
    }
}

/// One nonblocking `splice(2)` of up to `len` bytes; one of the two is a pipe.
///
/// Unlike std's socket writes, which pass `MSG_NOSIGNAL`, a splice into a socket the
/// peer has closed raises `SIGPIPE`: Rust programs ignore `SIGPIPE` from the start,
/// so it arrives here as `EPIPE`, an error like any other.
fn splice(from: BorrowedFd<'_>, to: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
    // SAFETY: both descriptors are borrowed, so open for the call; the offsets are
    // null, as splice(2) requires for pipes and sockets; no memory is passed.
    let n = unsafe {
        libc::splice(
            from.as_raw_fd(),
            ptr::null_mut(),
            to.as_raw_fd(),
            ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::tcp::RELAY_BUFFER;

    #[test]
    fn pipes_hold_at_most_the_relay_buffer() {
        let pipe = Pipe::new(RELAY_BUFFER).unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(pipe.capacity, RELAY_BUFFER);
        // The kernel rounds up; the relay still holds no more than it asked for.
        let pipe = Pipe::new(RELAY_BUFFER - 1).unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(pipe.capacity, RELAY_BUFFER - 1);
    }

    #[test]
    fn an_impossible_pipe_size_fails_setup() {
        assert!(Pipe::new(usize::MAX).is_err());
    }
}
