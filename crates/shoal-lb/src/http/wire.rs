//! HTTP/1.1 message heads and chunked framing, as the lean proxy ([`super::h1`]) reads
//! and rewrites them.
//!
//! A head is parsed once (`httparse`) and the head the other side gets is written
//! straight from the parsed fields: the headers that describe one connection are
//! dropped, the framing is written afresh, `X-Forwarded-*` are added (requests) and the
//! affinity cookie is set (responses); every other header line is copied as it came.
//! Everything here reads bytes from clients or members, so it takes any input without
//! panicking (the property tests below feed it arbitrary bytes).

use crate::http::ConnInfo;

/// The most header lines a head may have (hyper's default too).
pub(crate) const MAX_HEADERS: usize = 100;
/// The longest chunk-size line or trailer section of a chunked body.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILERS: usize = 16 * 1024;

/// Where a message head ends (just past its empty line), if `buf` holds all of it.
/// `from` is how much of `buf` was already searched.
pub(crate) fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    // The empty line may end in CRLF or a bare LF (which httparse accepts too).
    let start = from.saturating_sub(3);
    let mut i = start;
    while i < buf.len() {
        let lf = i + buf[i..].iter().position(|&b| b == b'\n')?;
        match buf.get(lf + 1..) {
            Some([b'\n', ..]) => return Some(lf + 2),
            Some([b'\r', b'\n', ..]) => return Some(lf + 3),
            _ => i = lf + 1,
        }
    }
    None
}

/// The number of empty lines (CRLF or LF) at the start of `buf`: a server ignores those
/// before a request line (RFC 9112 §2.2).
pub(crate) fn leading_empty_lines(buf: &[u8]) -> usize {
    buf.iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count()
}

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body.
    Empty,
    Length(u64),
    Chunked,
    /// Until the sender closes the connection (responses only).
    UntilClose,
}

/// Why a request is refused before it goes anywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reject {
    /// 400 with this reason.
    Bad(&'static str),
    /// 431: more than [`MAX_HEADERS`] header lines.
    TooManyHeaders,
    /// 501 with this reason.
    NotImplemented(&'static str),
}

/// What the proxy needs to know of a request; the head itself is already rewritten.
#[derive(Debug)]
pub(crate) struct Request<'a> {
    pub(crate) method: &'a str,
    /// HTTP/1.0 (else 1.1).
    pub(crate) http10: bool,
    /// The host it is for: the absolute-form target's authority, else `Host`.
    pub(crate) host: Option<&'a str>,
    /// The path, without the query, for routing.
    pub(crate) path: &'a str,
    pub(crate) body: Framing,
    /// The client keeps the connection open after this exchange.
    pub(crate) keep_alive: bool,
    /// An HTTP/1.1 upgrade request (WebSocket…): the head asks the member to switch too.
    pub(crate) upgrade: bool,
    /// The client waits for `100 Continue` before sending its body.
    pub(crate) expect_continue: bool,
    /// The member the affinity cookie names.
    pub(crate) affinity: Option<String>,
}

impl Request<'_> {
    /// Whether sending the request twice does what sending it once does.
    pub(crate) fn idempotent(&self) -> bool {
        matches!(
            self.method,
            "GET" | "HEAD" | "PUT" | "DELETE" | "OPTIONS" | "TRACE"
        )
    }
}

