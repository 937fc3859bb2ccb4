//! ONNX element types and initializer decoding.
//!
//! Import-time constants ([`CTensor`]) keep the ONNX element type beside the data, so that
//! int64 shape arithmetic and quantized weights keep their meaning until an IR op needs
//! them. Data comes from `raw_data` (little-endian; sub-byte types packed, first element
//! in the lowest bits), from the typed fields (`float_data`, `int32_data` — which holds
//! 8/16-bit integers one per entry and packed sub-byte bytes one per entry —,
//! `int64_data`, `double_data`, `uint64_data`), or from an external data file beside the
//! model.

use std::path::Path;

use onnx_protobuf::TensorProto;
use qcc_ir::interp::{Tensor, TensorData};
use qcc_ir::{ElemType, IntType};

/// An ONNX element type (`TensorProto.DataType`), including the codes newer than the
/// schema onnx-protobuf was generated from (int2/uint2 are 25/26).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    F32,
    U8,
    I8,
    U16,
    I16,
    I32,
    I64,
    Str,
    Bool,
    F16,
    F64,
    U32,
    U64,
    Bf16,
    /// float8 (e4m3fn, e4m3fnuz, e5m2, e5m2fnuz), float4e2m1, float8e8m0: not supported.
    Float8(i32),
    U4,
    I4,
    U2,
    I2,
    Other(i32),
}

impl DType {
    pub fn from_code(c: i32) -> DType {
        match c {
            1 => DType::F32,
            2 => DType::U8,
            3 => DType::I8,
            4 => DType::U16,
            5 => DType::I16,
            6 => DType::I32,
            7 => DType::I64,
            8 => DType::Str,
            9 => DType::Bool,
            10 => DType::F16,
            11 => DType::F64,
            12 => DType::U32,
            13 => DType::U64,
            16 => DType::Bf16,
            17..=20 | 23 | 24 => DType::Float8(c),
            21 => DType::U4,
            22 => DType::I4,
            25 => DType::U2,
            26 => DType::I2,
            _ => DType::Other(c),
        }
    }

    pub fn code(self) -> i32 {
        match self {
            DType::F32 => 1,
            DType::U8 => 2,
            DType::I8 => 3,
            DType::U16 => 4,
            DType::I16 => 5,
            DType::I32 => 6,
            DType::I64 => 7,
            DType::Str => 8,
            DType::Bool => 9,
            DType::F16 => 10,
            DType::F64 => 11,
            DType::U32 => 12,
            DType::U64 => 13,
            DType::Bf16 => 16,
            DType::U4 => 21,
            DType::I4 => 22,
            DType::U2 => 25,
            DType::I2 => 26,
            DType::Float8(c) | DType::Other(c) => c,
        }
    }

    /// The ONNX spelling (`float`, `uint8`, `int4`, ...).
    pub fn name(self) -> String {
        match self {
            DType::F32 => "float".into(),
            DType::U8 => "uint8".into(),
            DType::I8 => "int8".into(),
            DType::U16 => "uint16".into(),
            DType::I16 => "int16".into(),
            DType::I32 => "int32".into(),
            DType::I64 => "int64".into(),
            DType::Str => "string".into(),
            DType::Bool => "bool".into(),
            DType::F16 => "float16".into(),
            DType::F64 => "double".into(),
            DType::U32 => "uint32".into(),
            DType::U64 => "uint64".into(),
            DType::Bf16 => "bfloat16".into(),
            DType::Float8(17) => "float8e4m3fn".into(),
            DType::Float8(18) => "float8e4m3fnuz".into(),
            DType::Float8(19) => "float8e5m2".into(),
            DType::Float8(20) => "float8e5m2fnuz".into(),
            DType::Float8(23) => "float4e2m1".into(),
            DType::Float8(24) => "float8e8m0".into(),
            DType::U4 => "uint4".into(),
            DType::I4 => "int4".into(),
            DType::U2 => "uint2".into(),
            DType::I2 => "int2".into(),
            DType::Float8(c) | DType::Other(c) => format!("data type {c}"),
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16 | DType::F64 | DType::Bf16)
    }

    /// Integer storage of integer types (bool is a 1-bit unsigned integer); `None` for
    /// floats, strings and 64-bit integers (which the IR cannot hold at run time).
    pub fn int_type(self) -> Option<IntType> {
        let (bits, signed) = match self {
            DType::U8 => (8, false),
            DType::I8 => (8, true),
            DType::U16 => (16, false),
            DType::I16 => (16, true),
            DType::I32 => (32, true),
            DType::U32 => (32, false),
            DType::U4 => (4, false),
            DType::I4 => (4, true),
            DType::U2 => (2, false),
            DType::I2 => (2, true),
            DType::Bool => (1, false),
            _ => return None,
        };
        Some(IntType::new(bits, signed))
    }

