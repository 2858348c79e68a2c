//! Kernel forwarding for layer-4 connections: once a client connection and its member
//! connection are linked here, the kernel moves their bytes from one socket to the other
//! and the balancer's threads are not woken per packet at all.
//!
//! The mechanism is the kernel's sockmap (`BPF_MAP_TYPE_SOCKHASH`) with a ten-line
//! `sk_skb` verdict program: every segment that arrives on a linked socket is handed to
//! the verdict, which looks up the socket's own address pair in the `peers` map and
//! redirects the segment to the socket found there, into its send path
//! (`bpf_sk_redirect_hash`). If no peer is found (the peer was closed) the segment is
//! passed to the socket's own receive queue, as if nothing were linked.
//!
//! Two maps keep linking free of reordering: `peers` holds the pairs (and has no program,
//! so entering it changes nothing), `members` carries the program. A pair is entered in
//! `peers` first, then both sockets in `members`; bytes that arrived before that are still
//! in the sockets' receive queues and are pushed through the verdict, in order, by
//! setting `SO_RCVLOWAT` (which runs the socket's data-ready callback). Nothing is ever
//! read by the balancer, so nothing can overtake what the kernel forwards.
//!
//! What the kernel does not do is the balancer's job, watched without per-packet
//! wake-ups through an epoll set of its own that asks only for `EPOLLRDHUP` (a forwarded
//! segment wakes readers with `EPOLLIN`, which that set ignores): a side's end of stream
//! is passed on with `shutdown(SHUT_WR)` once every byte it sent has reached the other
//! side's send queue (compared through `TCP_INFO` and `SIOCOUTQ`), errors end the pair,
//! and the idle timeout reads `tcpi_last_data_recv`.
//!
//! It is on unless `SHOAL_LB_KERNEL_FORWARDING=off` (or
//! [`Balancer::set_kernel_forwarding`](crate::Balancer::set_kernel_forwarding)), and
//! needs `CAP_BPF` and `CAP_NET_ADMIN` (root) and a kernel with
//! `CONFIG_BPF_STREAM_PARSER` (5.13+ for the plain verdict attach type); without them
//! connections are copied in user space. IPv4 pairs only (the key is the IPv4 address
//! pair).

use std::io;
use std::mem::size_of;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::OnceLock;

use tokio::io::unix::AsyncFd;

/// Connections the maps hold at most (two entries each, per map); past that, new
/// connections are copied in user space.
const MAX_ENTRIES: u32 = 1 << 17;
/// The environment variable that turns kernel forwarding off (`off`) for every
/// balancer of the process; it is on by default.
pub const ENV: &str = "SHOAL_LB_KERNEL_FORWARDING";

/// Whether [`ENV`] leaves kernel forwarding on.
pub(crate) fn wanted() -> bool {
    !std::env::var_os(ENV).is_some_and(|v| v == "off" || v == "0")
}

// bpf(2) commands, map and program types, attach type (include/uapi/linux/bpf.h).
const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_MAP_TYPE_SOCKHASH: u32 = 18;
const BPF_PROG_TYPE_SK_SKB: u32 = 14;
const BPF_SK_SKB_VERDICT: u32 = 38;
const BPF_FUNC_SK_REDIRECT_HASH: i32 = 72;
/// `ld_imm64` source register meaning "the immediate is a map's file descriptor".
const BPF_PSEUDO_MAP_FD: u8 = 1;

// Offsets in `struct __sk_buff` of the socket fields an `sk_skb` program may read.
const SKB_REMOTE_IP4: i16 = 92;
const SKB_LOCAL_IP4: i16 = 96;
const SKB_REMOTE_PORT: i16 = 132;
const SKB_LOCAL_PORT: i16 = 136;

/// The process's maps and program, loaded on first use.
pub(crate) struct Sockmap {
    peers: OwnedFd,
    members: OwnedFd,
    _verdict: OwnedFd,
}

