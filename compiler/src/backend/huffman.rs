//! `--compress-weights huffman`: canonical Huffman coding of the read-only data blobs
//! the kernels read (packed weights, bias and requantize tables), built at compile time,
//! and the decoder the backend emits (in Cranelift IR) to expand them into the scratch
//! arena at the start of every call.
//!
//! The code is over byte symbols, one per blob, with code lengths limited to
//! [`MAX_LEN`] bits (package-merge, so the limited code is optimal) and assigned
//! canonically: symbols sorted by (length, byte value) get consecutive codes. A
//! compressed blob is, in the object:
//!
//! ```text
//! format   1 byte             0 or 1: how the code is given
//! code     format 0:          MAX_LEN x u16 LE, symbols with code length 1, ..., MAX_LEN,
//!                             then the symbols in canonical order (1 byte each)
//!          format 1:          128 bytes, byte value 2i's code length in the low nibble
//!                             of byte i, 2i + 1's in the high one (0: absent)
//! starts   3 x u32 LE         where streams 1, 2 and 3 start, from stream 0's start
//! streams  4 bit streams, each byte-aligned, codes most significant bit first,
//!          then PAD zero bytes
//! ```
//!
//! The blob of `n` bytes is cut in four (`q = n / 4` bytes each for the first three,
//! the rest for the last), each coded in its own stream with the blob's code, so the
//! decoder follows four independent bit positions at once (a single stream is one long
//! chain of dependent loads; four keep the CPU busy, as zstd's Huff0 does).
//!
//! Canonical codes make the decoder's lookup table (2^MAX_LEN u16 entries, `symbol |
//! length << 8`, indexed by the next MAX_LEN bits) a run of equal entries per symbol in
//! canonical order, so building it is a fill (format 1, the smaller one for blobs of more
//! than 106 distinct bytes, first sorts the lengths into format 0's form by counting). Decoding one byte is one unaligned 8-byte
//! load, a byte swap, two shifts and a table lookup (the PAD bytes keep the load inside
//! the blob). Everything here is deterministic: ties are broken by byte value.

use std::str::FromStr;

/// The longest code: the lookup table has `2^MAX_LEN` entries of 2 bytes.
pub const MAX_LEN: u32 = 11;
/// Zero bytes after the stream: the decoder loads 8 bytes at the byte of its bit position.
pub const PAD: usize = 8;
/// Blobs smaller than this stay as they are (their table would eat the gain).
pub const MIN_BLOB: usize = 512;
/// Bytes of the decoder's lookup table (in the scratch arena while decoding).
pub const TABLE_BYTES: u64 = 2 << MAX_LEN;
/// Bytes of scratch one decoding needs: the table, then the counting sort's 16 u16
/// counts, 16 u16 places and 256 sorted symbols.
pub const DECODER_SCRATCH: u64 = TABLE_BYTES + 32 + 32 + 256;
/// Bit streams per blob, decoded side by side.
pub const STREAMS: usize = 4;

/// How the object stores its weights (`--compress-weights`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compress {
    /// As they are (the default).
    #[default]
    None,
    /// Huffman-coded, decoded into the scratch arena at the start of every call.
    Huffman,
}

impl Compress {
    /// The accepted values of `--compress-weights`.
    pub const VALUES: [&'static str; 2] = ["none", "huffman"];
}

impl FromStr for Compress {
    type Err = String;
    fn from_str(s: &str) -> Result<Compress, String> {
        match s {
            "none" => Ok(Compress::None),
            "huffman" => Ok(Compress::Huffman),
            _ => Err(format!(
                "--compress-weights {s}: unknown value; accepted values: {}",
                Compress::VALUES.join(", ")
            )),
        }
    }
}

impl std::fmt::Display for Compress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Compress::None => "none",
            Compress::Huffman => "huffman",
        })
    }
}

