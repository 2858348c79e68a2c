//! Host and path matching of layer-7 routes.
//!
//! Patterns come from the config ([`HttpRoute`](crate::HttpRoute)); the strings matched
//! against them come from clients (the `Host` header or the h2 `:authority`, and the
//! request path), so matching must take any string without panicking: the property tests
//! below feed it arbitrary ones.

/// A parsed `HttpRoute::host`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HostPattern {
    /// Lower-case host, no trailing dot.
    Exact(String),
    /// `*.example.com` keeps `.example.com`, lower-case.
    Suffix(String),
}

impl HostPattern {
    pub(crate) fn parse(pattern: &str) -> Result<Self, String> {
        let lower = pattern.trim_end_matches('.').to_ascii_lowercase();
        let (wild, rest) = match lower.strip_prefix('*') {
            Some(rest) => (true, rest),
            None => (false, lower.as_str()),
        };
        let valid = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        };
        if wild {
            if !rest.starts_with('.') || !valid(&rest[1..]) {
                return Err(format!(
                    "'{pattern}' is not a host pattern: a wildcard is only allowed as '*.domain'"
                ));
            }
            Ok(HostPattern::Suffix(rest.to_owned()))
        } else if valid(rest) {
            Ok(HostPattern::Exact(rest.to_owned()))
        } else {
            Err(format!(
                "'{pattern}' is not a host name (letters, digits, '-', '_' and '.' only)"
            ))
        }
    }

    /// `host` as a client sent it: any case, maybe a port, maybe a trailing dot.
    pub(crate) fn matches(&self, host: &str) -> bool {
        let host = strip_port(host);
        let host = host.strip_suffix('.').unwrap_or(host).as_bytes();
        match self {
            HostPattern::Exact(want) => host.eq_ignore_ascii_case(want.as_bytes()),
            HostPattern::Suffix(suffix) => {
                let suffix = suffix.as_bytes();
                host.len() > suffix.len()
                    && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            }
        }
    }
}

/// `example.com:8080` → `example.com`; `[::1]:80` → `[::1]`; anything else unchanged.
pub(crate) fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// A parsed `HttpRoute::path_prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PathPrefix(String);

impl PathPrefix {
    pub(crate) fn parse(prefix: &str) -> Result<Self, String> {
        if !prefix.starts_with('/') {
            return Err(format!("'{prefix}' is not a path: it must start with '/'"));
        }
        if prefix.contains(['?', '#']) || prefix.bytes().any(|b| b.is_ascii_control()) {
            return Err(format!(
                "'{prefix}' is not a path prefix: no query, fragment or control characters"
            ));
        }
        Ok(PathPrefix(prefix.to_owned()))
    }

    /// Whole segments: `/api` matches `/api`, `/api/`, `/api/x`, not `/apis`.
    pub(crate) fn matches(&self, path: &str) -> bool {
        let prefix = self.0.as_str();
        if prefix.ends_with('/') {
            return path.starts_with(prefix);
        }
        match path.strip_prefix(prefix) {
            Some(rest) => rest.is_empty() || rest.starts_with('/'),
            None => false,
        }
    }
}

/// The routes of one layer-7 listener, resolved to pool handles `P`.
#[derive(Debug)]
pub(crate) struct RouteTable<P> {
    routes: Vec<(Option<HostPattern>, Option<PathPrefix>, P)>,
    default: P,
}

impl<P> RouteTable<P> {
    pub(crate) fn new(default: P) -> Self {
        Self {
            routes: Vec::new(),
            default,
        }
    }

    pub(crate) fn push(&mut self, host: Option<HostPattern>, path: Option<PathPrefix>, pool: P) {
        self.routes.push((host, path, pool));
    }