/// The loaded sockmap, or `None` when this process cannot have one (the reason is
/// logged once).
pub(crate) fn shared() -> Option<&'static Sockmap> {
    static SOCKMAP: OnceLock<Option<Sockmap>> = OnceLock::new();
    SOCKMAP
        .get_or_init(|| match Sockmap::load() {
            Ok(map) => {
                tracing::debug!("layer-4 connections are forwarded by the kernel (sockmap)");
                Some(map)
            }
            Err(e) => {
                tracing::info!(
                    error = %e,
                    "layer-4 connections are copied in user space: kernel forwarding \
                     (an eBPF sockmap) needs root and a kernel built with \
                     CONFIG_BPF_STREAM_PARSER"
                );
                None
            }
        })
        .as_ref()
}

/// Why a pair could not be linked.
#[derive(Debug)]
pub(crate) enum LinkError {
    /// Nothing was changed: copy the connection in user space.
    Unlinked(io::Error),
    /// The client's bytes already go to the member, but the member could not join for
    /// another reason than closing, or a queue could not be pushed through: the pair
    /// is lost.
    Half(io::Error),
}

impl Sockmap {
    fn load() -> io::Result<Self> {
        let peers = create_map()?;
        let members = create_map()?;
        let verdict = load_verdict(&peers)?;
        let mut attr = Attr::default();
        attr.put_u32(0, members.as_raw_fd() as u32);
        attr.put_u32(4, verdict.as_raw_fd() as u32);
        attr.put_u32(8, BPF_SK_SKB_VERDICT);
        bpf(BPF_PROG_ATTACH, &mut attr)?;
        Ok(Self {
            peers,
            members,
            _verdict: verdict,
        })
    }

    /// Hands the pair to the kernel: from now on every byte either side receives is sent
    /// on by the other, including what already waits in their receive queues. Returns
    /// false when the member's side could not join because it is closing already (the
    /// client's first bytes, forwarded at once, may be answered and the connection
    /// closed within microseconds): its bytes then wait in its receive queue, as if
    /// paused, for the caller to copy.
    pub(crate) fn link(
        &self,
        client: &TcpStream,
        backend: &TcpStream,
    ) -> Result<(bool, [Key; 2]), LinkError> {
        let unlinked = LinkError::Unlinked;
        let kc = key_of(client).map_err(unlinked)?;
        let kb = key_of(backend).map_err(unlinked)?;
        // `peers` runs no program: entering (and leaving) it changes nothing yet.
        self.update(&self.peers, &kc, backend).map_err(unlinked)?;
        if let Err(e) = self.update(&self.peers, &kb, client) {
            self.delete(&self.peers, &kc);
            return Err(unlinked(e));
        }
        let undo = |e| {
            self.delete(&self.peers, &kc);
            self.delete(&self.peers, &kb);
            unlinked(e)
        };
        // Only established connections can join `members`: a member that has already
        // closed is left to the copying path, which knows what to do with it.
        if tcp_info(backend).map_err(undo)?.state != TCP_ESTABLISHED {
            return Err(undo(io::Error::other("the member's connection is closing")));
        }
        // The client first: if it cannot join (it sent its end of stream already), no
        // program runs for either side yet and the copying path takes over.
        self.update(&self.members, &kc, client).map_err(undo)?;
        let joined = match self.update(&self.members, &kb, backend) {
            Ok(()) => true,
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => false,
            Err(e) => return Err(LinkError::Half(e)),
        };
        // Push whatever arrived before the program was attached through it.
        set_rcvlowat(client, 1).map_err(LinkError::Half)?;
        if joined {
            set_rcvlowat(backend, 1).map_err(LinkError::Half)?;
        }
        Ok((joined, [kc, kb]))
    }

