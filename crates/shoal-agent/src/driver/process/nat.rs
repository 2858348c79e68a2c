//! Outbound access for namespaced instances: what they send to anything but an instance
//! range leaves with the host's address (masquerade), as a container host or a cloud's
//! default outbound access does. Traffic between instances, on this host or another, keeps
//! its addresses, so members and probes see who is calling.
//!
//! One nftables table per instance range (`shoal_10_200_1_0_24`), replaced atomically by
//! one `nft -f` run whenever the other hosts' ranges change. It stays when the agent
//! stops: the instances it leaves running keep their way out.

use std::io::Write;
use std::process::{Command, Stdio};

use shoal_model::cidr::Cidr;

/// The nftables table for instances of `own`.
pub fn table_name(own: Cidr) -> String {
    format!("shoal_{}_{}", own.network, own.prefix_len).replace('.', "_")
}

/// The ruleset text: masquerade from `own` to anything outside `own` and `peers`.
pub fn ruleset(own: Cidr, peers: &[Cidr]) -> String {
    let table = table_name(own);
    let mut ranges: Vec<String> = std::iter::once(own)
        .chain(peers.iter().copied())
        .map(|c| c.to_string())
        .collect();
    ranges.sort();
    ranges.dedup();
    format!(
        "table ip {table} {{}}\n\
         flush table ip {table}\n\
         table ip {table} {{\n\
         \tset instances {{ type ipv4_addr; flags interval; auto-merge; elements = {{ {} }} }}\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\tip saddr {own} ip daddr != @instances masquerade\n\
         \t}}\n\
         }}\n",
        ranges.join(", ")
    )
}

/// Installs (or replaces) the table for `own`.
pub fn apply(own: Cidr, peers: &[Cidr]) -> Result<(), String> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run nft (nftables): {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(ruleset(own, peers).as_bytes())
            .map_err(|e| format!("cannot write to nft: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("nft did not finish: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft refused the outbound NAT rules: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masquerades_only_what_leaves_the_instance_ranges() {
        let own: Cidr = "10.200.2.0/24".parse().expect("cidr");
        let peers = ["10.200.3.0/24".parse().expect("cidr"), own];
        let text = ruleset(own, &peers);
        assert!(text.contains("table ip shoal_10_200_2_0_24 {"), "{text}");
        assert!(
            text.contains("elements = { 10.200.2.0/24, 10.200.3.0/24 }"),
            "{text}"
        );
        assert!(
            text.contains("ip saddr 10.200.2.0/24 ip daddr != @instances masquerade"),
            "{text}"
        );
    }
}