    /// The first route matching both `host` and `path`, else the default pool. A
    /// request without a host matches only routes without a host pattern.
    pub(crate) fn select(&self, host: Option<&str>, path: &str) -> &P {
        for (want_host, want_path, pool) in &self.routes {
            let host_ok = match (want_host, host) {
                (None, _) => true,
                (Some(pattern), Some(host)) => pattern.matches(host),
                (Some(_), None) => false,
            };
            if host_ok && want_path.as_ref().is_none_or(|p| p.matches(path)) {
                return pool;
            }
        }
        &self.default
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hosts() {
        let exact = HostPattern::parse("Api.Example.com").unwrap();
        assert!(exact.matches("api.example.com"));
        assert!(exact.matches("API.EXAMPLE.COM:8443"));
        assert!(exact.matches("api.example.com."));
        assert!(!exact.matches("x.api.example.com"));

        let wild = HostPattern::parse("*.example.com").unwrap();
        assert!(wild.matches("a.example.com"));
        assert!(wild.matches("a.b.example.com:80"));
        assert!(!wild.matches("example.com"));
        assert!(!wild.matches(".example.com"));
        assert!(!wild.matches("aexample.com"));

        for bad in [
            "",
            "*",
            "*.",
            "a.*.com",
            "*example.com",
            "a b",
            "ex*.com",
            "é.com",
        ] {
            assert!(
                HostPattern::parse(bad).is_err(),
                "{bad:?} should be refused"
            );
        }
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("host:"), "host:");
    }

    #[test]
    fn paths() {
        let api = PathPrefix::parse("/api").unwrap();
        assert!(api.matches("/api"));
        assert!(api.matches("/api/"));
        assert!(api.matches("/api/v1"));
        assert!(!api.matches("/apis"));
        assert!(!api.matches("/"));
        let slash = PathPrefix::parse("/static/").unwrap();
        assert!(slash.matches("/static/x.css"));
        assert!(!slash.matches("/static"));
        assert!(PathPrefix::parse("/").unwrap().matches("/anything"));
        assert!(PathPrefix::parse("api").is_err());
        assert!(PathPrefix::parse("/a?b").is_err());
    }

    #[test]
    fn first_match_wins_then_default() {
        let mut table = RouteTable::new("default");
        table.push(
            Some(HostPattern::parse("*.example.com").unwrap()),
            Some(PathPrefix::parse("/api").unwrap()),
            "api",
        );
        table.push(None, Some(PathPrefix::parse("/api").unwrap()), "any-api");
        table.push(
            Some(HostPattern::parse("a.example.com").unwrap()),
            None,
            "a",
        );
        assert_eq!(*table.select(Some("x.example.com"), "/api/1"), "api");
        assert_eq!(*table.select(Some("other.org"), "/api/1"), "any-api");
        assert_eq!(*table.select(None, "/api"), "any-api");
        assert_eq!(*table.select(Some("a.example.com"), "/"), "a");
        assert_eq!(*table.select(None, "/"), "default");
    }

    proptest! {
        #[test]
        fn matching_takes_any_input(pattern in ".{0,40}", host in ".{0,60}", path in ".{0,60}") {
            if let Ok(p) = HostPattern::parse(&pattern) {
                let _ = p.matches(&host);
            }
            if let Ok(p) = PathPrefix::parse(&pattern) {
                let _ = p.matches(&path);
            }
            let _ = strip_port(&host);
        }

        #[test]
        fn exact_hosts_match_themselves_in_any_case_with_a_port(
            host in "[a-z0-9-]{1,10}(\\.[a-z0-9-]{1,10}){0,3}",
            port in proptest::option::of(1u16..),
        ) {
            let pattern = HostPattern::parse(&host).unwrap();
            let mut sent = host.to_ascii_uppercase();
            if let Some(port) = port {
                sent = format!("{sent}:{port}");
            }
            prop_assert!(pattern.matches(&sent));
            let longer = format!("x{host}");
            prop_assert!(!pattern.matches(&longer));
        }

        #[test]
        fn wildcards_match_subdomains_only(
            domain in "[a-z0-9]{1,8}\\.[a-z]{2,5}",
            sub in "[a-z0-9-]{1,8}(\\.[a-z0-9-]{1,8})?",
        ) {
            let pattern = HostPattern::parse(&format!("*.{domain}")).unwrap();
            let sub_host = format!("{sub}.{domain}");
            let glued = format!("{sub}{domain}");
            prop_assert!(pattern.matches(&sub_host));
            prop_assert!(!pattern.matches(&domain));
            prop_assert!(!pattern.matches(&glued));
        }

        #[test]
        fn path_prefixes_match_whole_segments(
            prefix in "(/[a-z]{1,5}){1,3}",
            rest in "[a-z/]{0,10}",
        ) {
            let p = PathPrefix::parse(&prefix).unwrap();
            let path = format!("{prefix}{rest}");
            prop_assert_eq!(p.matches(&path), rest.is_empty() || rest.starts_with('/'));
            if let Some(shorter) = prefix.get(..prefix.len() - 1) {
                prop_assert!(!p.matches(shorter));
            }
        }
    }
}