/// Parses a complete request head (as found by [`head_end`]) and writes the head the
/// member gets into `out`: HTTP/1.1, an origin-form target, the client's headers without
/// hop-by-hop ones and `Expect`, its framing, then `X-Forwarded-For` (appended to the
/// client's), `-Proto`, `-Host` and `-Port` (replacing the client's: the balancer is
/// the edge).
pub(crate) fn request<'a>(
    head: &'a [u8],
    info: &ConnInfo,
    affinity: bool,
    out: &mut Vec<u8>,
) -> Result<Request<'a>, Reject> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(Reject::Bad("The request head is incomplete")),
        Err(httparse::Error::TooManyHeaders) => return Err(Reject::TooManyHeaders),
        Err(httparse::Error::Version) => {
            return Err(Reject::NotImplemented(
                "Only HTTP/1.0 and HTTP/1.1 are served",
            ))
        }
        Err(_) => return Err(Reject::Bad("The request head is not valid HTTP/1.1")),
    }
    let (Some(method), Some(target), Some(version)) = (parsed.method, parsed.path, parsed.version)
    else {
        return Err(Reject::Bad("The request line is incomplete"));
    };
    let http10 = version == 0;
    if method == "CONNECT" {
        return Err(Reject::NotImplemented(
            "CONNECT is not served by this gateway",
        ));
    }
    let (authority, origin) = split_target(method, target)?;
    let headers = &*parsed.headers;

    let hop = HopByHop::of(headers);
    let mut host = authority;
    let mut host_seen = false;
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut upgrade: Option<&[u8]> = None;
    let mut expect_continue = false;
    let mut affinity_member = None;
    let mut forwarded_for = false;
    for h in headers {
        let name = h.name;
        if name.eq_ignore_ascii_case("host") {
            if host_seen {
                return Err(Reject::Bad("The request has more than one Host header"));
            }
            host_seen = true;
            if authority.is_none() {
                host = Some(
                    std::str::from_utf8(h.value)
                        .map_err(|_| Reject::Bad("The Host header is not valid"))?,
                );
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            let n = content_length(h.value)
                .ok_or(Reject::Bad("The Content-Length header is not a number"))?;
            if length.is_some_and(|m| m != n) {
                return Err(Reject::Bad(
                    "The request has conflicting Content-Length headers",
                ));
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = last_token_is(h.value, "chunked");
            if !chunked {
                return Err(Reject::NotImplemented(
                    "Only the chunked transfer coding is served for request bodies",
                ));
            }
        } else if name.eq_ignore_ascii_case("upgrade") {
            upgrade = Some(h.value);
        } else if name.eq_ignore_ascii_case("expect") {
            expect_continue |= h.value.eq_ignore_ascii_case(b"100-continue");
        } else if affinity && affinity_member.is_none() && name.eq_ignore_ascii_case("cookie") {
            affinity_member = crate::affinity::find(std::iter::once(h.value));
        } else if name.eq_ignore_ascii_case("x-forwarded-for") {
            forwarded_for = true;
        }
    }
    let body = match (chunked, length) {
        (true, Some(_)) => {
            return Err(Reject::Bad(
                "The request has both Content-Length and Transfer-Encoding",
            ))
        }
        (true, None) if http10 => {
            return Err(Reject::Bad("HTTP/1.0 requests cannot be chunked"));
        }
        (true, None) => Framing::Chunked,
        (false, Some(0) | None) => Framing::Empty,
        (false, Some(n)) => Framing::Length(n),
    };
    let upgrade = upgrade.filter(|_| !http10 && hop.upgrade);
    let keep_alive = if http10 {
        hop.keep_alive && !hop.close
    } else {
        !hop.close
    };

    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    if !origin.starts_with(['/', '*']) {
        out.push(b'/');
    }
    out.extend_from_slice(origin.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for h in headers {
        let name = h.name;
        if hop.drops(name)
            || name.eq_ignore_ascii_case("content-length")
            || name.eq_ignore_ascii_case("expect")
            || name.eq_ignore_ascii_case("x-forwarded-proto")
            || name.eq_ignore_ascii_case("x-forwarded-host")
            || name.eq_ignore_ascii_case("x-forwarded-port")
            || (authority.is_some() && name.eq_ignore_ascii_case("host"))
            || (forwarded_for && name.eq_ignore_ascii_case("x-forwarded-for"))
        {
            continue;
        }
        header_line(out, name.as_bytes(), h.value);
    }
    if let Some(authority) = authority {
        header_line(out, b"Host", authority.as_bytes());
    }
    match body {
        Framing::Length(n) => {
            let mut digits = itoa::Buffer::new();
            header_line(out, b"Content-Length", digits.format(n).as_bytes());
        }
        Framing::Chunked => header_line(out, b"Transfer-Encoding", b"chunked"),
        Framing::Empty | Framing::UntilClose => {}
    }
    if let Some(protocol) = upgrade {
        header_line(out, b"Connection", b"upgrade");
        header_line(out, b"Upgrade", protocol);
    }
    out.extend_from_slice(b"X-Forwarded-For: ");
    if forwarded_for {
        for h in headers {
            if h.name.eq_ignore_ascii_case("x-forwarded-for") {
                out.extend_from_slice(h.value);
                out.extend_from_slice(b", ");
            }
        }
    }
    out.extend_from_slice(info.client_ip.as_bytes());
    out.extend_from_slice(b"\r\n");
    let proto: &[u8] = if info.tls { b"https" } else { b"http" };
    header_line(out, b"X-Forwarded-Proto", proto);
    if let Some(host) = host {
        header_line(out, b"X-Forwarded-Host", host.as_bytes());
    }
    header_line(out, b"X-Forwarded-Port", info.local_port.as_bytes());
    out.extend_from_slice(b"\r\n");

    Ok(Request {
        method,
        http10,
        host,
        path: match origin.split(['?', '#']).next() {
            Some("") | None => "/",
            Some(path) => path,
        },
        body,
        keep_alive,
        upgrade: upgrade.is_some(),
        expect_continue: expect_continue && body != Framing::Empty && !http10,
        affinity: affinity_member,
    })
}

/// `(authority, origin-form target)` of a request target: origin-form as is, `*` for
/// OPTIONS, absolute-form (`http://host/path`) split (its target may lack the leading
/// `/`: `http://host?q` → `?q`).
fn split_target<'a>(method: &str, target: &'a str) -> Result<(Option<&'a str>, &'a str), Reject> {
    if target.starts_with('/') || (target == "*" && method == "OPTIONS") {
        return Ok((None, target));
    }
    let lower = |n: usize| target.get(..n).map(str::to_ascii_lowercase);
    let rest = if lower(7).as_deref() == Some("http://") {
        &target[7..]
    } else if lower(8).as_deref() == Some("https://") {
        &target[8..]
    } else {
        return Err(Reject::Bad(
            "The request target must be a path or an absolute URL",
        ));
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.is_empty() || authority.contains('@') {
        return Err(Reject::Bad("The request target's host is not valid"));
    }
    // `http://host` and `http://host?q` have an empty path: the caller writes the `/`.
    Ok((Some(authority), path.split('#').next().unwrap_or("")))
}

/// A `Content-Length` value: digits, or a list of equal ones (`5, 5`).
fn content_length(value: &[u8]) -> Option<u64> {
    let mut found = None;
    for part in value.split(|&b| b == b',') {
        let part = trim(part);
        if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n = part.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
        if found.is_some_and(|m| m != n) {
            return None;
        }
        found = Some(n);
    }
    found
}

/// Whether the last item of a comma-separated list is `token` (any case).
fn last_token_is(value: &[u8], token: &str) -> bool {
    value
        .rsplit(|&b| b == b',')
        .next()
        .is_some_and(|last| trim(last).eq_ignore_ascii_case(token.as_bytes()))
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

fn header_line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The headers that describe one connection rather than the message (lower case).
pub(crate) const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
    "proxy-authorization",
];

/// The `Connection` header of a message: its options and the headers it names, which
/// with the standard hop-by-hop headers stay on this hop.
#[derive(Default)]
struct HopByHop<'a> {
    close: bool,
    keep_alive: bool,
    upgrade: bool,
    /// Other header names listed in `Connection`.
    named: Vec<&'a [u8]>,
}

impl<'a> HopByHop<'a> {
    fn of(headers: &[httparse::Header<'a>]) -> Self {
        let mut hop = HopByHop::default();
        for h in headers {
            if !h.name.eq_ignore_ascii_case("connection") {
                continue;
            }
            for token in h.value.split(|&b| b == b',').map(trim) {
                if token.eq_ignore_ascii_case(b"close") {
                    hop.close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    hop.keep_alive = true;
                } else if token.eq_ignore_ascii_case(b"upgrade") {
                    hop.upgrade = true;
                } else if !token.is_empty() {
                    hop.named.push(token);
                }
            }
        }
        hop
    }

    /// Whether the header `name` stays on this hop.
    fn drops(&self, name: &str) -> bool {
        HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
            || self
                .named
                .iter()
                .any(|n| name.as_bytes().eq_ignore_ascii_case(n))
    }
}

/// What the proxy needs to know of a member's response; the client's head is written.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Response {
    /// `1xx` other than an accepted upgrade: skipped (the client never asked for it:
    /// `Expect` is not forwarded).
    Informational,
    /// `101 Switching Protocols` to an upgrade request: the head is copied whole.
    Switching,
    Final {
        status: u16,
        body: Framing,
        /// The member keeps the connection open after this response.
        member_keep_alive: bool,
        /// The client's connection stays open after it (else it is closed when the
        /// response is done).
        client_keep_alive: bool,
        /// The body is chunked and the client speaks HTTP/1.0: it gets the data only.
        dechunk: bool,
    },
}

/// What the client side of an exchange decides about the response's head.
pub(crate) struct ClientSide<'a> {
    pub(crate) head_request: bool,
    pub(crate) upgrade: bool,
    pub(crate) http10: bool,
    pub(crate) keep_alive: bool,
    /// `Set-Cookie` value to add (affinity).
    pub(crate) set_cookie: Option<&'a [u8]>,
}

