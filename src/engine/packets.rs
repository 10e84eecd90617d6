//! Send packets (.NET's `SendPacketsAsync`): a list of memory ranges and file ranges sent in
//! order as one operation, files by sendfile(2), so their bytes never pass through user space.
//!
//! The elements live in the args (copied when set, paths included). Starting the operation
//! opens the files named by path and checks the descriptors given, so a missing file is a
//! rejection at the call, with nothing sent, as in .NET. Whether a file range fits its file is
//! checked when the cursor reaches it, against the file as it is then (as .NET does): one that
//! does not completes the operation with InvalidArgument and the bytes sent before it.
//!
//! It is `AsyncOperation::SendPackets` on the send queue like any other send: its bytes so far
//! are the waiting operation's `done`, and its open files and cursor wait in the args' extras
//! between attempts (`Args::hold_send_packets`), dropped when it ends.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;

use super::args::Args;
use super::op::{Attempt, Finished};
use super::sys::{self, RawBuf};
use crate::error::{Reject, SocketError};

/// What a `sock_send_packet` element is (its `kind`).
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendPacketKind {
    /// `count` bytes of memory at `buffer + offset`.
    Memory = 0,
    /// A range of the file at `path`, which the operation opens and closes.
    Path = 1,
    /// A range of the open file `fd`, which stays the caller's.
    Fd = 2,
}

impl SendPacketKind {
    pub fn from_code(code: i32) -> Option<SendPacketKind> {
        use SendPacketKind::*;
        [Memory, Path, Fd].into_iter().find(|k| *k as i32 == code)
    }
}

/// Where a file element's bytes come from.
#[derive(Clone, Debug)]
pub enum FileSource {
    Path(CString),
    Fd(RawFd),
}

/// One element, checked and copied when set on the args.
#[derive(Clone, Debug)]
pub enum Packet {
    /// Caller memory (the RawBuf contract: valid until the operation completes).
    Memory(RawBuf),
    /// `count` bytes from `offset`; 0 = to the end of the file.
    File {
        source: FileSource,
        offset: u64,
        count: u64,
    },
}

fn offset_of(offset: i64) -> Result<u64, String> {
    u64::try_from(offset).map_err(|_| format!("offset {offset} is negative"))
}

impl Packet {
    /// `count` bytes at `buffer + offset` (a NULL buffer only with count 0).
    pub fn memory(buffer: *mut u8, offset: i64, count: usize) -> Result<Packet, String> {
        let offset = offset_of(offset)?;
        if buffer.is_null() && count > 0 {
            return Err(format!(
                "a memory element of {count} bytes has a NULL buffer"
            ));
        }
        match (offset as usize).checked_add(count) {
            Some(end) if offset <= isize::MAX as u64 && end <= isize::MAX as usize => {}
            _ => {
                return Err(format!("offset {offset} + count {count} exceeds SSIZE_MAX"));
            }
        }
        Ok(Packet::Memory(RawBuf {
            ptr: buffer.wrapping_add(offset as usize),
            len: count,
        }))
    }

    /// A range of a file: `count` bytes from `offset`, or with count 0 all from `offset` to
    /// the end. Whether the range fits is checked when the operation reaches it.
    pub fn file(source: FileSource, offset: i64, count: usize) -> Result<Packet, String> {
        let offset = offset_of(offset)?;
        match &source {
            FileSource::Path(path) if path.is_empty() => {
                return Err("a path element has an empty path".into());
            }
            FileSource::Fd(fd) if *fd < 0 => {
                return Err(format!("fd {fd} is negative"));
            }
            _ => {}
        }
        Ok(Packet::File {
            source,
            offset,
            count: count as u64,
        })
    }

    /// The bytes of a memory element (file elements' sizes are known only when sent).
    pub fn memory_len(&self) -> usize {
        match self {
            Packet::Memory(b) => b.len,
            Packet::File { .. } => 0,
        }
    }
}

/// A file the operation reads: opened by it (and closed with it), or the caller's.
enum OpenFile {
    Opened(File),
    Borrowed(RawFd),
}

impl OpenFile {
    fn raw(&self) -> RawFd {
        match self {
            OpenFile::Opened(file) => file.as_raw_fd(),
            OpenFile::Borrowed(fd) => *fd,
        }
    }
}

enum Piece {
    Memory(RawBuf),
    File {
        file: OpenFile,
        offset: u64,
        count: u64,
    },
}

/// A send-packets operation in progress: the elements with their files open, and a cursor
/// that resumes exactly where the kernel last said "would block".
pub struct SendPackets {
    pieces: Vec<Piece>,
    index: usize,
    /// Bytes of `pieces[index]` sent so far, and its length once known (a file range's is
    /// fixed when the cursor reaches it).
    sent: u64,
    len: Option<u64>,
}

/// A rejection of element `index`, naming it the way the caller set it.
fn element_reject(index: usize, source: &FileSource, why: String) -> Reject {
    let what = match source {
        FileSource::Path(path) => format!("file '{}'", path.to_string_lossy()),
        FileSource::Fd(fd) => format!("descriptor {fd}"),
    };
    Reject::invalid(format!("send-packets element {index}: {what}: {why}"))
}