/// Optimal code lengths, at most `max_len` bits, for the byte frequencies `freq`
/// (package-merge). Symbols of frequency 0 get length 0; a lone symbol gets length 1.
/// Ties are broken by byte value, so the result depends on `freq` only.
///
/// # Panics
/// If `max_len` is 0 or over 16, or more than `2^max_len` symbols occur.
pub fn code_lengths(freq: &[u64; 256], max_len: u32) -> [u8; 256] {
    assert!(
        (1..=16).contains(&max_len),
        "max_len {max_len} out of 1..=16"
    );
    let mut leaves: Vec<(u64, usize)> = (0..256)
        .filter(|&s| freq[s] > 0)
        .map(|s| (freq[s], s))
        .collect();
    let mut len = [0u8; 256];
    match leaves.len() {
        0 => return len,
        1 => {
            len[leaves[0].1] = 1;
            return len;
        }
        n => assert!(
            n <= 1 << max_len,
            "{n} symbols do not fit codes of {max_len} bits"
        ),
    }
    leaves.sort_unstable();
    let n = leaves.len();
    // An item: its weight and how often each leaf is in it (a leaf's count is how
    // many times it is in the chosen items: its code length).
    type Item = (u64, Vec<u8>);
    let leaf_items: Vec<Item> = (0..n)
        .map(|i| {
            let mut c = vec![0u8; n];
            c[i] = 1;
            (leaves[i].0, c)
        })
        .collect();
    let mut list = leaf_items.clone();
    for _ in 1..max_len {
        let packages: Vec<Item> = list
            .chunks_exact(2)
            .map(|p| {
                let c = p[0].1.iter().zip(&p[1].1).map(|(a, b)| a + b).collect();
                (p[0].0 + p[1].0, c)
            })
            .collect();
        // Merge by weight; leaves first on ties (stable and deterministic).
        let mut merged = Vec::with_capacity(n + packages.len());
        let (mut i, mut j) = (0, 0);
        while i < n || j < packages.len() {
            let take_leaf = j == packages.len() || (i < n && leaf_items[i].0 <= packages[j].0);
            if take_leaf {
                merged.push(leaf_items[i].clone());
                i += 1;
            } else {
                merged.push(packages[j].clone());
                j += 1;
            }
        }
        list = merged;
    }
    let mut counts = vec![0u32; n];
    for item in list.iter().take(2 * n - 2) {
        for (c, &k) in counts.iter_mut().zip(&item.1) {
            *c += u32::from(k);
        }
    }
    for (i, &(_, s)) in leaves.iter().enumerate() {
        len[s] = counts[i] as u8;
    }
    len
}

/// The canonical code of `len`: `(code, length)` per byte (length 0: not coded).
/// Symbols sorted by (length, byte value) get consecutive codes.
pub fn canonical_codes(len: &[u8; 256]) -> [(u32, u8); 256] {
    let mut order: Vec<usize> = (0..256).filter(|&s| len[s] > 0).collect();
    order.sort_by_key(|&s| (len[s], s));
    let mut codes = [(0u32, 0u8); 256];
    let mut code = 0u32;
    let mut prev = 0u8;
    for s in order {
        code <<= len[s] - prev;
        prev = len[s];
        codes[s] = (code, len[s]);
        code += 1;
    }
    codes
}

/// A blob coded with its own canonical code, in the object's format (module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    /// The code, the streams and their padding: what the object holds.
    pub bytes: Vec<u8>,
    /// Bytes of the raw blob.
    pub raw_len: usize,
    /// Where the first stream starts in `bytes` (after the code lengths and the
    /// other streams' starts).
    pub stream_at: usize,
    /// Distinct byte values in the blob.
    pub symbols: usize,
    /// The longest code, in bits (0 for an empty blob).
    pub max_len: u32,
}

/// `data` coded with a canonical Huffman code of at most [`MAX_LEN`] bits.
pub fn encode(data: &[u8]) -> Encoded {
    let mut freq = [0u64; 256];
    for &b in data {
        freq[b as usize] += 1;
    }
    let len = code_lengths(&freq, MAX_LEN);
    let codes = canonical_codes(&len);
    // The smaller of the two forms of the code (module docs).
    let mut order: Vec<usize> = (0..256).filter(|&s| len[s] > 0).collect();
    order.sort_by_key(|&s| (len[s], s));
    let mut bytes = vec![0u8];
    if 2 * MAX_LEN as usize + order.len() <= 128 {
        for l in 1..=MAX_LEN as u8 {
            let c = len.iter().filter(|&&x| x == l).count() as u16;
            bytes.extend_from_slice(&c.to_le_bytes());
        }
        bytes.extend(order.iter().map(|&s| s as u8));
    } else {
        bytes[0] = 1;
        bytes.extend(len.chunks_exact(2).map(|p| p[0] | p[1] << 4));
    }
    let starts_at = bytes.len();
    bytes.extend_from_slice(&[0; 4 * (STREAMS - 1)]);
    let stream_at = bytes.len();
    for (k, seg) in segments(data.len()).into_iter().enumerate() {
        if k > 0 {
            let start = (bytes.len() - stream_at) as u32;
            let at = starts_at + 4 * (k - 1);
            bytes[at..at + 4].copy_from_slice(&start.to_le_bytes());
        }
        let mut acc = 0u64;
        let mut nbits = 0u32;
        for &b in &data[seg] {
            let (code, l) = codes[b as usize];
            acc = (acc << l) | u64::from(code);
            nbits += u32::from(l);
            while nbits >= 8 {
                nbits -= 8;
                bytes.push((acc >> nbits) as u8);
            }
            acc &= (1u64 << nbits) - 1;
        }
        if nbits > 0 {
            bytes.push((acc << (8 - nbits)) as u8);
        }
    }
    bytes.extend_from_slice(&[0; PAD]);
    Encoded {
        bytes,
        raw_len: data.len(),
        stream_at,
        symbols: len.iter().filter(|&&l| l > 0).count(),
        max_len: u32::from(len.iter().copied().max().unwrap_or(0)),
    }
}