/// Why a member's response cannot be passed on (the client gets a 502).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct BadResponse(pub(crate) &'static str);

/// Parses a complete response head from a member and writes the client's into `out`
/// (nothing for [`Response::Informational`]).
pub(crate) fn response(
    head: &[u8],
    client: &ClientSide<'_>,
    out: &mut Vec<u8>,
) -> Result<Response, BadResponse> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut headers);
    match parsed.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(BadResponse("incomplete response head")),
        Err(httparse::Error::TooManyHeaders) => return Err(BadResponse("too many header lines")),
        Err(_) => return Err(BadResponse("not a valid HTTP/1.1 response head")),
    }
    let (Some(version), Some(status)) = (parsed.version, parsed.code) else {
        return Err(BadResponse("incomplete status line"));
    };
    let reason = parsed.reason.unwrap_or("");
    let headers = &*parsed.headers;
    if status == 101 && client.upgrade {
        out.extend_from_slice(b"HTTP/1.1 101 ");
        out.extend_from_slice(reason.as_bytes());
        out.extend_from_slice(b"\r\n");
        for h in headers {
            header_line(out, h.name.as_bytes(), h.value);
        }
        out.extend_from_slice(b"\r\n");
        return Ok(Response::Switching);
    }
    if (100..200).contains(&status) {
        return Ok(Response::Informational);
    }
    let hop = HopByHop::of(headers);
    let mut length: Option<u64> = None;
    let mut transfer: Option<bool> = None;
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = content_length(h.value).ok_or(BadResponse("invalid Content-Length"))?;
            if length.is_some_and(|m| m != n) {
                return Err(BadResponse("conflicting Content-Length headers"));
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            transfer = Some(last_token_is(h.value, "chunked"));
        }
    }
    // RFC 9112 §6.3, in order.
    let no_body = client.head_request || status == 204 || status == 304;
    let body = match (transfer, length) {
        _ if no_body => Framing::Empty,
        (Some(true), _) => Framing::Chunked,
        (Some(false), _) => Framing::UntilClose,
        (None, Some(0)) => Framing::Empty,
        (None, Some(n)) => Framing::Length(n),
        (None, None) => Framing::UntilClose,
    };
    let member_keep_alive = body != Framing::UntilClose
        && if version == 0 {
            hop.keep_alive && !hop.close
        } else {
            !hop.close
        };
    let dechunk = body == Framing::Chunked && client.http10;
    let client_keep_alive = client.keep_alive && body != Framing::UntilClose && !dechunk;

    let mut digits = itoa::Buffer::new();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(digits.format(status).as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    for h in headers {
        let name = h.name;
        let framing = name.eq_ignore_ascii_case("content-length");
        // A body-less response keeps its Content-Length: it describes what a GET
        // would have had (HEAD) or the cached representation (304).
        if hop.drops(name) || (framing && body != Framing::Empty) {
            continue;
        }
        header_line(out, name.as_bytes(), h.value);
    }
    match body {
        Framing::Length(n) => header_line(out, b"Content-Length", digits.format(n).as_bytes()),
        Framing::Chunked if !dechunk => header_line(out, b"Transfer-Encoding", b"chunked"),
        _ => {}
    }
    if let Some(cookie) = client.set_cookie {
        header_line(out, b"Set-Cookie", cookie);
    }
    if !client_keep_alive {
        header_line(out, b"Connection", b"close");
    } else if client.http10 {
        header_line(out, b"Connection", b"keep-alive");
    }
    out.extend_from_slice(b"\r\n");
    Ok(Response::Final {
        status,
        body,
        member_keep_alive,
        client_keep_alive,
        dechunk,
    })
}

