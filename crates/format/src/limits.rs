//! The hard limits of spec §8. A reader checks each before it allocates or reads.

/// Limits a reader enforces. `Limits::SPEC` is what the spec sets; an application may lower
/// any of them (never raise them) with [`crate::ReadOptions`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub table_size: u64,
    pub sections: u32,
    pub tensors: u32,
    pub name_len: usize,
    pub rank: usize,
    pub elements: u64,
    pub decoded_bytes: u64,
    pub stages: usize,
    pub stage_params: usize,
    pub map_entries: u32,
    pub key_len: usize,
    pub string_len: u32,
    pub array_len: u32,
    pub array_depth: usize,
    pub graph_nodes: u32,
}

impl Limits {
    pub const SPEC: Limits = Limits {
        table_size: 64 << 20,
        sections: 64,
        tensors: 1 << 20,
        name_len: 1024,
        rank: 8,
        elements: 1 << 40,
        decoded_bytes: 1 << 36,
        stages: 8,
        stage_params: 4096,
        map_entries: 65_536,
        key_len: 256,
        string_len: 16 << 20,
        array_len: 1 << 24,
        array_depth: 4,
        graph_nodes: 65_536,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::SPEC
    }
}

/// Round up to the spec's payload alignment.
pub const ALIGN: u64 = 64;

pub fn align64(x: u64) -> Option<u64> {
    x.checked_add(ALIGN - 1).map(|v| v & !(ALIGN - 1))
}