/// The code of a coded blob (`bytes` from its start), in format 0's form: the count of
/// symbols of each length 1..=MAX_LEN and the symbols in canonical order.
pub fn code_of(bytes: &[u8]) -> (Vec<u16>, Vec<u8>) {
    if bytes[0] == 0 {
        let counts: Vec<u16> = bytes[1..1 + 2 * MAX_LEN as usize]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        let n: usize = counts.iter().map(|&c| usize::from(c)).sum();
        let at = 1 + 2 * MAX_LEN as usize;
        return (counts, bytes[at..at + n].to_vec());
    }
    let len = |s: usize| bytes[1 + s / 2] >> (4 * (s % 2)) & 15;
    let mut order: Vec<usize> = (0..256).filter(|&s| len(s) > 0).collect();
    order.sort_by_key(|&s| (len(s), s));
    let counts = (1..=MAX_LEN as u8)
        .map(|l| order.iter().filter(|&&s| len(s) == l).count() as u16)
        .collect();
    (counts, order.iter().map(|&s| s as u8).collect())
}

/// The decoder's lookup table for a code (counts per length, symbols in canonical
/// order): entry `i` (the next [`MAX_LEN`] bits of the stream) is `symbol | length <<
/// 8`; entries that no code reaches are 0. What the emitted decoder builds in the
/// scratch arena.
pub fn lookup_table(counts: &[u16], symbols: &[u8]) -> Vec<u16> {
    let mut t = vec![0u16; 1 << MAX_LEN];
    let mut e = 0usize;
    let mut k = 0usize;
    for (l, &c) in (1..=MAX_LEN).zip(counts) {
        let span = 1usize << (MAX_LEN - l);
        for _ in 0..c {
            t[e..e + span].fill(u16::from(symbols[k]) | (l as u16) << 8);
            e += span;
            k += 1;
        }
    }
    t
}

/// The parts of a blob of `n` bytes that the streams code: `n / 4` bytes each, the
/// last stream the rest.
pub fn segments(n: usize) -> [std::ops::Range<usize>; STREAMS] {
    let q = n / STREAMS;
    std::array::from_fn(|k| k * q..if k + 1 == STREAMS { n } else { (k + 1) * q })
}

/// Decodes an [`Encoded`] blob the way the emitted decoder does (the tests' reference).
pub fn decode(e: &Encoded) -> Vec<u8> {
    let starts_at = e.stream_at - 4 * (STREAMS - 1);
    let (counts, symbols) = code_of(&e.bytes);
    let table = lookup_table(&counts, &symbols);
    let stream = &e.bytes[e.stream_at..];
    let mut out = Vec::with_capacity(e.raw_len);
    for (k, seg) in segments(e.raw_len).into_iter().enumerate() {
        let start = match k {
            0 => 0,
            _ => {
                let at = starts_at + 4 * (k - 1);
                u32::from_le_bytes(e.bytes[at..at + 4].try_into().expect("4 bytes")) as usize
            }
        };
        let mut pos = 8 * start;
        for _ in seg {
            let at = pos / 8;
            let w = u64::from_be_bytes(stream[at..at + 8].try_into().expect("8 bytes"));
            let ent = table[((w << (pos % 8)) >> (64 - MAX_LEN)) as usize];
            out.push(ent as u8);
            pos += usize::from(ent >> 8);
        }
    }
    out
}