/// Follows a chunked body through the bytes that carry it, to find where it ends (and,
/// for a client that cannot take chunks, which bytes are data).
#[derive(Debug, Default)]
pub(crate) struct Chunked {
    state: ChunkState,
    /// Data bytes left in the current chunk, or the size being read.
    size: u64,
    /// Bytes of the current size line, or of the trailers so far.
    line: usize,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    /// Past the size: an extension or whitespace, up to the CR.
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    Trailer,
    EndLf,
    Done,
}

/// A chunked body that does not follow the grammar.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ChunkError(pub(crate) &'static str);

impl Chunked {
    pub(crate) fn done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Reads as much of `input` as belongs to the body; returns how many bytes that was
    /// (all of `input` unless the body ended inside it). `data` gets each run of data
    /// bytes.
    pub(crate) fn advance(
        &mut self,
        input: &[u8],
        mut data: impl FnMut(&[u8]),
    ) -> Result<usize, ChunkError> {
        use ChunkState::*;
        let mut i = 0;
        while i < input.len() && self.state != Done {
            let b = input[i];
            match self.state {
                Size => match hex(b) {
                    Some(d) => {
                        if self.size >> 60 != 0 {
                            return Err(ChunkError("chunk size too large"));
                        }
                        self.size = self.size << 4 | u64::from(d);
                        self.line += 1;
                    }
                    None if self.line == 0 => return Err(ChunkError("chunk size missing")),
                    None if b == b'\r' => self.state = SizeLf,
                    None if matches!(b, b';' | b' ' | b'\t') => self.state = Extension,
                    None => return Err(ChunkError("invalid chunk size")),
                },
                Extension => {
                    self.line += 1;
                    if self.line > MAX_CHUNK_LINE {
                        return Err(ChunkError("chunk extension too long"));
                    }
                    match b {
                        b'\r' => self.state = SizeLf,
                        b'\n' => return Err(ChunkError("bare LF in a chunk size line")),
                        _ => {}
                    }
                }
                SizeLf => {
                    if b != b'\n' {
                        return Err(ChunkError("chunk size line not ended by CRLF"));
                    }
                    self.line = 0;
                    self.state = if self.size == 0 { TrailerStart } else { Data };
                }
                Data => {
                    let n = (input.len() - i).min(usize::try_from(self.size).unwrap_or(usize::MAX));
                    data(&input[i..i + n]);
                    self.size -= n as u64;
                    i += n;
                    if self.size == 0 {
                        self.state = DataCr;
                    }
                    continue;
                }
                DataCr if b == b'\r' => self.state = DataLf,
                DataLf if b == b'\n' => self.state = Size,
                DataCr | DataLf => return Err(ChunkError("chunk data not ended by CRLF")),
                TrailerStart | Trailer => {
                    self.line += 1;
                    if self.line > MAX_TRAILERS {
                        return Err(ChunkError("trailers too long"));
                    }
                    self.state = match (self.state, b) {
                        (TrailerStart, b'\r') => EndLf,
                        (TrailerStart, b'\n') => {
                            return Err(ChunkError("bare LF at the end of a chunked body"))
                        }
                        (_, b'\n') => TrailerStart,
                        _ => Trailer,
                    };
                }
                EndLf => {
                    if b != b'\n' {
                        return Err(ChunkError("chunked body not ended by CRLF"));
                    }
                    self.state = Done;
                }
                Done => {}
            }
            i += 1;
        }
        Ok(i)
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    use crate::http::tests::info;

    fn rewrite(head: &str) -> Result<(String, Framing, bool), Reject> {
        let mut out = Vec::new();
        let r = request(head.as_bytes(), &info(false), true, &mut out)?;
        Ok((String::from_utf8(out).unwrap(), r.body, r.keep_alive))
    }

    #[test]
    fn finds_the_end_of_a_head_however_it_arrives() {
        let head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nNEXT";
        assert_eq!(head_end(head, 0), Some(head.len() - 4));
        let end = head.len() - 4;
        for split in 0..end {
            // `split` bytes arrived and were searched in vain; the rest arrives.
            assert_eq!(head_end(&head[..split], 0), None, "split {split}");
            assert_eq!(head_end(head, split), Some(end), "split {split}");
        }
        assert_eq!(head_end(b"GET / HTTP/1.1\nHost: a\n\nX", 0), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n", 0), None);
        assert_eq!(leading_empty_lines(b"\r\n\r\nGET"), 4);
    }

    #[test]
    fn rewrites_a_request_head_for_the_member() {
        let (out, body, keep) = rewrite(
            "POST /p?q=1 HTTP/1.1\r\nHost: example.com\r\nConnection: keep-alive, X-Secret\r\n\
             X-Secret: 1\r\nKeep-Alive: timeout=5\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\
             X-Forwarded-For: 1.1.1.1\r\nx-forwarded-for: 2.2.2.2\r\nX-Forwarded-Proto: gopher\r\n\
             X-Kept: yes\r\n\r\n",
        )
        .unwrap();
        assert_eq!(
            out,
            "POST /p?q=1 HTTP/1.1\r\nHost: example.com\r\nX-Kept: yes\r\nContent-Length: 3\r\n\
             X-Forwarded-For: 1.1.1.1, 2.2.2.2, 10.1.2.3\r\nX-Forwarded-Proto: http\r\n\
             X-Forwarded-Host: example.com\r\nX-Forwarded-Port: 8443\r\n\r\n"
        );
        assert_eq!(body, Framing::Length(3));
        assert!(keep);
    }

    #[test]
    fn absolute_form_targets_become_paths_with_their_host() {
        let mut out = Vec::new();
        let r = request(
            b"GET http://Other.example:81/x/y?z HTTP/1.1\r\nHost: ignored\r\n\r\n",
            &info(true),
            false,
            &mut out,
        )
        .unwrap();
        assert_eq!(r.host, Some("Other.example:81"));
        assert_eq!(r.path, "/x/y");
        let out = String::from_utf8(out).unwrap();
        assert!(
            out.starts_with("GET /x/y?z HTTP/1.1\r\nHost: Other.example:81\r\n"),
            "{out}"
        );
        assert!(out.contains("X-Forwarded-Proto: https\r\n"));
        assert!(!out.contains("ignored"));
        for (target, sent, path) in [("http://h?q=1", "/?q=1", "/"), ("HTTPS://h", "/", "/")] {
            let mut out = Vec::new();
            let head = format!("GET {target} HTTP/1.1\r\n\r\n");
            let r = request(head.as_bytes(), &info(false), false, &mut out).unwrap();
            assert_eq!((r.host, r.path), (Some("h"), path));
            let out = String::from_utf8(out).unwrap();
            assert!(
                out.starts_with(&format!("GET {sent} HTTP/1.1\r\nHost: h\r\n")),
                "{out}"
            );
        }
    }

    #[test]
    fn framing_and_keep_alive() {
        let (out, body, keep) = rewrite(
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
        assert_eq!(body, Framing::Chunked);
        assert!(!keep);
        assert!(out.contains("Transfer-Encoding: chunked\r\n") && !out.contains("gzip"));
        assert!(!rewrite("GET / HTTP/1.0\r\n\r\n").unwrap().2);
        assert!(
            rewrite("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
                .unwrap()
                .2
        );
        assert_eq!(
            rewrite("POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n")
                .unwrap()
                .1,
            Framing::Length(5)
        );
    }

    #[test]
    fn refuses_ambiguous_or_unsupported_requests() {
        for head in [
            "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET foo HTTP/1.1\r\n\r\n",
            "GET http:///x HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
        ] {
            assert!(matches!(rewrite(head), Err(Reject::Bad(_))), "{head:?}");
        }
        for head in [
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            "CONNECT a:443 HTTP/1.1\r\n\r\n",
            "GET / HTTP/2.0\r\n\r\n",
        ] {
            assert!(
                matches!(rewrite(head), Err(Reject::NotImplemented(_))),
                "{head:?}"
            );
        }
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: 1\r\n")).collect();
        assert_eq!(
            rewrite(&format!("GET / HTTP/1.1\r\n{many}\r\n")).unwrap_err(),
            Reject::TooManyHeaders
        );
    }

    #[test]
    fn upgrade_requests_keep_asking_the_member() {
        let mut out = Vec::new();
        let r = request(
            b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\n\r\n",
            &info(false),
            false,
            &mut out,
        )
        .unwrap();
        assert!(r.upgrade);
        let out = String::from_utf8(out).unwrap();
        assert!(
            out.contains("Connection: upgrade\r\nUpgrade: websocket\r\n"),
            "{out}"
        );
        assert!(out.contains("Sec-WebSocket-Key: k\r\n"));
    }

    fn client(head_request: bool, http10: bool) -> ClientSide<'static> {
        ClientSide {
            head_request,
            upgrade: false,
            http10,
            keep_alive: true,
            set_cookie: Some(b"ShoalAffinity=m1; Path=/; HttpOnly"),
        }
    }

    #[test]
    fn rewrites_a_response_head_for_the_client() {
        let mut out = Vec::new();
        let r = response(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nX-A: b\r\n\r\n",
            &client(false, false),
            &mut out,
        )
        .unwrap();
        assert_eq!(
            r,
            Response::Final {
                status: 200,
                body: Framing::Length(5),
                member_keep_alive: true,
                client_keep_alive: true,
                dechunk: false
            }
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nX-A: b\r\nContent-Length: 5\r\nSet-Cookie: ShoalAffinity=m1; Path=/; HttpOnly\r\n\r\n"
        );
    }

    #[test]
    fn response_framing() {
        let framing = |head: &str, head_request: bool, http10: bool| {
            let mut out = Vec::new();
            let r = response(head.as_bytes(), &client(head_request, http10), &mut out).unwrap();
            (r, String::from_utf8(out).unwrap())
        };
        let (r, out) = framing("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", true, false);
        assert!(matches!(
            r,
            Response::Final {
                body: Framing::Empty,
                ..
            }
        ));
        assert!(
            out.contains("Content-Length: 9\r\n"),
            "HEAD keeps the length: {out}"
        );
        let (r, out) = framing(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n",
            false,
            false,
        );
        assert!(matches!(
            r,
            Response::Final {
                body: Framing::Chunked,
                client_keep_alive: true,
                ..
            }
        ));
        assert!(out.contains("Transfer-Encoding: chunked\r\n") && !out.contains("Content-Length"));
        let (r, out) = framing(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
            true,
        );
        assert!(matches!(
            r,
            Response::Final {
                dechunk: true,
                client_keep_alive: false,
                ..
            }
        ));
        assert!(!out.contains("Transfer-Encoding") && out.contains("Connection: close\r\n"));
        let (r, out) = framing("HTTP/1.0 200 OK\r\n\r\n", false, false);
        assert!(matches!(
            r,
            Response::Final {
                body: Framing::UntilClose,
                member_keep_alive: false,
                client_keep_alive: false,
                ..
            }
        ));
        assert!(out.contains("Connection: close\r\n"));
        let (r, _) = framing("HTTP/1.1 204 No Content\r\n\r\n", false, false);
        assert!(matches!(
            r,
            Response::Final {
                body: Framing::Empty,
                member_keep_alive: true,
                ..
            }
        ));
        let (r, out) = framing("HTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\n", false, false);
        assert_eq!((r, out.as_str()), (Response::Informational, ""));
        let mut out = Vec::new();
        assert!(response(
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            &client(false, false),
            &mut out
        )
        .is_err());
    }

    fn chunk(data: &[&[u8]], trailers: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for d in data {
            out.extend_from_slice(format!("{:x};ext=1\r\n", d.len()).as_bytes());
            out.extend_from_slice(d);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!("0\r\n{trailers}\r\n").as_bytes());
        out
    }

    #[test]
    fn chunked_bodies_end_where_they_end() {
        let body = chunk(&[b"hello", b" world"], "X-T: 1\r\n");
        let mut wire = body.clone();
        wire.extend_from_slice(b"GET /next");
        let mut c = Chunked::default();
        let mut data = Vec::new();
        let n = c.advance(&wire, |d| data.extend_from_slice(d)).unwrap();
        assert_eq!(
            (n, c.done(), &data[..]),
            (body.len(), true, &b"hello world"[..])
        );
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"5\nhello",
            b"2\r\nabc\r\n",
            b"fffffffffffffffff\r\n",
        ] {
            let mut c = Chunked::default();
            assert!(
                c.advance(bad, |_| {}).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    proptest! {
        #[test]
        fn chunked_bodies_decode_however_they_are_split(
            data in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..50), 0..6),
            splits in proptest::collection::vec(0usize..400, 0..8),
        ) {
            let parts: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
            let wire = chunk(&parts, "");
            let mut cuts: Vec<usize> = splits.into_iter().map(|s| s % (wire.len() + 1)).collect();
            cuts.push(wire.len());
            cuts.sort_unstable();
            let (mut c, mut got, mut at) = (Chunked::default(), Vec::new(), 0);
            for cut in cuts {
                let n = c.advance(&wire[at..cut], |d| got.extend_from_slice(d)).unwrap();
                prop_assert_eq!(n, cut - at);
                at = cut;
            }
            prop_assert!(c.done());
            prop_assert_eq!(got, data.concat());
        }

        #[test]
        fn parsers_take_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = head_end(&bytes, 0);
            let mut out = Vec::new();
            let _ = request(&bytes, &info(false), true, &mut out);
            let _ = response(&bytes, &client(false, true), &mut out);
            let mut c = Chunked::default();
            if let Ok(n) = c.advance(&bytes, |_| {}) {
                prop_assert!(n <= bytes.len());
            }
        }

        #[test]
        fn rewritten_requests_parse_back(
            path in "/[a-zA-Z0-9/_.~-]{0,20}",
            names in proptest::collection::vec("[A-Za-z][A-Za-z0-9-]{0,10}", 0..6),
            value in "[ -~]{0,20}",
        ) {
            let mut head = format!("GET {path} HTTP/1.1\r\nHost: h\r\n");
            for n in &names {
                head.push_str(&format!("{n}: {}\r\n", value.trim()));
            }
            head.push_str("\r\n");
            let mut out = Vec::new();
            if request(head.as_bytes(), &info(false), false, &mut out).is_ok() {
                let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS + 8];
                let mut again = httparse::Request::new(&mut headers);
                prop_assert!(matches!(again.parse(&out), Ok(httparse::Status::Complete(n)) if n == out.len()));
                prop_assert_eq!(again.path, Some(path.as_str()));
            }
        }
    }
}
