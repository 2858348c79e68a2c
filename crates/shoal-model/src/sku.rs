//! The size catalogue: what `sku.name` means in vCPUs and memory.
//!
//! Shoal's own sizes are spelled `Shoal_{N}vCPU_{M}MB` (any N in 1..=64, M in
//! 64..=262144); every Azure size of the families in [`crate::sizes`] maps to its
//! published vCPUs and memory, so scripts and templates written for Azure keep working.
//! Served as Azure serves them: `…/virtualMachineScaleSets/{name}/skus`,
//! `…/providers/Microsoft.Compute/skus` and `…/locations/{l}/vmSizes`.

use serde_json::{json, Value};

/// One size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Size {
    pub name: String,
    pub vcpus: u32,
    pub memory_mb: u64,
}

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
impl Size {
    /// What an hour of this size costs in Shoal's own unit, for an instance mix's
    /// `LowestPrice` strategy: 1 per vCPU plus 0.25 per GiB of memory (Shoal has no
    /// prices; this orders sizes the way cloud price lists usually do).
    pub fn price(&self) -> f64 {
        f64::from(self.vcpus) + self.memory_mb as f64 / 4096.0
    }
}

pub fn lookup(name: &str) -> Option<Size> {
    if let Some((name, vcpus, memory_mb)) =
        crate::sizes::azure_sizes().find(|(n, _, _)| n.eq_ignore_ascii_case(name))
    {
        return Some(Size {
            name,
            vcpus,
            memory_mb,
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
    let azure = crate::sizes::azure_sizes().map(|(name, vcpus, memory_mb)| Size {
        name,
        vcpus,
        memory_mb,
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

/// `GET /subscriptions/{sub}/providers/Microsoft.Compute/locations/{l}/vmSizes`: every size
/// in Azure's `VirtualMachineSize` shape (Shoal's disks are the image's directory: the disk
/// sizes are Azure's defaults for a managed OS disk and no resource disk).
pub fn vm_sizes_json() -> Value {
    let value: Vec<Value> = catalogue()
        .into_iter()
        .map(|s| {
            json!({
                "name": s.name,
                "numberOfCores": s.vcpus,
                "osDiskSizeInMB": 1_047_552,
                "resourceDiskSizeInMB": 0,
                "memoryInMB": s.memory_mb,
                "maxDataDiskCount": (s.vcpus * 2).clamp(2, 64),
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
        assert_eq!(lookup("standard_d1_v2").unwrap().memory_mb, 3584);
        assert_eq!(lookup("Standard_A8m_v2").unwrap().vcpus, 8);
        assert!(lookup("Shoal_99999999999vCPU_1MB").is_none());
    }

    proptest::proptest! {
        #[test]
        fn lookup_never_panics(s in "\\PC{0,40}") { let _ = lookup(&s); }
    }
}
