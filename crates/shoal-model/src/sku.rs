//! The size catalogue: what `sku.name` means in vCPUs and memory.
//!
//! Shoal's own sizes are spelled `Shoal_{N}vCPU_{M}MB` (any N in 1..=64, M in
//! 64..=262144); common Azure sizes map to their published vCPU and memory so existing
//! scripts keep working.

use serde_json::{json, Value};

/// One size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Size {
    pub name: String,
    pub vcpus: u32,
    pub memory_mb: u64,
}

/// Azure sizes Shoal understands, with their vCPUs and memory (MiB).
const AZURE_SIZES: &[(&str, u32, u64)] = &[
    ("Standard_B1ls", 1, 512),
    ("Standard_B1s", 1, 1024),
    ("Standard_B1ms", 1, 2048),
    ("Standard_B2s", 2, 4096),
    ("Standard_B2ms", 2, 8192),
    ("Standard_B4ms", 4, 16384),
    ("Standard_A1_v2", 1, 2048),
    ("Standard_A2_v2", 2, 4096),
    ("Standard_DS1_v2", 1, 3584),
    ("Standard_DS2_v2", 2, 7168),
    ("Standard_D2_v3", 2, 8192),
    ("Standard_D2s_v3", 2, 8192),
    ("Standard_D4s_v3", 4, 16384),
    ("Standard_D2s_v4", 2, 8192),
    ("Standard_D2_v5", 2, 8192),
    ("Standard_D2s_v5", 2, 8192),
    ("Standard_D4s_v5", 4, 16384),
    ("Standard_D8s_v5", 8, 32768),
    ("Standard_D2as_v5", 2, 8192),
    ("Standard_E2s_v5", 2, 16384),
    ("Standard_F1s", 1, 2048),
    ("Standard_F2s_v2", 2, 4096),
    ("Standard_F4s_v2", 4, 8192),
];

/// Shoal sizes listed by the API (any valid `Shoal_{N}vCPU_{M}MB` is accepted).
const SHOAL_SIZES: &[(u32, u64)] = &[
    (1, 128),
    (1, 256),
    (1, 512),
    (1, 1024),
    (2, 1024),
    (2, 2048),
    (4, 4096),
    (8, 8192),
];

/// Looks a size up by name, case-insensitively. `None` for an unknown size.
pub fn lookup(name: &str) -> Option<Size> {
    if let Some((n, v, m)) = AZURE_SIZES
        .iter()
        .find(|(n, _, _)| n.eq_ignore_ascii_case(name))
    {
        return Some(Size {
            name: n.to_string(),
            vcpus: *v,
            memory_mb: *m,
        });
    }
    parse_shoal(name)
}

fn parse_shoal(name: &str) -> Option<Size> {
    let lower = name.to_ascii_lowercase();
    let rest = lower.strip_prefix("shoal_")?;
    let (cpu, mem) = rest.split_once("vcpu_")?;
    let mem = mem.strip_suffix("mb")?;
    let digits = |s: &str| !s.is_empty() && s.len() <= 6 && s.chars().all(|c| c.is_ascii_digit());
    if !digits(cpu) || !digits(mem) {
        return None;
    }
    let vcpus: u32 = cpu.parse().ok()?;
    let memory_mb: u64 = mem.parse().ok()?;
    if !(1..=64).contains(&vcpus) || !(64..=262_144).contains(&memory_mb) {
        return None;
    }
    Some(Size {
        name: format!("Shoal_{vcpus}vCPU_{memory_mb}MB"),
        vcpus,
        memory_mb,
    })
}

/// Every listed size.
pub fn catalogue() -> Vec<Size> {
    let shoal = SHOAL_SIZES.iter().map(|(v, m)| Size {
        name: format!("Shoal_{v}vCPU_{m}MB"),
        vcpus: *v,
        memory_mb: *m,
    });
    let azure = AZURE_SIZES.iter().map(|(n, v, m)| Size {
        name: n.to_string(),
        vcpus: *v,
        memory_mb: *m,
    });
    shoal.chain(azure).collect()
}

/// A few names, for error messages.
pub fn examples() -> &'static str {
    "Shoal_1vCPU_512MB, Shoal_2vCPU_2048MB, Standard_B1s, Standard_D2s_v5"
}

/// `GET .../virtualMachineScaleSets/{name}/skus`: sizes a scale set can use.
pub fn vmss_skus_json() -> Value {
    let value: Vec<Value> = catalogue()
        .into_iter()
        .map(|s| {
            json!({
                "resourceType": "Microsoft.Compute/virtualMachineScaleSets",
                "sku": {"name": s.name, "tier": "Standard"},
                "capacity": {"minimum": 0, "maximum": 1000, "defaultCapacity": 1, "scaleType": "Automatic"}
            })
        })
        .collect();
    json!({ "value": value })
}

/// `GET /subscriptions/{sub}/providers/Microsoft.Compute/skus`: resource SKUs.
pub fn resource_skus_json(location: &str) -> Value {
    let value: Vec<Value> = catalogue()
        .into_iter()
        .map(|s| {
            json!({
                "resourceType": "virtualMachines",
                "name": s.name,
                "tier": "Standard",
                "size": s.name.split_once('_').map(|(_, b)| b).unwrap_or(&s.name),
                "locations": [location],
                "capabilities": [
                    {"name": "vCPUs", "value": s.vcpus.to_string()},
                    {"name": "MemoryGB", "value": format!("{}", s.memory_mb as f64 / 1024.0)}
                ],
                "restrictions": []
            })
        })
        .collect();
    json!({ "value": value })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shoal_and_azure_names() {
        assert_eq!(lookup("Shoal_1vCPU_512MB").unwrap().memory_mb, 512);
        assert_eq!(lookup("shoal_2vcpu_2048mb").unwrap().vcpus, 2);
        assert_eq!(lookup("Standard_B1s").unwrap().memory_mb, 1024);
        assert_eq!(lookup("standard_d2s_v5").unwrap().vcpus, 2);
        assert!(lookup("Shoal_0vCPU_512MB").is_none());
        assert!(lookup("Shoal_1vCPU_1MB").is_none());
        assert!(lookup("Standard_Nope").is_none());
        assert!(lookup("Shoal_99999999999vCPU_1MB").is_none());
    }

    proptest::proptest! {
        #[test]
        fn lookup_never_panics(s in "\\PC{0,40}") { let _ = lookup(&s); }
    }
}