    /// Stops the kernel taking bytes from `socket` (they wait in its receive queue, and
    /// TCP's window holds its sender back) until [`Sockmap::resume`]. What was taken
    /// already still reaches the peer.
    ///
    /// Leaving `members` detaches the verdict, and a segment the kernel has already
    /// taken off the receive queue for a verdict that is gone when it looks is dropped
    /// (`sk_psock_verdict_recv` defaults to `SK_DROP`): a 64 KiB hole in the stream,
    /// seen about once in 13 runs of the slow-reader test under load. So the socket is
    /// first made not to call the verdict for new segments (a receive low-water mark of
    /// a quarter of its buffer, which the queue the verdict keeps emptying cannot reach
    /// in the moment it takes; a mark above what the buffer holds would make the kernel
    /// grow the buffer and clamp the window to the mark for the rest of the connection),
    /// and a `TCP_INFO` reading, which takes the socket's lock, waits out a call already
    /// under way; only then is the verdict detached. The kernel offers no way to pause
    /// that is free of this race. (Taking the pair out of `peers` instead, so that the
    /// verdict passes the socket's segments to the socket itself, detaches nothing, but
    /// once the other side's end of stream has been forwarded into this socket the
    /// kernel marks it as taking nothing more and frees every segment passed to it: a
    /// member's answer to a client that half-closed would be lost.)
    pub(crate) fn pause(&self, socket: &TcpStream, key: &Key) -> io::Result<()> {
        let buffer = socket2::SockRef::from(socket).recv_buffer_size()?;
        let mark = (buffer / 4).clamp(64 << 10, libc::c_int::MAX as usize);
        set_rcvlowat(socket, mark as libc::c_int)?;
        tcp_info(socket)?;
        self.delete(&self.members, key);
        Ok(())
    }

    /// Undoes [`Sockmap::pause`], pushing what waited through the verdict first.
    pub(crate) fn resume(&self, socket: &TcpStream, key: &Key) -> io::Result<()> {
        self.update(&self.members, key, socket)?;
        set_rcvlowat(socket, 1)
    }

    fn update(&self, map: &OwnedFd, key: &[u8; 16], socket: &TcpStream) -> io::Result<()> {
        let fd: u32 = socket.as_raw_fd() as u32;
        let mut attr = Attr::default();
        attr.put_u32(0, map.as_raw_fd() as u32);
        attr.put_u64(8, key.as_ptr() as u64);
        attr.put_u64(16, (&fd as *const u32) as u64);
        attr.put_u64(24, 0); // BPF_ANY
        bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(drop)
    }

    fn delete(&self, map: &OwnedFd, key: &[u8; 16]) {
        let mut attr = Attr::default();
        attr.put_u32(0, map.as_raw_fd() as u32);
        attr.put_u64(8, key.as_ptr() as u64);
        let _ = bpf(BPF_MAP_DELETE_ELEM, &mut attr);
    }
}

/// A socket's key in both maps (see [`key`]).
pub(crate) type Key = [u8; 16];

fn key_of(socket: &TcpStream) -> io::Result<Key> {
    key(socket.local_addr(), socket.peer_addr())
}

/// The verdict's key for a socket: its peer's and its own IPv4 address and port, laid
/// out as the program reads them from `struct __sk_buff` (addresses in network order,
/// the peer's port as a byte-swapped 16-bit value, the local port in host order).
fn key(local: io::Result<SocketAddr>, peer: io::Result<SocketAddr>) -> io::Result<[u8; 16]> {
    let (SocketAddr::V4(local), SocketAddr::V4(peer)) = (local?, peer?) else {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "kernel forwarding takes IPv4 connections only",
        ));
    };
    let mut key = [0u8; 16];
    key[0..4].copy_from_slice(&peer.ip().octets());
    key[4..8].copy_from_slice(&local.ip().octets());
    key[8..12].copy_from_slice(&u32::from(peer.port().swap_bytes()).to_le_bytes());
    key[12..16].copy_from_slice(&u32::from(local.port()).to_le_bytes());
    Ok(key)
}

fn create_map() -> io::Result<OwnedFd> {
    let mut attr = Attr::default();
    attr.put_u32(0, BPF_MAP_TYPE_SOCKHASH);
    attr.put_u32(4, 16); // key size
    attr.put_u32(8, 4); // value size: a socket's file descriptor
    attr.put_u32(12, MAX_ENTRIES);
    bpf(BPF_MAP_CREATE, &mut attr).map(owned)
}

/// One eBPF instruction.
const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    let off = off as u16 as u64;
    let imm = imm as u32 as u64;
    code as u64 | ((dst as u64 | (src as u64) << 4) << 8) | off << 16 | imm << 32
}

