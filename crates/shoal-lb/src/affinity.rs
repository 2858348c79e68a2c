//! Cookie-based session affinity: the cookie that names a client's member.
//!
//! The balancer writes `ShoalAffinity=<member id>` (the id percent-encoded so any id is a
//! valid cookie value) and reads it back from the `Cookie` headers of later requests.
//! Those headers come from clients, so [`find`] accepts any bytes.

use http::HeaderValue;

/// The name of the affinity cookie.
pub const AFFINITY_COOKIE: &str = "ShoalAffinity";

/// The `Set-Cookie` value that pins a client to `member`.
pub(crate) fn set_cookie(member: &str, secure: bool) -> HeaderValue {
    let mut value = format!("{AFFINITY_COOKIE}={}; Path=/; HttpOnly", encode(member));
    if secure {
        value.push_str("; Secure");
    }
    // `encode` leaves only cookie-octets, all of which are valid header bytes.
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The member named by the affinity cookie among `Cookie` header values (as sent), if any.
pub(crate) fn find<'a>(cookies: impl Iterator<Item = &'a [u8]>) -> Option<String> {
    for header in cookies {
        for pair in header.split(|&b| b == b';') {
            let pair = trim(pair);
            let Some(eq) = pair.iter().position(|&b| b == b'=') else {
                continue;
            };
            if trim(&pair[..eq]) != AFFINITY_COOKIE.as_bytes() {
                continue;
            }
            let mut value = trim(&pair[eq + 1..]);
            if value.len() >= 2 && value.starts_with(b"\"") && value.ends_with(b"\"") {
                value = &value[1..value.len() - 1];
            }
            return decode(value);
        }
    }
    None
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

/// RFC 6265 cookie-octet, minus `%` (our escape character).
fn is_plain(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E) && b != b'%'
}

pub(crate) fn encode(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for &b in id.as_bytes() {
        if is_plain(b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub(crate) fn decode(value: &[u8]) -> Option<String> {
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        if value[i] == b'%' {
            let hex = value.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(value[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    #[test]
    fn finds_the_cookie_among_others() {
        let h = [header("a=1; ShoalAffinity=vm_3 ; b=2")];
        assert_eq!(
            find(h.iter().map(HeaderValue::as_bytes)).as_deref(),
            Some("vm_3")
        );
        let h = [header("a=1"), header("ShoalAffinity=\"x%2Fy\"")];
        assert_eq!(
            find(h.iter().map(HeaderValue::as_bytes)).as_deref(),
            Some("x/y")
        );
        let h = [header("ShoalAffinityX=1; xShoalAffinity=2; ShoalAffinity")];
        assert_eq!(find(h.iter().map(HeaderValue::as_bytes)), None);
        let h = [header("ShoalAffinity=%zz")];
        assert_eq!(find(h.iter().map(HeaderValue::as_bytes)), None);
    }

    #[test]
    fn set_cookie_shape() {
        assert_eq!(
            set_cookie("/subs/x vm;1", true),
            "ShoalAffinity=/subs/x%20vm%3B1; Path=/; HttpOnly; Secure"
        );
    }

    proptest! {
        #[test]
        fn any_id_round_trips_through_the_cookie(id in any::<String>(), other in "[a-z]{1,5}=[a-z0-9]{0,5}") {
            let set = set_cookie(&id, false);
            let pair = set.to_str().unwrap().split(';').next().unwrap().to_owned();
            let sent = header(&format!("{other}; {pair}"));
            prop_assert_eq!(find(std::iter::once(sent.as_bytes())), Some(id));
        }

        #[test]
        fn parsing_takes_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = find(std::iter::once(&bytes[..]));
            let _ = decode(&bytes);
        }
    }
}