    pub fn is_int(self) -> bool {
        self.int_type().is_some() || matches!(self, DType::I64 | DType::U64)
    }

    /// Bits one element takes in storage (0 when unknown).
    pub fn bits(self) -> u32 {
        match self {
            DType::F32 | DType::I32 | DType::U32 => 32,
            DType::F64 | DType::I64 | DType::U64 => 64,
            DType::F16 | DType::Bf16 | DType::U16 | DType::I16 => 16,
            DType::U8 | DType::I8 | DType::Bool | DType::Float8(_) => 8,
            DType::U4 | DType::I4 => 4,
            DType::U2 | DType::I2 => 2,
            DType::Str | DType::Other(_) => 0,
        }
    }

    /// The ONNX type of an IR element type (quantized codes map to their storage).
    pub fn of_elem(e: &ElemType) -> DType {
        match e {
            ElemType::F32 => DType::F32,
            ElemType::Bipolar => DType::I8,
            ElemType::Int(t) | ElemType::Quant(qcc_ir::QuantType { storage: t, .. }) => {
                match (t.bits, t.signed) {
                    (1, _) => DType::Bool,
                    (2, true) => DType::I2,
                    (2, false) => DType::U2,
                    (3..=4, true) => DType::I4,
                    (3..=4, false) => DType::U4,
                    (5..=8, true) => DType::I8,
                    (5..=8, false) => DType::U8,
                    (16, true) => DType::I16,
                    (16, false) => DType::U16,
                    (_, false) => DType::U32,
                    _ => DType::I32,
                }
            }
        }
    }
}

/// Constant data: floats (every float type, held as f32) or integers (held as i64).
#[derive(Clone, Debug, PartialEq)]
pub enum CData {
    F(Vec<f32>),
    I(Vec<i64>),
}