impl SendPackets {
    /// Opens the files named by path and checks the given descriptors (on the caller's
    /// thread, before anything is sent). On a rejection the files opened so far close again.
    /// Empty memory elements are left out (as .NET skips them).
    pub fn open(elements: &[Packet]) -> Result<SendPackets, Reject> {
        let mut pieces = Vec::with_capacity(elements.len());
        for (index, element) in elements.iter().enumerate() {
            let piece = match element {
                Packet::Memory(b) if b.len == 0 => continue,
                Packet::Memory(b) => Piece::Memory(*b),
                Packet::File {
                    source,
                    offset,
                    count,
                } => {
                    let file = match source {
                        FileSource::Path(path) => std::fs::OpenOptions::new()
                            .read(true)
                            // A FIFO's open would otherwise wait for a writer.
                            .custom_flags(libc::O_NONBLOCK)
                            .open(std::ffi::OsStr::from_bytes(path.as_bytes()))
                            .map(OpenFile::Opened)
                            .map_err(|e| element_reject(index, source, e.to_string()))?,
                        FileSource::Fd(fd) => OpenFile::Borrowed(*fd),
                    };
                    match sys::file_facts(file.raw()) {
                        Ok(facts) if facts.regular && facts.readable => {}
                        Ok(facts) if facts.regular => {
                            // sendfile would say EBADF, which reads as OperationAborted.
                            return Err(element_reject(
                                index,
                                source,
                                "not open for reading".into(),
                            ));
                        }
                        Ok(_) => {
                            return Err(element_reject(index, source, "not a regular file".into()));
                        }
                        Err(libc::EBADF) => {
                            return Err(element_reject(index, source, "not open".into()));
                        }
                        Err(errno) => {
                            let error = std::io::Error::from_raw_os_error(errno);
                            return Err(element_reject(index, source, error.to_string()));
                        }
                    }
                    Piece::File {
                        file,
                        offset: *offset,
                        count: *count,
                    }
                }
            };
            pieces.push(piece);
        }
        Ok(SendPackets {
            pieces,
            index: 0,
            sent: 0,
            len: None,
        })
    }

    /// Sends from the cursor on until everything is out, the kernel would block, or an
    /// element fails; `done` (the operation's bytes so far, which an abort reports) grows by
    /// what goes out.
    fn send(&mut self, socket: RawFd, done: &mut usize) -> Attempt {
        while let Some(piece) = self.pieces.get(self.index) {
            let len = match self.len {
                Some(len) => len,
                None => match piece_len(piece) {
                    Ok(len) => *self.len.insert(len),
                    Err(error) => return Attempt::Done(Finished::failed(*done, error)),
                },
            };
            if self.sent == len {
                self.index += 1;
                self.sent = 0;
                self.len = None;
                continue;
            }
            let sent = match piece {
                Piece::Memory(b) => sys::send(socket, b.tail(self.sent as usize), 0),
                Piece::File { file, offset, .. } => {
                    match sys::sendfile(socket, file.raw(), offset + self.sent, len - self.sent) {
                        // The file got shorter than the range while it was being sent.
                        Ok(0) => {
                            return Attempt::Done(Finished::failed(
                                *done,
                                SocketError::InvalidArgument,
                            ));
                        }
                        other => other,
                    }
                }
            };
            match sent {
                Ok(n) => {
                    self.sent += n as u64;
                    *done += n;
                }
                Err(libc::EAGAIN) => return Attempt::WouldBlock,
                Err(e) => {
                    return Attempt::Done(Finished::failed(*done, SocketError::from_errno(e)));
                }
            }
        }
        Attempt::Done(Finished::ok(*done))
    }
}

/// One attempt at the send-packets the args own (`op::attempt`). Its files and cursor wait in
/// the args' extras between attempts; once it ends they are dropped here, so files it opened
/// are closed before its results are stored.
pub fn attempt(socket: RawFd, args: &Args, done: &mut usize) -> Attempt {
    let mut in_flight = args
        .take_send_packets()
        .expect("a send-packets in flight keeps its files in the args (set when it started)");
    let attempt = in_flight.send(socket, done);
    if let Attempt::WouldBlock = attempt {
        args.hold_send_packets(in_flight);
    }
    attempt
}

/// A piece's length: a memory range's own, a file range's against the file's size now.
/// .NET's rule: a range that runs past the end (or starts past it) is InvalidArgument.
fn piece_len(piece: &Piece) -> Result<u64, SocketError> {
    let (file, offset, count) = match piece {
        Piece::Memory(b) => return Ok(b.len as u64),
        Piece::File {
            file,
            offset,
            count,
        } => (file, *offset, *count),
    };
    let size = sys::file_facts(file.raw())
        .map_err(SocketError::from_errno)?
        .size;
    let available = size
        .checked_sub(offset)
        .ok_or(SocketError::InvalidArgument)?;
    match count {
        0 => Ok(available),
        count if count <= available => Ok(count),
        _ => Err(SocketError::InvalidArgument),
    }
}