/// Whether `data` is worth compressing: at least [`MIN_BLOB`] bytes, and its encoding
/// smaller. Returns the encoding if so.
pub fn compress_blob(data: &[u8]) -> Option<Encoded> {
    if data.len() < MIN_BLOB {
        return None;
    }
    let e = encode(data);
    (e.bytes.len() < data.len()).then_some(e)
}

// ---------------------------------------------------------------------------------
// The decoder, in Cranelift IR.

use cranelift_codegen::Context;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::I64;
use cranelift_codegen::ir::{BlockArg, InstBuilder, UserFuncName};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{DataId, FuncId, Linkage, Module as ClModule};

use super::BackendError;
use super::kb::MF;

/// One compressed blob of the object: its data object, the offsets of its parts, and
/// where it is decoded to (from the start of the decoded weights' region).
#[derive(Clone, Debug)]
pub(crate) struct Blob {
    pub data: DataId,
    pub stream_at: usize,
    pub raw_len: usize,
    /// Bytes of the data object (the code, the streams and their padding).
    pub stored: usize,
    pub offset: u64,
}

fn internal(what: &str, e: impl std::fmt::Debug) -> BackendError {
    BackendError::Internal(format!("{what}: {e:?}"))
}

/// Defines `NAME__huff_decode(lengths, stream, dst, n, table)`: builds the lookup
/// table at `table` (with its work area, [`DECODER_SCRATCH`] bytes) from the blob's
/// code lengths, then decodes `n` bytes of the streams into `dst`. Returns it and its
/// bytes of machine code.
pub(crate) fn define_decoder<M: ClModule>(
    module: &mut M,
    (ctx, fctx): (&mut Context, &mut FunctionBuilderContext),
    name: &str,
    text: Option<Text<'_>>,
) -> Result<(FuncId, u64), BackendError> {
    let mut s = module.make_signature();
    for _ in 0..5 {
        s.params.push(cranelift_codegen::ir::AbiParam::new(I64));
    }
    let fid = module
        .declare_function(&format!("{name}__huff_decode"), Linkage::Local, &s)
        .map_err(|e| internal("declare the decoder", e))?;
    ctx.func.signature = s;
    ctx.func.name = UserFuncName::user(0, fid.as_u32());
    {
        let mut b = FunctionBuilder::new(&mut ctx.func, fctx);
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        b.seal_block(entry);
        let p = b.block_params(entry).to_vec();
        let (blob, stream, dst, n, table) = (p[0], p[1], p[2], p[3], p[4]);
        // The code: in the blob (format 0: counts and symbols in canonical order), or
        // (format 1: 256 length nibbles) turned into that form in the work area after
        // the table by a counting sort (ties stay in byte order, as canonical codes
        // want). Both then fill the table.
        let fmt = b.ins().uload8(I64, MF, blob, 0);
        let from_nibbles = b.create_block();
        let build = b.create_block();
        b.append_block_param(build, I64); // counts (u16, lengths 1..=MAX_LEN)
        b.append_block_param(build, I64); // symbols
        let c0 = b.ins().iadd_imm_s(blob, 1);
        let s0 = b.ins().iadd_imm_s(blob, 1 + 2 * MAX_LEN as i64);
        b.ins().brif(
            fmt,
            from_nibbles,
            &[],
            build,
            &[BlockArg::Value(c0), BlockArg::Value(s0)],
        );
        b.switch_to_block(from_nibbles);
        let lengths = c0;
        let counts = b.ins().iadd_imm_s(table, TABLE_BYTES as i64);
        let places = b.ins().iadd_imm_s(counts, 32);
        let sorted = b.ins().iadd_imm_s(places, 32);
        let zero = b.ins().iconst(I64, 0);
        for i in 0..4 {
            b.ins().store(MF, zero, counts, 8 * i);
        }
        // Symbol `s`'s code length, as an offset into a u16 array.
        let nibble2 = |b: &mut FunctionBuilder<'_>, s: cranelift_codegen::ir::Value| {
            let half = b.ins().ushr_imm_u(s, 1);
            let at = b.ins().iadd(lengths, half);
            let byte = b.ins().uload8(I64, MF, at, 0);
            let odd = b.ins().band_imm_u(s, 1);
            let sh = b.ins().ishl_imm_u(odd, 2);
            let v = b.ins().ushr(byte, sh);
            let l = b.ins().band_imm_u(v, 15);
            b.ins().ishl_imm_u(l, 1)
        };
        // A pass over the 256 symbols.
        let over_symbols = |b: &mut FunctionBuilder<'_>,
                            body: &mut dyn FnMut(
            &mut FunctionBuilder<'_>,
            cranelift_codegen::ir::Value,
        )| {
            let blk = b.create_block();
            let done = b.create_block();
            b.append_block_param(blk, I64);
            let z = b.ins().iconst(I64, 0);
            b.ins().jump(blk, &[BlockArg::Value(z)]);
            b.switch_to_block(blk);
            let sv = b.block_params(blk)[0];
            body(b, sv);
            let s2 = b.ins().iadd_imm_s(sv, 1);
            let more = b.ins().icmp_imm_s(IntCC::UnsignedLessThan, s2, 256);
            b.ins().brif(more, blk, &[BlockArg::Value(s2)], done, &[]);
            b.switch_to_block(done);
        };
        over_symbols(&mut b, &mut |b, sv| {
            let l2 = nibble2(b, sv);
            let a = b.ins().iadd(counts, l2);
            let c = b.ins().uload16(I64, MF, a, 0);
            let c1 = b.ins().iadd_imm_s(c, 1);
            b.ins().istore16(MF, c1, a, 0);
        });
        // Each length's first place in the canonical order; the absent symbols last.
        let mut run = b.ins().iconst(I64, 0);
        for l in (1..=MAX_LEN as i32).chain([0]) {
            b.ins().istore16(MF, run, places, 2 * l);
            if l != 0 {
                let c = b.ins().uload16(I64, MF, counts, 2 * l);
                run = b.ins().iadd(run, c);
            }
        }
        over_symbols(&mut b, &mut |b, sv| {
            let l2 = nibble2(b, sv);
            let a = b.ins().iadd(places, l2);
            let at = b.ins().uload16(I64, MF, a, 0);
            let dp = b.ins().iadd(sorted, at);
            b.ins().istore8(MF, sv, dp, 0);
            let at1 = b.ins().iadd_imm_s(at, 1);
            b.ins().istore16(MF, at1, a, 0);
        });
        let c1 = b.ins().iadd_imm_s(counts, 2);
        b.ins()
            .jump(build, &[BlockArg::Value(c1), BlockArg::Value(sorted)]);
        b.switch_to_block(build);
        let counts = b.block_params(build)[0];
        let symbols = b.block_params(build)[1];
        // The table: for each length `l` (a loop, to keep the code small), its symbols
        // in order, each filling 2^(MAX_LEN - l) entries from `e` on; `k` walks the
        // symbols. 2^MAX_LEN two-byte stores in all.
        let (e_v, k_v, l_v, c_v, q_v) = (
            b.declare_var(I64),
            b.declare_var(I64),
            b.declare_var(I64),
            b.declare_var(I64),
            b.declare_var(I64),
        );
        b.def_var(e_v, table);
        b.def_var(k_v, symbols);
        let one = b.ins().iconst(I64, 1);
        b.def_var(l_v, one);
        let outer = b.create_block();
        let inner_test = b.create_block();
        let inner = b.create_block();
        let fill = b.create_block();
        let fill_done = b.create_block();
        let outer_next = b.create_block();
        let decode = b.create_block();
        b.ins().jump(outer, &[]);
        b.switch_to_block(outer);
        let l = b.use_var(l_v);
        let l2x = b.ins().ishl_imm_u(l, 1);
        let ca = b.ins().iadd(counts, l2x);
        let cnt = b.ins().uload16(I64, MF, ca, -2);
        b.def_var(c_v, cnt);
        let full = b.ins().iconst(I64, TABLE_BYTES as i64);
        let span_bytes = b.ins().ushr(full, l);
        let hi = b.ins().ishl_imm_u(l, 8);
        b.ins().jump(inner_test, &[]);
        b.switch_to_block(inner_test);
        let cnt = b.use_var(c_v);
        b.ins().brif(cnt, inner, &[], outer_next, &[]);
        b.switch_to_block(inner);
        let k = b.use_var(k_v);
        let e = b.use_var(e_v);
        let sym = b.ins().uload8(I64, MF, k, 0);
        let ent = b.ins().bor(sym, hi);
        let end = b.ins().iadd(e, span_bytes);
        b.def_var(q_v, e);
        b.ins().jump(fill, &[]);
        b.switch_to_block(fill);
        let q = b.use_var(q_v);
        b.ins().istore16(MF, ent, q, 0);
        let q2 = b.ins().iadd_imm_s(q, 2);
        b.def_var(q_v, q2);
        let more = b.ins().icmp(IntCC::UnsignedLessThan, q2, end);
        b.ins().brif(more, fill, &[], fill_done, &[]);
        b.switch_to_block(fill_done);
        b.def_var(e_v, end);
        let k2 = b.ins().iadd_imm_s(k, 1);
        b.def_var(k_v, k2);
        let cnt = b.use_var(c_v);
        let c2 = b.ins().iadd_imm_s(cnt, -1);
        b.def_var(c_v, c2);
        b.ins().jump(inner_test, &[]);
        b.switch_to_block(outer_next);
        let l2 = b.ins().iadd_imm_s(l, 1);
        b.def_var(l_v, l2);
        let again = b
            .ins()
            .icmp_imm_s(IntCC::UnsignedLessThanOrEqual, l2, i64::from(MAX_LEN));
        b.ins().brif(again, outer, &[], decode, &[]);
        b.switch_to_block(decode);
        // The streams: stream `k` decodes `q = n / 4` bytes to `dst + k q` (the last
        // also the `n - 4 q` left), one table lookup per byte, the four side by side.
        let streams: Vec<cranelift_codegen::ir::Value> = (0..STREAMS)
            .map(|k| {
                if k == 0 {
                    stream
                } else {
                    let off = -(4 * (STREAMS - k) as i32);
                    let start = b.ins().uload32(MF, stream, off);
                    b.ins().iadd(stream, start)
                }
            })
            .collect();
        let q = b.ins().ushr_imm_u(n, 2);
        let dsts: Vec<cranelift_codegen::ir::Value> = (0..STREAMS)
            .map(|k| {
                let o = b.ins().imul_imm_u(q, k as i64);
                b.ins().iadd(dst, o)
            })
            .collect();
        // One byte of stream `k` at bit position `pos` to `d`; the next position.
        let one = |b: &mut FunctionBuilder<'_>,
                   st: cranelift_codegen::ir::Value,
                   pos: cranelift_codegen::ir::Value,
                   d: cranelift_codegen::ir::Value| {
            let at = b.ins().ushr_imm_u(pos, 3);
            let src = b.ins().iadd(st, at);
            let w = b.ins().load(I64, MF, src, 0);
            let w = b.ins().bswap(w);
            let sh = b.ins().band_imm_u(pos, 7);
            let w = b.ins().ishl(w, sh);
            let idx = b.ins().ushr_imm_u(w, i64::from(64 - MAX_LEN));
            let idx2 = b.ins().ishl_imm_u(idx, 1);
            let tp = b.ins().iadd(table, idx2);
            let ent = b.ins().uload16(I64, MF, tp, 0);
            b.ins().istore8(MF, ent, d, 0);
            let l = b.ins().ushr_imm_u(ent, 8);
            b.ins().iadd(pos, l)
        };
        let body = b.create_block();
        let tail = b.create_block();
        let tail_body = b.create_block();
        let exit = b.create_block();
        b.append_block_param(body, I64); // j
        for _ in 0..STREAMS {
            b.append_block_param(body, I64); // the streams' bit positions
        }
        b.append_block_param(tail, I64); // j of the last stream
        b.append_block_param(tail, I64); // its bit position
        b.append_block_param(tail_body, I64);
        b.append_block_param(tail_body, I64);
        let zero = b.ins().iconst(I64, 0);
        let start: Vec<BlockArg> =
            std::iter::repeat_n(BlockArg::Value(zero), STREAMS + 1).collect();
        b.ins().brif(
            q,
            body,
            &start,
            tail,
            &[BlockArg::Value(zero), BlockArg::Value(zero)],
        );
        b.switch_to_block(body);
        let params = b.block_params(body).to_vec();
        let j = params[0];
        let mut next = vec![BlockArg::Value(zero)];
        for k in 0..STREAMS {
            let d = b.ins().iadd(dsts[k], j);
            let p2 = one(&mut b, streams[k], params[1 + k], d);
            next.push(BlockArg::Value(p2));
        }
        let j2 = b.ins().iadd_imm_s(j, 1);
        next[0] = BlockArg::Value(j2);
        let more = b.ins().icmp(IntCC::UnsignedLessThan, j2, q);
        let last_pos = next[STREAMS];
        b.ins()
            .brif(more, body, &next, tail, &[BlockArg::Value(j2), last_pos]);
        // The last stream's extra bytes: `n - 4 q` (0 to 3), from `j = q` on.
        b.switch_to_block(tail);
        let tp = b.block_params(tail).to_vec();
        let q4 = b.ins().ishl_imm_u(q, 2);
        let left = b.ins().icmp(IntCC::UnsignedLessThan, q4, n);
        b.ins().brif(
            left,
            tail_body,
            &[BlockArg::Value(tp[0]), BlockArg::Value(tp[1])],
            exit,
            &[],
        );
        b.switch_to_block(tail_body);
        let tb = b.block_params(tail_body).to_vec();
        let d = b.ins().iadd(dsts[STREAMS - 1], tb[0]);
        let p2 = one(&mut b, streams[STREAMS - 1], tb[1], d);
        let j2 = b.ins().iadd_imm_s(tb[0], 1);
        // Stream 3 ends at `n - 3 q` bytes.
        let q3 = b.ins().imul_imm_u(q, (STREAMS - 1) as i64);
        let end = b.ins().isub(n, q3);
        let more = b.ins().icmp(IntCC::UnsignedLessThan, j2, end);
        b.ins().brif(
            more,
            tail_body,
            &[BlockArg::Value(j2), BlockArg::Value(p2)],
            exit,
            &[],
        );
        b.switch_to_block(exit);
        b.ins().return_(&[]);
        b.seal_all_blocks();
        b.finalize(module.isa().frontend_config());
    }
    define(module, fid, ctx, text, "the Huffman decoder")?;
    let code = code_bytes(ctx);
    module.clear_context(ctx);
    Ok((fid, code))
}

