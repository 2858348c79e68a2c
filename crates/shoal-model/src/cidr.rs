//! IPv4 address ranges written as `a.b.c.d/n`: hosts' instance subnets.

use std::net::Ipv4Addr;

/// An IPv4 network: the address with its host bits cleared, and the prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    pub network: Ipv4Addr,
    pub prefix_len: u8,
}

impl Cidr {
    fn mask(prefix_len: u8) -> u32 {
        match prefix_len {
            0 => 0,
            n => u32::MAX << (32 - u32::from(n.min(32))),
        }
    }

    /// Whether the two ranges share any address.
    pub fn overlaps(&self, other: &Cidr) -> bool {
        let mask = Self::mask(self.prefix_len.min(other.prefix_len));
        u32::from(self.network) & mask == u32::from(other.network) & mask
    }

    pub fn contains(&self, a: Ipv4Addr) -> bool {
        u32::from(a) & Self::mask(self.prefix_len) == u32::from(self.network)
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;

    /// `10.200.1.0/24`; host bits may be set (`10.200.1.7/24` is `10.200.1.0/24`).
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("'{s}' is not an IPv4 range such as 10.200.1.0/24");
        let (addr, len) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let prefix_len: u8 = len.parse().map_err(|_| bad())?;
        if prefix_len > 32 || len.starts_with('+') {
            return Err(bad());
        }
        Ok(Cidr {
            network: Ipv4Addr::from(u32::from(addr) & Self::mask(prefix_len)),
            prefix_len,
        })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_and_clears_host_bits() {
        let c: Cidr = "10.200.1.7/24".parse().expect("cidr");
        assert_eq!(c.to_string(), "10.200.1.0/24");
        assert!(c.contains("10.200.1.250".parse().expect("ip")));
        assert!(!c.contains("10.200.2.1".parse().expect("ip")));
        for bad in [
            "10.200.1.0",
            "10.200.1.0/33",
            "x/24",
            "10.200.1.0/",
            "10.200.1.0/+8",
            "",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn overlap_is_shared_addresses() {
        let c = |s: &str| s.parse::<Cidr>().expect("cidr");
        assert!(c("10.200.0.0/16").overlaps(&c("10.200.3.0/24")));
        assert!(c("10.200.3.0/24").overlaps(&c("10.200.0.0/16")));
        assert!(!c("10.200.1.0/24").overlaps(&c("10.200.2.0/24")));
    }

    proptest! {
        #[test]
        fn any_text_parses_or_is_refused(s in ".{0,24}") {
            let _ = s.parse::<Cidr>();
        }

        #[test]
        fn overlap_is_symmetric_and_matches_membership(a: u32, la in 0u8..=32, b: u32, lb in 0u8..=32) {
            let x: Cidr = format!("{}/{la}", Ipv4Addr::from(a)).parse().expect("cidr");
            let y: Cidr = format!("{}/{lb}", Ipv4Addr::from(b)).parse().expect("cidr");
            prop_assert_eq!(x.overlaps(&y), y.overlaps(&x));
            // Overlapping ranges nest: the narrower one's network is in the wider one.
            let (wide, narrow) = if la <= lb { (x, y) } else { (y, x) };
            prop_assert_eq!(x.overlaps(&y), wide.contains(narrow.network));
        }
    }
}