impl CData {
    pub fn len(&self) -> usize {
        match self {
            CData::F(v) => v.len(),
            CData::I(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The element at `i` as f64 (integers converted).
    pub fn get_f64(&self, i: usize) -> f64 {
        match self {
            CData::F(v) => v[i] as f64,
            CData::I(v) => v[i] as f64,
        }
    }

    pub fn gather(&self, idx: &[usize]) -> CData {
        match self {
            CData::F(v) => CData::F(idx.iter().map(|&i| v[i]).collect()),
            CData::I(v) => CData::I(idx.iter().map(|&i| v[i]).collect()),
        }
    }
}

/// An import-time constant: ONNX element type, shape and data (row-major).
#[derive(Clone, Debug, PartialEq)]
pub struct CTensor {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub data: CData,
}

impl CTensor {
    pub fn new(dtype: DType, shape: Vec<usize>, data: CData) -> CTensor {
        CTensor { dtype, shape, data }
    }

    pub fn i64s(shape: Vec<usize>, v: Vec<i64>) -> CTensor {
        CTensor::new(DType::I64, shape, CData::I(v))
    }

    pub fn f32s(shape: Vec<usize>, v: Vec<f32>) -> CTensor {
        CTensor::new(DType::F32, shape, CData::F(v))
    }

    pub fn numel(&self) -> usize {
        self.data.len()
    }

    /// The values as integers (floats must be integral).
    pub fn to_i64(&self) -> Result<Vec<i64>, String> {
        match &self.data {
            CData::I(v) => Ok(v.clone()),
            CData::F(v) => v
                .iter()
                .map(|&x| {
                    if x.fract() == 0.0 && x.is_finite() {
                        Ok(x as i64)
                    } else {
                        Err(format!("expected integers, found {x}"))
                    }
                })
                .collect(),
        }
    }

    /// The values as f32 (integers converted).
    pub fn to_f32(&self) -> Vec<f32> {
        match &self.data {
            CData::F(v) => v.clone(),
            CData::I(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }

    /// The one value of a one-element tensor.
    pub fn scalar_f64(&self) -> Option<f64> {
        (self.numel() == 1).then(|| self.data.get_f64(0))
    }

    /// The interpreter tensor holding the same values (floats as f32, integers as codes).
    pub fn to_tensor(&self) -> Tensor {
        let data = match &self.data {
            CData::F(v) => TensorData::F32(v.clone()),
            CData::I(v) => TensorData::Int(v.clone()),
        };
        Tensor {
            shape: self.shape.clone(),
            data,
        }
    }

    /// A constant from an interpreter tensor of IR element type `elem`.
    pub fn from_tensor(t: &Tensor, dtype: DType) -> CTensor {
        let data = match &t.data {
            TensorData::F32(v) => CData::F(v.clone()),
            TensorData::Int(v) => CData::I(v.clone()),
        };
        CTensor::new(dtype, t.shape.clone(), data)
    }
}

/// Where external data files are looked up.
#[derive(Clone, Copy, Debug)]
pub struct DataDir<'a>(pub Option<&'a Path>);

fn le_chunks<const N: usize>(raw: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
    raw.chunks_exact(N)
        .map(|c| c.try_into().expect("chunks_exact gives N bytes"))
}

/// f16 bits to f32.
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let man = (h & 0x3ff) as u32;
    let bits = if exp == 0 {
        if man == 0 {
            sign
        } else {
            // Subnormal: normalise.
            let mut e = 127 - 15 + 1;
            let mut m = man;
            while m & 0x400 == 0 {
                m <<= 1;
                e -= 1;
            }
            sign | (e << 23) | ((m & 0x3ff) << 13)
        }
    } else if exp == 0x1f {
        sign | 0x7f80_0000 | (man << 13)
    } else {
        sign | ((exp + 127 - 15) << 23) | (man << 13)
    };
    f32::from_bits(bits)
}

/// Unpacks `n` sub-byte values of `bits` bits from bytes (first element in the lowest
/// bits), sign-extending when `signed`.
fn unpack_sub_byte(bytes: &[u8], n: usize, bits: u32, signed: bool) -> Result<Vec<i64>, String> {
    let per = (8 / bits) as usize;
    if bytes.len() < n.div_ceil(per) {
        return Err(format!(
            "{n} elements of {bits} bits need {} bytes, found {}",
            n.div_ceil(per),
            bytes.len()
        ));
    }
    let mask = (1u32 << bits) - 1;
    Ok((0..n)
        .map(|i| {
            let b = bytes[i / per] as u32;
            let v = (b >> ((i % per) as u32 * bits)) & mask;
            if signed && v >= 1 << (bits - 1) {
                v as i64 - (1i64 << bits)
            } else {
                v as i64
            }
        })
        .collect())
}

fn decode_raw(dtype: DType, raw: &[u8], n: usize) -> Result<CData, String> {
    let want = |size: usize| -> Result<(), String> {
        if raw.len() != n * size {
            return Err(format!(
                "raw data has {} bytes, {n} elements of {} need {}",
                raw.len(),
                dtype.name(),
                n * size
            ));
        }
        Ok(())
    };
    Ok(match dtype {
        DType::F32 => {
            want(4)?;
            CData::F(le_chunks::<4>(raw).map(f32::from_le_bytes).collect())
        }
        DType::F64 => {
            want(8)?;
            CData::F(
                le_chunks::<8>(raw)
                    .map(|b| f64::from_le_bytes(b) as f32)
                    .collect(),
            )
        }
        DType::F16 => {
            want(2)?;
            CData::F(
                le_chunks::<2>(raw)
                    .map(|b| f16_to_f32(u16::from_le_bytes(b)))
                    .collect(),
            )
        }
        DType::Bf16 => {
            want(2)?;
            CData::F(
                le_chunks::<2>(raw)
                    .map(|b| f32::from_bits((u16::from_le_bytes(b) as u32) << 16))
                    .collect(),
            )
        }
        DType::U8 | DType::Bool => {
            want(1)?;
            CData::I(raw.iter().map(|&b| b as i64).collect())
        }
        DType::I8 => {
            want(1)?;
            CData::I(raw.iter().map(|&b| b as i8 as i64).collect())
        }
        DType::U16 => {
            want(2)?;
            CData::I(
                le_chunks::<2>(raw)
                    .map(|b| u16::from_le_bytes(b) as i64)
                    .collect(),
            )
        }
        DType::I16 => {
            want(2)?;
            CData::I(
                le_chunks::<2>(raw)
                    .map(|b| i16::from_le_bytes(b) as i64)
                    .collect(),
            )
        }
        DType::I32 => {
            want(4)?;
            CData::I(
                le_chunks::<4>(raw)
                    .map(|b| i32::from_le_bytes(b) as i64)
                    .collect(),
            )
        }
        DType::U32 => {
            want(4)?;
            CData::I(
                le_chunks::<4>(raw)
                    .map(|b| u32::from_le_bytes(b) as i64)
                    .collect(),
            )
        }
        DType::I64 => {
            want(8)?;
            CData::I(le_chunks::<8>(raw).map(i64::from_le_bytes).collect())
        }
        DType::U64 => {
            want(8)?;
            CData::I(
                le_chunks::<8>(raw)
                    .map(|b| u64::from_le_bytes(b) as i64)
                    .collect(),
            )
        }
        DType::U4 | DType::I4 | DType::U2 | DType::I2 => {
            let bits = dtype.bits();
            let packed = n.div_ceil((8 / bits) as usize);
            if raw.len() != packed {
                return Err(format!(
                    "raw data has {} bytes, {n} packed elements of {} need {packed}",
                    raw.len(),
                    dtype.name()
                ));
            }
            CData::I(unpack_sub_byte(
                raw,
                n,
                bits,
                matches!(dtype, DType::I4 | DType::I2),
            )?)
        }
        DType::Str | DType::Float8(_) | DType::Other(_) => {
            return Err(format!("element type {} is not supported", dtype.name()));
        }
    })
}

fn decode_typed(t: &TensorProto, dtype: DType, n: usize) -> Result<CData, String> {
    let count = |len: usize| -> Result<(), String> {
        if len != n {
            return Err(format!(
                "the tensor's shape has {n} elements, its data field has {len}"
            ));
        }
        Ok(())
    };
    Ok(match dtype {
        DType::F32 => {
            count(t.float_data.len())?;
            CData::F(t.float_data.clone())
        }
        DType::F64 => {
            count(t.double_data.len())?;
            CData::F(t.double_data.iter().map(|&x| x as f32).collect())
        }
        DType::F16 | DType::Bf16 => {
            count(t.int32_data.len())?;
            CData::F(
                t.int32_data
                    .iter()
                    .map(|&x| {
                        let h = x as u16;
                        if dtype == DType::F16 {
                            f16_to_f32(h)
                        } else {
                            f32::from_bits((h as u32) << 16)
                        }
                    })
                    .collect(),
            )
        }
        DType::U8 | DType::I8 | DType::U16 | DType::I16 | DType::I32 | DType::Bool => {
            count(t.int32_data.len())?;
            let it = dtype.int_type().expect("integer type");
            CData::I(t.int32_data.iter().map(|&x| it.wrap(x as i64)).collect())
        }
        DType::I64 => {
            count(t.int64_data.len())?;
            CData::I(t.int64_data.clone())
        }
        DType::U32 | DType::U64 => {
            count(t.uint64_data.len())?;
            CData::I(t.uint64_data.iter().map(|&x| x as i64).collect())
        }
        DType::U4 | DType::I4 | DType::U2 | DType::I2 => {
            let bytes: Vec<u8> = t.int32_data.iter().map(|&x| x as u8).collect();
            CData::I(unpack_sub_byte(
                &bytes,
                n,
                dtype.bits(),
                matches!(dtype, DType::I4 | DType::I2),
            )?)
        }
        DType::Str | DType::Float8(_) | DType::Other(_) => {
            return Err(format!("element type {} is not supported", dtype.name()));
        }
    })
}

/// Reads the bytes of an externally stored tensor.
fn external_bytes(t: &TensorProto, dir: DataDir<'_>) -> Result<Vec<u8>, String> {
    let mut location = None;
    let mut offset = 0u64;
    let mut length = None;
    for e in &t.external_data {
        match e.key.as_str() {
            "location" => location = Some(e.value.clone()),
            "offset" => {
                offset = e.value.parse().map_err(|_| {
                    format!("external data offset `{}` is not a byte count", e.value)
                })?
            }
            "length" => {
                length = Some(e.value.parse::<u64>().map_err(|_| {
                    format!("external data length `{}` is not a byte count", e.value)
                })?)
            }
            _ => {}
        }
    }
    let loc = location.ok_or("external data without a `location`")?;
    let rel = Path::new(&loc);
    if rel.is_absolute()
        || rel
            .components()
            .any(|c| c == std::path::Component::ParentDir)
    {
        return Err(format!(
            "external data location `{loc}` must be a relative path inside the model's folder"
        ));
    }
    let path = match dir.0 {
        Some(d) => d.join(rel),
        None => rel.to_path_buf(),
    };
    // A relative path can still leave the folder through a symbolic link.
    let folder = dir
        .0
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if let (Ok(real), Ok(real_dir)) = (path.canonicalize(), folder.canonicalize())
        && !real.starts_with(&real_dir)
    {
        return Err(format!(
            "external data location `{loc}` leads outside the model's folder (to {}, \
             through a symbolic link); keep the data file inside {}",
            real.display(),
            real_dir.display()
        ));
    }
    let mut file = std::fs::File::open(&path)
        .map_err(|e| format!("missing external data file `{}` ({e})", path.display()))?;
    let size = file
        .metadata()
        .map_err(|e| format!("cannot read external data file `{}` ({e})", path.display()))?
        .len();
    let end = match length {
        Some(l) => offset.saturating_add(l),
        None => size,
    };
    if offset > end || end > size {
        return Err(format!(
            "external data file `{}` has {size} bytes; offset {offset} and length {} do not fit",
            path.display(),
            end.saturating_sub(offset)
        ));
    }
    let len = usize::try_from(end - offset).map_err(|_| "external data length too large")?;
    use std::io::{Read, Seek, SeekFrom};
    let mut bytes = vec![0u8; len];
    file.seek(SeekFrom::Start(offset))
        .and_then(|_| file.read_exact(&mut bytes))
        .map_err(|e| format!("cannot read external data file `{}` ({e})", path.display()))?;
    Ok(bytes)
}

/// Decodes an initializer or constant. `dir` is where external data files are.
pub fn decode(t: &TensorProto, dir: DataDir<'_>) -> Result<CTensor, String> {
    let dtype = DType::from_code(t.data_type);
    let mut shape = Vec::with_capacity(t.dims.len());
    for &d in &t.dims {
        shape.push(usize::try_from(d).map_err(|_| {
            format!(
                "dimension {d} is negative (dims {:?}); dimensions are sizes",
                t.dims
            )
        })?);
    }
    let n = super::checked_numel(&shape).ok_or_else(|| {
        format!(
            "shape {shape:?} has more than 2^32 elements (or their count overflows); qcc \
             takes tensors of at most {} elements",
            super::MAX_ELEMENTS
        )
    })?;
    let external = t.data_location.value() == 1;
    let data = if external {
        decode_raw(dtype, &external_bytes(t, dir)?, n)?
    } else if !t.raw_data.is_empty() || (n == 0) {
        decode_raw(dtype, &t.raw_data, n)?
    } else {
        decode_typed(t, dtype, n)?
    };
    Ok(CTensor::new(dtype, shape, data))
}

/// Reads a serialized `TensorProto` file (the ONNX test-data `.pb` files): its name and
/// value.
pub fn read_tensor_file(path: &Path) -> Result<(String, CTensor), String> {
    use onnx_protobuf::Message;
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let t = TensorProto::parse_from_bytes(&bytes)
        .map_err(|e| format!("{} is not a TensorProto: {e}", path.display()))?;
    let c = decode(&t, DataDir(path.parent())).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((t.name.clone(), c))
}

/// Whether the tensor names an external data file.
pub fn is_external(t: &TensorProto) -> bool {
    t.data_location.value() == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_byte_unpacking() {
        // int4: 0x8F -> low nibble 15 (-1), high nibble 8 (-8); odd count padded.
        assert_eq!(
            unpack_sub_byte(&[0x8F, 0x07], 3, 4, true).unwrap(),
            [-1, -8, 7]
        );
        assert_eq!(unpack_sub_byte(&[0x8F], 2, 4, false).unwrap(), [15, 8]);
        // int2: 0b11_10_01_00 -> 0, 1, -2, -1.
        assert_eq!(
            unpack_sub_byte(&[0b1110_0100], 4, 2, true).unwrap(),
            [0, 1, -2, -1]
        );
        assert!(unpack_sub_byte(&[0], 3, 2, false).is_ok());
        assert!(unpack_sub_byte(&[0], 5, 2, false).is_err());
    }

    #[test]
    fn half_floats() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert!(f16_to_f32(0x7e00).is_nan());
    }

    #[test]
    fn raw_and_typed() {
        let mut t = TensorProto::new();
        t.dims = vec![2];
        t.data_type = 7;
        t.int64_data = vec![3, -4];
        assert_eq!(
            decode(&t, DataDir(None)).unwrap().data,
            CData::I(vec![3, -4])
        );
        t.raw_data = vec![1, 0, 0, 0, 0, 0, 0, 0];
        assert!(decode(&t, DataDir(None)).is_err());
        t.data_type = 26; // int2, raw: one byte holds both
        t.raw_data = vec![0b0000_1101];
        assert_eq!(
            decode(&t, DataDir(None)).unwrap().data,
            CData::I(vec![1, -1])
        );
    }
}