/// The functions that decode the compressed weights of an object.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Unpack {
    /// `NAME__huff_unpack(wbase, table)`: the blobs `NAME_run` reads, one after the
    /// other, with one lookup table at `table`.
    pub serial: FuncId,
    /// `NAME__huff_task(arg, i)`: the `i`-th blob the threaded entry reads, with `arg`
    /// pointing at `wbase` and at the tables, task `i`'s at `tables + i *
    /// DECODER_SCRATCH`
    /// (its `parallel_for` runs one task per blob).
    pub task: FuncId,
    /// Bytes of machine code of the decoder and of these two.
    pub code: u64,
}

/// Defines the decoder, `NAME__huff_unpack` (the blobs of `serial`, indices into
/// `blobs`) and `NAME__huff_task` (task `i`: blob `tasks[i]`), each blob decoded to
/// `wbase + offset`.
pub(crate) fn define_unpack<M: ClModule>(
    module: &mut M,
    (ctx, fctx): (&mut Context, &mut FunctionBuilderContext),
    name: &str,
    blobs: &[Blob],
    (serial, tasks): (&[usize], &[usize]),
    mut text: Option<Text<'_>>,
) -> Result<Unpack, BackendError> {
    let (dec, mut code) = define_decoder(
        module,
        (&mut *ctx, &mut *fctx),
        name,
        text.as_mut().map(Text::reborrow),
    )?;
    let mut fids = Vec::new();
    for task in [false, true] {
        let mut s = module.make_signature();
        for _ in 0..2 {
            s.params.push(cranelift_codegen::ir::AbiParam::new(I64));
        }
        let fname = if task {
            format!("{name}__huff_task")
        } else {
            format!("{name}__huff_unpack")
        };
        let fid = module
            .declare_function(&fname, Linkage::Local, &s)
            .map_err(|e| internal("declare the unpacker", e))?;
        ctx.func.signature = s;
        ctx.func.name = UserFuncName::user(0, fid.as_u32());
        let dref = module.declare_func_in_func(dec, &mut ctx.func);
        let gvs: Vec<_> = blobs
            .iter()
            .map(|bl| module.declare_data_in_func(bl.data, &mut ctx.func))
            .collect();
        {
            let mut b = FunctionBuilder::new(&mut ctx.func, fctx);
            let entry = b.create_block();
            b.append_block_params_for_function_params(entry);
            b.switch_to_block(entry);
            let p = b.block_params(entry).to_vec();
            let decode = |b: &mut FunctionBuilder<'_>,
                          k: usize,
                          wbase: cranelift_codegen::ir::Value,
                          table: cranelift_codegen::ir::Value| {
                let bl = &blobs[k];
                let base = b.ins().symbol_value(I64, gvs[k]);
                let stream = b.ins().iadd_imm_s(base, bl.stream_at as i64);
                let dst = b.ins().iadd_imm_s(wbase, bl.offset as i64);
                let n = b.ins().iconst(I64, bl.raw_len as i64);
                b.ins().call(dref, &[base, stream, dst, n, table]);
            };
            if task {
                let (arg, i) = (p[0], p[1]);
                let wbase = b.ins().load(I64, MF, arg, 0);
                let tables = b.ins().load(I64, MF, arg, 8);
                let exit = b.create_block();
                let blocks: Vec<_> = tasks.iter().map(|_| b.create_block()).collect();
                let i32v = b.ins().ireduce(cranelift_codegen::ir::types::I32, i);
                let calls: Vec<_> = blocks
                    .iter()
                    .map(|&blk| b.func.dfg.block_call(blk, &[]))
                    .collect();
                let def = b.func.dfg.block_call(exit, &[]);
                let jt =
                    b.create_jump_table(cranelift_codegen::ir::JumpTableData::new(def, &calls));
                // `i` past the blobs (or past 2^32) does nothing.
                let dispatch = b.create_block();
                let ok = b
                    .ins()
                    .icmp_imm_s(IntCC::UnsignedLessThan, i, tasks.len() as i64);
                b.ins().brif(ok, dispatch, &[], exit, &[]);
                b.switch_to_block(dispatch);
                b.ins().br_table(i32v, jt);
                for (i, (&blk, &k)) in blocks.iter().zip(tasks).enumerate() {
                    b.switch_to_block(blk);
                    let t = b
                        .ins()
                        .iadd_imm_s(tables, (i as u64 * DECODER_SCRATCH) as i64);
                    decode(&mut b, k, wbase, t);
                    b.ins().return_(&[]);
                }
                b.switch_to_block(exit);
                b.ins().return_(&[]);
            } else {
                for &k in serial {
                    decode(&mut b, k, p[0], p[1]);
                }
                b.ins().return_(&[]);
            }
            b.seal_all_blocks();
            b.finalize(module.isa().frontend_config());
        }
        define(
            module,
            fid,
            ctx,
            text.as_mut().map(Text::reborrow),
            "the Huffman unpacker",
        )?;
        code += code_bytes(ctx);
        module.clear_context(ctx);
        fids.push(fid);
    }
    Ok(Unpack {
        serial: fids[0],
        task: fids[1],
        code,
    })
}

