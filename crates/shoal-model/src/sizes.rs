//! Azure's VM size catalogue as one table: every size of the families Azure documents,
//! with its vCPUs and memory.
//!
//! Source: Azure's size documentation, learn.microsoft.com/azure/virtual-machines/sizes/
//! (one page per family: "general-purpose/dv5-series", "memory-optimized/ev5-series",
//! "compute-optimized/fsv2-series", "storage-optimized/lsv3-series", "gpu-accelerated/…",
//! and the retired-sizes pages for A, D, DS, Dv2 and NC/NV), read December 2026. Each row
//! is a family; [`azure_sizes`] expands it into sizes. A row's `pattern` holds `{n}` where
//! the size's vCPU count goes; memory is either a fixed MiB per vCPU (the regular
//! families) or one value per vCPU count (the irregular ones). Data enters from this table
//! only; `sku.rs` looks names up in it and serves it.

/// How a family's memory follows from its vCPUs.
#[derive(Debug, Clone, Copy)]
pub enum Memory {
    /// MiB per vCPU (Dv5: 4 GiB per vCPU).
    PerVcpu(u64),
    /// MiB for each entry of the row's vCPU list, in order.
    Each(&'static [u64]),
}

/// One family row: name pattern, vCPU counts, memory.
pub type Family = (&'static str, &'static [u32], Memory);

const GIB: u64 = 1024;

use Memory::{Each, PerVcpu};

/// Azure's families. Names are as Azure spells them (`Standard_D2s_v5`).
pub const FAMILIES: &[Family] = &[
    // A (previous generation) and Basic A.
    ("Standard_A0", &[1], Each(&[768])),
    ("Standard_A1", &[1], Each(&[1792])),
    ("Standard_A2", &[2], Each(&[3584])),
    ("Standard_A3", &[4], Each(&[7 * GIB])),
    ("Standard_A4", &[8], Each(&[14 * GIB])),
    ("Standard_A5", &[2], Each(&[14 * GIB])),
    ("Standard_A6", &[4], Each(&[28 * GIB])),
    ("Standard_A7", &[8], Each(&[56 * GIB])),
    ("Standard_A8", &[8], Each(&[56 * GIB])),
    ("Standard_A9", &[16], Each(&[112 * GIB])),
    ("Standard_A10", &[8], Each(&[56 * GIB])),
    ("Standard_A11", &[16], Each(&[112 * GIB])),
    ("Basic_A0", &[1], Each(&[768])),
    ("Basic_A1", &[1], Each(&[1792])),
    ("Basic_A2", &[2], Each(&[3584])),
    ("Basic_A3", &[4], Each(&[7 * GIB])),
    ("Basic_A4", &[8], Each(&[14 * GIB])),
    // Av2.
    ("Standard_A{n}_v2", &[1, 2, 4, 8], PerVcpu(2 * GIB)),
    ("Standard_A{n}m_v2", &[2, 4, 8], PerVcpu(8 * GIB)),
    // B (burstable).
    ("Standard_B1ls", &[1], Each(&[512])),
    ("Standard_B1s", &[1], Each(&[GIB])),
    ("Standard_B1ms", &[1], Each(&[2 * GIB])),
    ("Standard_B2s", &[2], Each(&[4 * GIB])),
    ("Standard_B{n}ms", &[2, 4, 8, 12, 16, 20], PerVcpu(4 * GIB)),
    ("Standard_B2ts_v2", &[2], Each(&[GIB])),
    ("Standard_B{n}ls_v2", &[2, 4, 8, 16, 32], PerVcpu(2 * GIB)),
    ("Standard_B{n}s_v2", &[2, 4, 8, 16, 32], PerVcpu(4 * GIB)),
    ("Standard_B2ats_v2", &[2], Each(&[GIB])),
    ("Standard_B{n}als_v2", &[2, 4, 8, 16, 32], PerVcpu(2 * GIB)),
    ("Standard_B{n}as_v2", &[2, 4, 8, 16, 32], PerVcpu(4 * GIB)),
    ("Standard_B2pts_v2", &[2], Each(&[GIB])),
    ("Standard_B{n}pls_v2", &[2, 4, 8, 16], PerVcpu(2 * GIB)),
    ("Standard_B{n}ps_v2", &[2, 4, 8, 16], PerVcpu(4 * GIB)),
    // D and DS (previous generation).
    // (The name's digit is not the vCPU count in D, DS, Dv2 and DSv2.)
    ("Standard_D1", &[1], Each(&[3584])),
    ("Standard_D2", &[2], Each(&[7 * GIB])),
    ("Standard_D3", &[4], Each(&[14 * GIB])),
    ("Standard_D4", &[8], Each(&[28 * GIB])),
    ("Standard_D11", &[2], Each(&[14 * GIB])),
    ("Standard_D12", &[4], Each(&[28 * GIB])),
    ("Standard_D13", &[8], Each(&[56 * GIB])),
    ("Standard_D14", &[16], Each(&[112 * GIB])),
    ("Standard_DS1", &[1], Each(&[3584])),
    ("Standard_DS2", &[2], Each(&[7 * GIB])),
    ("Standard_DS3", &[4], Each(&[14 * GIB])),
    ("Standard_DS4", &[8], Each(&[28 * GIB])),
    ("Standard_DS11", &[2], Each(&[14 * GIB])),
    ("Standard_DS12", &[4], Each(&[28 * GIB])),
    ("Standard_DS13", &[8], Each(&[56 * GIB])),
    ("Standard_DS14", &[16], Each(&[112 * GIB])),
    // Dv2 and DSv2: D1..D5 and D11..D15 (the name's digit is not the vCPU count).
    ("Standard_D1_v2", &[1], Each(&[3584])),
    ("Standard_D2_v2", &[2], Each(&[7 * GIB])),
    ("Standard_D3_v2", &[4], Each(&[14 * GIB])),
    ("Standard_D4_v2", &[8], Each(&[28 * GIB])),
    ("Standard_D5_v2", &[16], Each(&[56 * GIB])),
    ("Standard_D11_v2", &[2], Each(&[14 * GIB])),
    ("Standard_D12_v2", &[4], Each(&[28 * GIB])),
    ("Standard_D13_v2", &[8], Each(&[56 * GIB])),
    ("Standard_D14_v2", &[16], Each(&[112 * GIB])),
    ("Standard_D15_v2", &[20], Each(&[140 * GIB])),
    ("Standard_DS1_v2", &[1], Each(&[3584])),
    ("Standard_DS2_v2", &[2], Each(&[7 * GIB])),
    ("Standard_DS3_v2", &[4], Each(&[14 * GIB])),
    ("Standard_DS4_v2", &[8], Each(&[28 * GIB])),
    ("Standard_DS5_v2", &[16], Each(&[56 * GIB])),
    ("Standard_DS11_v2", &[2], Each(&[14 * GIB])),
    ("Standard_DS12_v2", &[4], Each(&[28 * GIB])),
    ("Standard_DS13_v2", &[8], Each(&[56 * GIB])),
    ("Standard_DS14_v2", &[16], Each(&[112 * GIB])),
    ("Standard_DS15_v2", &[20], Each(&[140 * GIB])),
    // Dv3, Dsv3.
    (
        "Standard_D{n}_v3",
        &[2, 4, 8, 16, 32, 48, 64],
        PerVcpu(4 * GIB),
    ),
    (
        "Standard_D{n}s_v3",
        &[2, 4, 8, 16, 32, 48, 64],
        PerVcpu(4 * GIB),
    ),
    // Dv4 family.
    (
        "Standard_D{n}_v4",
        &[2, 4, 8, 16, 32, 48, 64],
        PerVcpu(4 * GIB),
    ),
    (
        "Standard_D{n}s_v4",
        &[2, 4, 8, 16, 32, 48, 64],
        PerVcpu(4 * GIB),
    ),
    (
        "Standard_D{n}d_v4",
        &[2, 4, 8, 16, 32, 48, 64],
        PerVcpu(4 * GIB),
    ),
    (
        "Standard_D{n}ds_v4",
        &[2, 4, 8, 16, 32, 48, 64],
        PerVcpu(4 * GIB),
    ),
    (
        "Standard_D{n}a_v4",
        &[2, 4, 8, 16, 32, 48, 64, 96],
        PerVcpu(4 * GIB),
    ),
    (
        "Standard_D{n}as_v4",
        &[2, 4, 8, 16, 32, 48, 64, 96],
        PerVcpu(4 * GIB),
    ),
    // Dv5 family.
    (
        "Standard_D{n}_v5",
        &[2, 4, 8, 16, 32, 48, 64, 96],
        PerVcpu(4 * GIB),
    ),
    (
        "Standard_D{n}s_v5",
        &[2, 4, 8, 16, 32, 48, 64, 96],
        PerVcpu(4 * GIB),
    ),
    (
        "Standard_D{n}d_v5",
        &[2, 4, 8, 16, 32, 48, 64, 96],
        PerVcpu(4 * GIB),
    ),
    (
        "Standard_D{n}ds_v5",
        &[2, 4, 8, 16, 32, 48, 64, 96],
        PerVcpu(4 * GIB),
    ),
    // Confidential computing (DC and EC families; "general-purpose/dcasv5-series",
    // "dcesv5-series", "dcsv3-series", "memory-optimized/ecasv5-series", "ecesv5-series").
    ("Standard_DC{n}s_v2", &[1, 2, 4, 8], PerVcpu(4 * GIB)),
    (
        "Standard_DC{n}s_v3",
        &[1, 2, 4, 8, 16, 24, 32, 48],
        PerVcpu(8 * GIB),
    ),
    (
        "Standard_DC{n}ds_v3",
        &[1, 2, 4, 8, 16, 24, 32, 48],
        PerVcpu(8 * GIB),
    ),
    (
        "Standard_DC{n}as_v5",
        &[2, 4, 8, 16, 32, 48, 64, 96],
        PerVcpu(4 * GIB),
    ),
    (
        "Standard_DC{n}ads_v5",
        &[2, 4, 8, 16, 32, 48, 64, 96],
        PerVcpu(4 * GIB),
    ),
    (
        "Standard_DC{n}es_v5",
        &[2, 4, 8, 16, 32, 48, 64, 96, 128],
        PerVcpu(4 * GIB),
    ),
    (
        "Standard_DC{n}eds_v5",
        &[2, 4, 8, 16, 32, 48, 64, 96, 128],
        PerVcpu(4 * GIB),
    ),
    (
        "Standard_EC{n}as_v5",
        &[2, 4, 8, 16, 20, 32, 48, 64, 96],
        PerVcpu(8 * GIB),
    ),
    (
        "Standard_EC{n}ads_v5",
        &[2, 4, 8, 16, 20, 32, 48, 64, 96],
        PerVcpu(8 * GIB),
    ),
    (
        "Standard_EC{n}es_v5",
        &[2, 4, 8, 16, 32, 48, 64, 128],
        PerVcpu(8 * GIB),
    ),
    (
        "Standard_EC{n}eds_v5",
        &[2, 4, 8, 16, 32, 48, 64, 128],
        PerVcpu(8 * GIB),
    ),
    (
        "Standard_D{n}as_v5",
        &[2, 4, 8, 16, 32, 48, 64, 96],
        PerVcpu(4 * GIB),
    ),
    (
        "Standard_D{n}ads_v5",
        &[2, 4, 8, 16, 32, 48, 64, 96],
        PerVcpu(4 * GIB),
    ),
    (
        "Standard_D{n}ls_v5",
        &[2, 4, 8, 16, 32, 48, 64, 96],
        PerVcpu(2 * GIB),
    ),
    (
        "Standard_D{n}lds_v5",
        &[2, 4, 8, 16, 32, 48, 64, 96],
        PerVcpu(2 * GIB),
    ),
    (
        "Standard_D{n}ps_v5",
        &[2, 4, 8, 16, 32, 48, 64],
        PerVcpu(4 * GIB),
    ),
    (
        "Standard_D{n}pds_v5",
        &[2, 4, 8, 16, 32, 48, 64],
        PerVcpu(4 * GIB),
    ),
    (
        "Standard_D{n}pls_v5",
        &[2, 4, 8, 16, 32, 48, 64],
        PerVcpu(2 * GIB),
    ),
    (
        "Standard_D{n}plds_v5",
        &[2, 4, 8, 16, 32, 48, 64],
        PerVcpu(2 * GIB),
    ),
    // Dv6 family.
    (
        "Standard_D{n}s_v6",
        &[2, 4, 8, 16, 32, 48, 64, 96, 128],
        PerVcpu(4 * GIB),
    ),
    (
        "Standard_D{n}ds_v6",
        &[2, 4, 8, 16, 32, 48, 64, 96, 128],
        PerVcpu(4 * GIB),
    ),
    (
        "Standard_D{n}ls_v6",
        &[2, 4, 8, 16, 32, 48, 64, 96, 128],
        PerVcpu(2 * GIB),
    ),
    (
        "Standard_D{n}lds_v6",
        &[2, 4, 8, 16, 32, 48, 64, 96, 128],
        PerVcpu(2 * GIB),
    ),
    (
        "Standard_D{n}as_v6",
        &[2, 4, 8, 16, 32, 48, 64, 96],
        PerVcpu(4 * GIB),
    ),
    (
        "Standard_D{n}ads_v6",
        &[2, 4, 8, 16, 32, 48, 64, 96],
        PerVcpu(4 * GIB),
    ),
    (
        "Standard_D{n}als_v6",
        &[2, 4, 8, 16, 32, 48, 64, 96],
        PerVcpu(2 * GIB),
    ),
    (
        "Standard_D{n}alds_v6",
        &[2, 4, 8, 16, 32, 48, 64, 96],
        PerVcpu(2 * GIB),
    ),
    (
        "Standard_D{n}ps_v6",
        &[2, 4, 8, 16, 32, 48, 64, 96],
        PerVcpu(4 * GIB),
    ),
    (
        "Standard_D{n}pds_v6",
        &[2, 4, 8, 16, 32, 48, 64, 96],
        PerVcpu(4 * GIB),
    ),
    (
        "Standard_D{n}pls_v6",
        &[2, 4, 8, 16, 32, 48, 64, 96],
        PerVcpu(2 * GIB),
    ),
    (
        "Standard_D{n}plds_v6",
        &[2, 4, 8, 16, 32, 48, 64, 96],
        PerVcpu(2 * GIB),
    ),
    // E (memory optimized): Ev3 to Ev6.
    (
        "Standard_E{n}_v3",
        &[2, 4, 8, 16, 20, 32, 48, 64],
        Each(&[
            16 * GIB,
            32 * GIB,
            64 * GIB,
            128 * GIB,
            160 * GIB,
            256 * GIB,
            384 * GIB,
            432 * GIB,
        ]),
    ),
    (
        "Standard_E{n}s_v3",
        &[2, 4, 8, 16, 20, 32, 48, 64],
        Each(&[
            16 * GIB,
            32 * GIB,
            64 * GIB,
            128 * GIB,
            160 * GIB,
            256 * GIB,
            384 * GIB,
            432 * GIB,
        ]),
    ),
    (
        "Standard_E{n}_v4",
        &[2, 4, 8, 16, 20, 32, 48, 64],
        Each(&[
            16 * GIB,
            32 * GIB,
            64 * GIB,
            128 * GIB,
            160 * GIB,
            256 * GIB,
            384 * GIB,
            504 * GIB,
        ]),
    ),
    (
        "Standard_E{n}s_v4",
        &[2, 4, 8, 16, 20, 32, 48, 64],
        Each(&[
            16 * GIB,
            32 * GIB,
            64 * GIB,
            128 * GIB,
            160 * GIB,
            256 * GIB,
            384 * GIB,
            504 * GIB,
        ]),
    ),
    (
        "Standard_E{n}d_v4",
        &[2, 4, 8, 16, 20, 32, 48, 64],
        Each(&[
            16 * GIB,
            32 * GIB,
            64 * GIB,
            128 * GIB,
            160 * GIB,
            256 * GIB,
            384 * GIB,
            504 * GIB,
        ]),
    ),
    (
        "Standard_E{n}ds_v4",
        &[2, 4, 8, 16, 20, 32, 48, 64],
        Each(&[
            16 * GIB,
            32 * GIB,
            64 * GIB,
            128 * GIB,
            160 * GIB,
            256 * GIB,
            384 * GIB,
            504 * GIB,
        ]),
    ),
    (
        "Standard_E{n}as_v4",
        &[2, 4, 8, 16, 20, 32, 48, 64, 96],
        Each(&[
            16 * GIB,
            32 * GIB,
            64 * GIB,
            128 * GIB,
            160 * GIB,
            256 * GIB,
            384 * GIB,
            512 * GIB,
            672 * GIB,
        ]),
    ),
    (
        "Standard_E{n}_v5",
        &[2, 4, 8, 16, 20, 32, 48, 64, 96, 104],
        Each(&[
            16 * GIB,
            32 * GIB,
            64 * GIB,
            128 * GIB,
            160 * GIB,
            256 * GIB,
            384 * GIB,
            512 * GIB,
            672 * GIB,
            672 * GIB,
        ]),
    ),
    (
        "Standard_E{n}s_v5",
        &[2, 4, 8, 16, 20, 32, 48, 64, 96, 104],
        Each(&[
            16 * GIB,
            32 * GIB,
            64 * GIB,
            128 * GIB,
            160 * GIB,
            256 * GIB,
            384 * GIB,
            512 * GIB,
            672 * GIB,
            672 * GIB,
        ]),
    ),
    (
        "Standard_E{n}d_v5",
        &[2, 4, 8, 16, 20, 32, 48, 64, 96, 104],
        Each(&[
            16 * GIB,
            32 * GIB,
            64 * GIB,
            128 * GIB,
            160 * GIB,
            256 * GIB,
            384 * GIB,
            512 * GIB,
            672 * GIB,
            672 * GIB,
        ]),
    ),
    (
        "Standard_E{n}ds_v5",
        &[2, 4, 8, 16, 20, 32, 48, 64, 96, 104],
        Each(&[
            16 * GIB,
            32 * GIB,
            64 * GIB,
            128 * GIB,
            160 * GIB,
            256 * GIB,
            384 * GIB,
            512 * GIB,
            672 * GIB,
            672 * GIB,
        ]),
    ),
    (
        "Standard_E{n}as_v5",
        &[2, 4, 8, 16, 20, 32, 48, 64, 96, 112],
        Each(&[
            16 * GIB,
            32 * GIB,
            64 * GIB,
            128 * GIB,
            160 * GIB,
            256 * GIB,
            384 * GIB,
            512 * GIB,
            672 * GIB,
            672 * GIB,
        ]),
    ),
    (
        "Standard_E{n}ads_v5",
        &[2, 4, 8, 16, 20, 32, 48, 64, 96, 112],
        Each(&[
            16 * GIB,
            32 * GIB,
            64 * GIB,
            128 * GIB,
            160 * GIB,
            256 * GIB,
            384 * GIB,
            512 * GIB,
            672 * GIB,
            672 * GIB,
        ]),
    ),
    (
        "Standard_E{n}ps_v5",
        &[2, 4, 8, 16, 20, 32],
        PerVcpu(8 * GIB),
    ),
    (
        "Standard_E{n}pds_v5",
        &[2, 4, 8, 16, 20, 32],
        PerVcpu(8 * GIB),
    ),
    (
        "Standard_E{n}s_v6",
        &[2, 4, 8, 16, 20, 32, 48, 64, 96, 128],
        PerVcpu(8 * GIB),
    ),
    (
        "Standard_E{n}ds_v6",
        &[2, 4, 8, 16, 20, 32, 48, 64, 96, 128],
        PerVcpu(8 * GIB),
    ),
    (
        "Standard_E{n}as_v6",
        &[2, 4, 8, 16, 20, 32, 48, 64, 96],
        PerVcpu(8 * GIB),
    ),
    (
        "Standard_E{n}ads_v6",
        &[2, 4, 8, 16, 20, 32, 48, 64, 96],
        PerVcpu(8 * GIB),
    ),
    (
        "Standard_E{n}ps_v6",
        &[2, 4, 8, 16, 32, 48, 64, 96],
        PerVcpu(8 * GIB),
    ),
    (
        "Standard_E{n}pds_v6",
        &[2, 4, 8, 16, 32, 48, 64, 96],
        PerVcpu(8 * GIB),
    ),
    // F (compute optimized).
    ("Standard_F{n}", &[1, 2, 4, 8, 16], PerVcpu(2 * GIB)),
    ("Standard_F{n}s", &[1, 2, 4, 8, 16], PerVcpu(2 * GIB)),
    (
        "Standard_F{n}s_v2",
        &[2, 4, 8, 16, 32, 48, 64, 72],
        PerVcpu(2 * GIB),
    ),
    (
        "Standard_F{n}as_v6",
        &[2, 4, 8, 16, 32, 48, 64],
        PerVcpu(4 * GIB),
    ),
    (
        "Standard_F{n}als_v6",
        &[2, 4, 8, 16, 32, 48, 64],
        PerVcpu(2 * GIB),
    ),
    (
        "Standard_F{n}ams_v6",
        &[2, 4, 8, 16, 32, 48, 64],
        PerVcpu(8 * GIB),
    ),
    // L (storage optimized).
    (
        "Standard_L{n}s_v2",
        &[8, 16, 32, 48, 64, 80],
        PerVcpu(8 * GIB),
    ),
    (
        "Standard_L{n}s_v3",
        &[8, 16, 32, 48, 64, 80],
        PerVcpu(8 * GIB),
    ),
    (
        "Standard_L{n}as_v3",
        &[8, 16, 32, 48, 64, 80],
        PerVcpu(8 * GIB),
    ),
    // M (large memory).
    ("Standard_M8ms", &[8], Each(&[224_000])),
    ("Standard_M16ms", &[16], Each(&[448_000])),
    ("Standard_M32ts", &[32], Each(&[192 * GIB])),
    ("Standard_M32ls", &[32], Each(&[256 * GIB])),
    ("Standard_M32ms", &[32], Each(&[896_000])),
    ("Standard_M64s", &[64], Each(&[1024 * GIB])),
    ("Standard_M64ls", &[64], Each(&[512 * GIB])),
    ("Standard_M64ms", &[64], Each(&[1792 * GIB])),
    ("Standard_M128s", &[128], Each(&[2048 * GIB])),
    ("Standard_M128ms", &[128], Each(&[3892 * GIB])),
    // N (GPU).
    (
        "Standard_NC{n}",
        &[6, 12, 24],
        Each(&[56 * GIB, 112 * GIB, 224 * GIB]),
    ),
    (
        "Standard_NV{n}",
        &[6, 12, 24],
        Each(&[56 * GIB, 112 * GIB, 224 * GIB]),
    ),
    (
        "Standard_NC{n}s_v3",
        &[6, 12, 24],
        Each(&[112 * GIB, 224 * GIB, 448 * GIB]),
    ),
    (
        "Standard_NV{n}s_v3",
        &[12, 24, 48],
        Each(&[112 * GIB, 224 * GIB, 448 * GIB]),
    ),
    (
        "Standard_NC{n}as_T4_v3",
        &[4, 8, 16, 64],
        Each(&[28 * GIB, 56 * GIB, 110 * GIB, 440 * GIB]),
    ),
    (
        "Standard_NC{n}ads_A100_v4",
        &[24, 48, 96],
        Each(&[220 * GIB, 440 * GIB, 880 * GIB]),
    ),
    (
        "Standard_NV{n}ads_A10_v5",
        &[6, 12, 18, 36, 72],
        Each(&[55 * GIB, 110 * GIB, 220 * GIB, 440 * GIB, 880 * GIB]),
    ),
    ("Standard_ND40rs_v2", &[40], Each(&[672 * GIB])),
    ("Standard_ND96asr_v4", &[96], Each(&[900 * GIB])),
];

/// Every size of [`FAMILIES`]: (name, vCPUs, memory in MiB).
pub fn azure_sizes() -> impl Iterator<Item = (String, u32, u64)> {
    FAMILIES.iter().flat_map(|(pattern, vcpus, memory)| {
        vcpus.iter().enumerate().map(move |(i, &n)| {
            let mib = match memory {
                PerVcpu(per) => per * u64::from(n),
                Each(list) => list.get(i).copied().unwrap_or(0),
            };
            (pattern.replace("{n}", &n.to_string()), n, mib)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_row_is_well_formed_and_names_are_unique() {
        for (pattern, vcpus, memory) in FAMILIES {
            assert!(!vcpus.is_empty(), "{pattern}");
            if let Each(list) = memory {
                assert_eq!(
                    list.len(),
                    vcpus.len(),
                    "{pattern}: one memory per vCPU count"
                );
            }
            assert!(pattern.contains("{n}") || vcpus.len() == 1, "{pattern}");
        }
        let mut seen = HashSet::new();
        for (name, vcpus, mib) in azure_sizes() {
            assert!(vcpus > 0 && mib >= 512, "{name}");
            assert!(seen.insert(name.to_ascii_lowercase()), "{name} twice");
        }
        assert!(seen.len() > 400, "{}", seen.len());
    }

    #[test]
    fn documented_sizes() {
        let find = |n: &str| {
            azure_sizes()
                .find(|(name, _, _)| name == n)
                .map(|(_, v, m)| (v, m))
        };
        assert_eq!(find("Standard_D1_v2"), Some((1, 3584)));
        assert_eq!(find("Standard_D2_v2"), Some((2, 7168)));
        assert_eq!(find("Standard_A8m_v2"), Some((8, 65536)));
        assert_eq!(find("Standard_D2s_v3"), Some((2, 8192)));
        assert_eq!(find("Standard_E64s_v3"), Some((64, 432 * 1024)));
        assert_eq!(find("Standard_F72s_v2"), Some((72, 144 * 1024)));
        assert_eq!(find("Standard_D96plds_v6"), Some((96, 192 * 1024)));
    }
}