/// The verdict: build the key from the segment's socket, redirect to the peer found in
/// `peers`, or pass the segment to the socket itself when there is none.
fn load_verdict(peers: &OwnedFd) -> io::Result<OwnedFd> {
    // Opcodes: 0xbf mov64 reg, 0xbc mov32 reg, 0x61 ldx u32, 0x63 stx u32, 0x74 rsh32
    // imm, 0x54 and32 imm, 0x4c or32 reg, 0x18 ld_imm64, 0x07 add64 imm, 0xb7 mov64
    // imm, 0x85 call, 0x55 jne imm, 0x95 exit. r1 = ctx, r10 = frame pointer.
    let map = peers.as_raw_fd();
    let program: [u64; 23] = [
        insn(0xbf, 6, 1, 0, 0),              // r6 = ctx
        insn(0x61, 2, 6, SKB_REMOTE_IP4, 0), // key[0] = remote_ip4
        insn(0x63, 10, 2, -16, 0),
        insn(0x61, 2, 6, SKB_LOCAL_IP4, 0), // key[1] = local_ip4
        insn(0x63, 10, 2, -12, 0),
        // key[2] = remote_port, whichever half of the word the kernel puts it in
        insn(0x61, 2, 6, SKB_REMOTE_PORT, 0),
        insn(0xbc, 3, 2, 0, 0),
        insn(0x74, 3, 0, 0, 16),
        insn(0x54, 2, 0, 0, 0xffff),
        insn(0x4c, 2, 3, 0, 0),
        insn(0x63, 10, 2, -8, 0),
        insn(0x61, 2, 6, SKB_LOCAL_PORT, 0), // key[3] = local_port
        insn(0x63, 10, 2, -4, 0),
        insn(0xbf, 1, 6, 0, 0),                   // r1 = ctx
        insn(0x18, 2, BPF_PSEUDO_MAP_FD, 0, map), // r2 = &peers
        insn(0, 0, 0, 0, 0),
        insn(0xbf, 3, 10, 0, 0), // r3 = &key
        insn(0x07, 3, 0, 0, -16),
        insn(0xb7, 4, 0, 0, 0), // r4 = 0: the peer's send path
        insn(0x85, 0, 0, 0, BPF_FUNC_SK_REDIRECT_HASH), // r0 = SK_PASS or SK_DROP
        insn(0x55, 0, 0, 1, 0), // if r0 != SK_DROP: return it
        insn(0xb7, 0, 0, 0, 1), // no peer: SK_PASS
        insn(0x95, 0, 0, 0, 0),
    ];
    let license = b"GPL\0";
    let mut log = vec![0u8; 4096];
    let mut attr = Attr::default();
    attr.put_u32(0, BPF_PROG_TYPE_SK_SKB);
    attr.put_u32(4, program.len() as u32);
    attr.put_u64(8, program.as_ptr() as u64);
    attr.put_u64(16, license.as_ptr() as u64);
    attr.put_u32(24, 1); // log level
    attr.put_u32(28, log.len() as u32);
    attr.put_u64(32, log.as_mut_ptr() as u64);
    attr.bytes[48..56].copy_from_slice(b"shoal_l4");
    attr.put_u32(68, BPF_SK_SKB_VERDICT); // expected attach type
    bpf(BPF_PROG_LOAD, &mut attr).map(owned).map_err(|e| {
        let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
        let verifier = String::from_utf8_lossy(&log[..end]);
        io::Error::new(
            e.kind(),
            format!("{e}; the verifier said: {}", verifier.trim()),
        )
    })
}

/// `union bpf_attr`, as bytes.
#[repr(C, align(8))]
struct Attr {
    bytes: [u8; 128],
}

impl Default for Attr {
    fn default() -> Self {
        Self { bytes: [0; 128] }
    }
}

impl Attr {
    fn put_u32(&mut self, at: usize, value: u32) {
        self.bytes[at..at + 4].copy_from_slice(&value.to_ne_bytes());
    }

    fn put_u64(&mut self, at: usize, value: u64) {
        self.bytes[at..at + 8].copy_from_slice(&value.to_ne_bytes());
    }
}

fn bpf(cmd: libc::c_long, attr: &mut Attr) -> io::Result<RawFd> {
    // SAFETY: `attr` is a valid, writable `union bpf_attr` of the size passed; every
    // pointer inside it points at memory that outlives the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.bytes.as_mut_ptr(),
            attr.bytes.len(),
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ret as RawFd)
}