/// Where `--emit clif` and `--emit asm` collect the decoder's functions.
#[derive(Debug)]
pub(crate) enum Text<'a> {
    Clif(&'a mut String),
    Asm(&'a mut String),
}

impl Text<'_> {
    fn reborrow(&mut self) -> Text<'_> {
        match self {
            Text::Clif(s) => Text::Clif(s),
            Text::Asm(s) => Text::Asm(s),
        }
    }
}

/// Defines the function built in `ctx` as `fid`, appending its IR or machine code to
/// `text`.
fn define<M: ClModule>(
    module: &mut M,
    fid: FuncId,
    ctx: &mut Context,
    text: Option<Text<'_>>,
    what: &str,
) -> Result<(), BackendError> {
    let fname = module
        .declarations()
        .get_function_decl(fid)
        .linkage_name(fid)
        .into_owned();
    match text {
        Some(Text::Clif(t)) => {
            t.push_str(&format!("; {what}: {fname}\n{}\n", ctx.func.display()));
            module
                .define_function(fid, ctx)
                .map_err(|e| internal(what, e))?;
        }
        Some(Text::Asm(t)) => {
            ctx.set_disasm(true);
            module
                .define_function(fid, ctx)
                .map_err(|e| internal(what, e))?;
            let code = ctx
                .compiled_code()
                .and_then(|c| c.vcode.as_deref())
                .unwrap_or("; (no disassembly)\n");
            t.push_str(&format!("; {what}\n{fname}:\n{code}\n"));
        }
        None => {
            module
                .define_function(fid, ctx)
                .map_err(|e| internal(what, e))?;
        }
    }
    Ok(())
}

/// Bytes of machine code of the function just defined in `ctx`.
fn code_bytes(ctx: &Context) -> u64 {
    ctx.compiled_code()
        .map_or(0, |c| c.code_buffer().len() as u64)
}
