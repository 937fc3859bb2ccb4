//! How values of each element type are stored in memory by compiled code.
//!
//! f32 as IEEE binary32; integer-valued types (plain integers, quantized codes, bipolar
//! +-1) as their codes in the smallest machine integer that holds the storage width:
//! 1..8 bits in one byte, 16 in two, 32 in four, sign- or zero-extended on load as the
//! storage is signed or not. (Sub-byte bit packing is the job of `bit_pack` and the
//! low-bit kernels, not of the default storage.)

use qcc_ir::ElemType;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Store {
    F32,
    I8,
    U8,
    I16,
    U16,
    I32,
    U32,
}

impl Store {
    pub fn of(elem: &ElemType) -> Store {
        match elem {
            ElemType::F32 => Store::F32,
            ElemType::Bipolar => Store::I8,
            ElemType::Int(t) | ElemType::Quant(qcc_ir::QuantType { storage: t, .. }) => {
                match (t.bits, t.signed) {
                    (0..=8, true) => Store::I8,
                    (0..=8, false) => Store::U8,
                    (9..=16, true) => Store::I16,
                    (9..=16, false) => Store::U16,
                    (_, true) => Store::I32,
                    (_, false) => Store::U32,
                }
            }
        }
    }

    pub fn bytes(self) -> usize {
        match self {
            Store::I8 | Store::U8 => 1,
            Store::I16 | Store::U16 => 2,
            Store::F32 | Store::I32 | Store::U32 => 4,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Store::F32 => "f32",
            Store::I8 => "i8",
            Store::U8 => "u8",
            Store::I16 => "i16",
            Store::U16 => "u16",
            Store::I32 => "i32",
            Store::U32 => "u32",
        }
    }

    /// Encodes codes into this storage (little-endian), for constants and JIT arguments.
    pub fn encode_ints(self, codes: &[i64], out: &mut Vec<u8>) {
        for &c in codes {
            match self.bytes() {
                1 => out.push(c as u8),
                2 => out.extend_from_slice(&(c as u16).to_le_bytes()),
                _ => out.extend_from_slice(&(c as u32).to_le_bytes()),
            }
        }
    }

    /// Decodes codes from this storage.
    pub fn decode_ints(self, bytes: &[u8]) -> Vec<i64> {
        match self {
            Store::I8 => bytes.iter().map(|&b| b as i8 as i64).collect(),
            Store::U8 => bytes.iter().map(|&b| b as i64).collect(),
            Store::I16 => bytes
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]) as i64)
                .collect(),
            Store::U16 => bytes
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]) as i64)
                .collect(),
            Store::I32 => bytes
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64)
                .collect(),
            Store::U32 => bytes
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64)
                .collect(),
            Store::F32 => Vec::new(),
        }
    }
}