/// Takes ownership of the descriptor `BPF_MAP_CREATE` or `BPF_PROG_LOAD` returned.
fn owned(fd: RawFd) -> OwnedFd {
    // SAFETY: these commands return a new descriptor that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

const TCP_ESTABLISHED: u8 = 1;

/// The parts of `struct tcp_info` the balancer reads.
pub(crate) struct TcpInfo {
    pub(crate) state: u8,
    /// Milliseconds since data last arrived.
    pub(crate) last_data_recv_ms: u32,
    /// Bytes the peer acknowledged (plus one for the SYN on an outgoing connection).
    pub(crate) bytes_acked: u64,
    /// Bytes received in order (plus one once the peer's FIN is in).
    pub(crate) bytes_received: u64,
}

pub(crate) fn tcp_info(socket: &impl AsFd) -> io::Result<TcpInfo> {
    let mut raw = [0u8; 232];
    let mut len = raw.len() as libc::socklen_t;
    // SAFETY: `raw` is writable for `len` bytes; the kernel writes at most that much.
    let ret = unsafe {
        libc::getsockopt(
            socket.as_fd().as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            raw.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    if (len as usize) < 136 {
        return Err(io::Error::other(
            "this kernel's tcp_info has no byte counters",
        ));
    }
    let u32_at = |at: usize| u32::from_ne_bytes(raw[at..at + 4].try_into().unwrap_or_default());
    let u64_at = |at: usize| u64::from_ne_bytes(raw[at..at + 8].try_into().unwrap_or_default());
    Ok(TcpInfo {
        state: raw[0],
        last_data_recv_ms: u32_at(52),
        bytes_acked: u64_at(120),
        bytes_received: u64_at(128),
    })
}

/// Bytes in the socket's receive queue that nothing has taken yet. (`SIOCINQ` cannot
/// tell: on a socket in a sockmap it counts the sockmap's own queue. A peek that
/// truncates copies nothing and counts the whole queue.)
pub(crate) fn bytes_unread(socket: &impl AsFd) -> io::Result<u64> {
    let flags = libc::MSG_PEEK | libc::MSG_TRUNC | libc::MSG_DONTWAIT | libc::MSG_WAITALL;
    // SAFETY: with MSG_TRUNC the kernel copies nothing into the (null) buffer.
    let n = unsafe {
        libc::recv(
            socket.as_fd().as_raw_fd(),
            std::ptr::null_mut(),
            1 << 30,
            flags,
        )
    };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EAGAIN) => Ok(0),
            // The note the kernel leaves when it forwarded the other side's end of
            // stream (see `KernelPair::failed`); a real error also shows as a hangup.
            Some(libc::EPIPE) => Ok(0),
            _ => Err(e),
        };
    }
    Ok(n as u64)
}

/// Bytes written into the socket's stream so far (acknowledged or still queued), plus a
/// constant: compare two readings, never one with a byte count.
pub(crate) fn bytes_written(socket: &impl AsFd) -> io::Result<u64> {
    let mut queued: libc::c_int = 0;
    // SAFETY: SIOCOUTQ writes one int.
    let ret = unsafe { libc::ioctl(socket.as_fd().as_raw_fd(), libc::TIOCOUTQ, &mut queued) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(tcp_info(socket)?.bytes_acked + queued.max(0) as u64)
}

/// Sets the socket's receive low-water mark. The kernel runs the socket's data-ready
/// callback when it is set: at 1, segments queued before it was linked (or while it was
/// paused) go through the verdict.
pub(crate) fn set_rcvlowat(socket: &TcpStream, bytes: libc::c_int) -> io::Result<()> {
    // SAFETY: SO_RCVLOWAT takes one int.
    let ret = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            (&bytes as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Which socket of a linked pair an event is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    Client = 0,
    Backend = 1,
}

/// An event on one side: its peer ended its stream, or the socket has an error.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Event {
    pub(crate) side: Side,
    pub(crate) hangup: bool,
    pub(crate) error: bool,
}

/// An epoll set of a linked pair's own that reports ends of stream and errors, not data,
/// registered with the runtime as one readable descriptor.
pub(crate) struct Watch {
    epoll: AsyncFd<OwnedFd>,
}

impl Watch {
    pub(crate) fn new(client: BorrowedFd<'_>, backend: BorrowedFd<'_>) -> io::Result<Self> {
        // SAFETY: plain system call; a non-negative result is a new descriptor.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and nothing else owns it.
        let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
        for (side, socket) in [(Side::Client, client), (Side::Backend, backend)] {
            let mut event = libc::epoll_event {
                events: libc::EPOLLRDHUP as u32,
                u64: side as u64,
            };
            // SAFETY: both descriptors are open; `event` is valid for the call.
            let ret =
                unsafe { libc::epoll_ctl(fd, libc::EPOLL_CTL_ADD, socket.as_raw_fd(), &mut event) };
            if ret < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        // SAFETY: the `OwnedFd` is moved into the `AsyncFd` and stays open, the same
        // descriptor, until the `AsyncFd` is dropped.
        let epoll = unsafe { AsyncFd::register(epoll) }.map_err(|e| e.into_parts().1)?;
        Ok(Self { epoll })
    }

    /// Stops reporting `socket` (after its end of stream was handled: the set is
    /// level-triggered and would report it again and again).
    pub(crate) fn forget(&self, socket: BorrowedFd<'_>) {
        // SAFETY: both descriptors are open; DEL ignores the event argument.
        unsafe {
            libc::epoll_ctl(
                self.epoll.get_ref().as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                socket.as_raw_fd(),
                std::ptr::null_mut(),
            );
        }
    }

    /// The next events (at least one).
    pub(crate) async fn next(&self) -> io::Result<Vec<Event>> {
        loop {
            let mut guard = self.epoll.readable().await?;
            let polled = guard.try_io(|epoll| {
                let mut events = [libc::epoll_event { events: 0, u64: 0 }; 2];
                // SAFETY: `events` is writable for two entries; timeout 0 never blocks.
                let n = unsafe {
                    libc::epoll_wait(epoll.get_ref().as_raw_fd(), events.as_mut_ptr(), 2, 0)
                };
                match n {
                    n if n < 0 => Err(io::Error::last_os_error()),
                    0 => Err(io::ErrorKind::WouldBlock.into()),
                    n => Ok(events[..n as usize]
                        .iter()
                        .map(|e| {
                            let flags = e.events;
                            Event {
                                side: if { e.u64 } == 0 {
                                    Side::Client
                                } else {
                                    Side::Backend
                                },
                                hangup: flags & (libc::EPOLLRDHUP | libc::EPOLLHUP) as u32 != 0,
                                error: flags & libc::EPOLLERR as u32 != 0,
                            }
                        })
                        .collect()),
                }
            });
            match polled {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_matches_what_the_verdict_reads() {
        let local: SocketAddr = "10.0.0.1:8080".parse().unwrap_or_else(|_| unreachable!());
        let peer: SocketAddr = "192.168.1.2:50000"
            .parse()
            .unwrap_or_else(|_| unreachable!());
        let k = key(Ok(local), Ok(peer)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&k[0..4], &[192, 168, 1, 2]);
        assert_eq!(&k[4..8], &[10, 0, 0, 1]);
        // 50000 = 0xC350, in network order C3 50, read as a little-endian u16: 0x50C3.
        assert_eq!(&k[8..12], &[0xC3, 0x50, 0, 0]);
        assert_eq!(&k[12..16], &8080u32.to_le_bytes());
        let v6: SocketAddr = "[::1]:80".parse().unwrap_or_else(|_| unreachable!());
        assert!(key(Ok(v6), Ok(peer)).is_err());
    }

    #[test]
    fn instructions_encode_as_the_kernel_reads_them() {
        // r2 = *(u32 *)(r6 + 92): code 0x61, dst 2, src 6, off 92.
        assert_eq!(
            insn(0x61, 2, 6, 92, 0).to_le_bytes(),
            [0x61, 0x62, 92, 0, 0, 0, 0, 0]
        );
        // r3 += -16
        assert_eq!(
            insn(0x07, 3, 0, 0, -16).to_le_bytes(),
            [0x07, 0x03, 0, 0, 0xf0, 0xff, 0xff, 0xff]
        );
    }
}
