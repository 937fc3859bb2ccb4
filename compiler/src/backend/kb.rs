//! The kernel builder: small helpers over Cranelift's `FunctionBuilder` that every
//! kernel uses (constants, addressing, loads and stores, counted loops).
//!
//! Loops follow docs/kernels.md: trip counts are constants, a loop with no trip emits
//! nothing and one trip emits the body once; otherwise the loop is rotated (the body,
//! then the latch test), with the induction variable as a block parameter. Values that
//! change across iterations are `Variable`s, so the frontend builds the phis.

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::types::{F32, F32X4, I32, I32X4, I64};
use cranelift_codegen::ir::{BlockArg, InstBuilder, MemFlagsData, Type, Value};
use cranelift_frontend::{FunctionBuilder, Variable};

use super::storage::Store;
use super::target::Features;

/// Flags of every load and store: the memory plan guarantees the accesses are in
/// bounds, so none traps; alignment is not assumed.
pub(crate) const MF: MemFlagsData = MemFlagsData::new().with_notrap();

/// Flags of loads from constant tables in `.rodata` (always in bounds, never written):
/// such loads are pure for Cranelift's e-graph, so they are shared and hoisted out of
/// loops like arithmetic (a channel's requantize parameters out of the pixel loop).
pub(crate) const RO: MemFlagsData = MF.with_readonly().with_can_move();

/// K words whose byte popcounts (at most 8 each) one i8x16 lane sums without wrapping
/// (31 * 8 < 256): the vector popcount kernels widen their byte sums this often.
pub(crate) const BYTE_SUMS: usize = 31;

pub(crate) struct Kb<'a, 'f> {
    pub b: &'a mut FunctionBuilder<'f>,
    pub feat: Features,
}

impl<'a, 'f> Kb<'a, 'f> {
    pub fn new(b: &'a mut FunctionBuilder<'f>, feat: Features) -> Self {
        Kb { b, feat }
    }

    /// Adds each i8x16 byte-sum variable of `bytes` into the i32x4 variable of `totals`
    /// beside it, by pairwise widening sums (aarch64 `uaddlp` twice): u32 lane `i` gets
    /// bytes `4i..4i+4`.
    pub fn fold_byte_sums(&mut self, bytes: &[Variable], totals: &[Variable]) {
        for (acc, total) in bytes.iter().zip(totals) {
            let mut v = self.b.use_var(*acc);
            for _ in 0..2 {
                let lo = self.b.ins().uwiden_low(v);
                let hi = self.b.ins().uwiden_high(v);
                v = self.b.ins().iadd_pairwise(lo, hi);
            }
            let t = self.b.use_var(*total);
            let t = self.b.ins().iadd(t, v);
            self.b.def_var(*total, t);
        }
    }

    /// An i64 constant (addresses and indices are i64).
    pub fn c(&mut self, v: i64) -> Value {
        self.b.ins().iconst(I64, v)
    }

    /// `p + off` (no instruction for 0).
    pub fn off(&mut self, p: Value, off: i64) -> Value {
        if off == 0 {
            p
        } else {
            self.b.ins().iadd_imm_s(p, off)
        }
    }

    /// `p + idx * scale`.
    pub fn idx(&mut self, p: Value, idx: Value, scale: i64) -> Value {
        let s = if scale == 1 {
            idx
        } else {
            self.b.ins().imul_imm_s(idx, scale)
        };
        self.b.ins().iadd(p, s)
    }

    pub fn load(&mut self, ty: Type, p: Value, off: i64) -> Value {
        self.b.ins().load(ty, MF, p, off as i32)
    }

    pub fn store(&mut self, v: Value, p: Value, off: i64) {
        self.b.ins().store(MF, v, p, off as i32);
    }

    /// A float constant of type `ty` (F32, or F32X4 splatted).
    pub fn fconst(&mut self, ty: Type, x: f32) -> Value {
        let s = self.b.ins().f32const(x);
        if ty == F32 {
            s
        } else {
            self.b.ins().splat(ty, s)
        }
    }

    /// An i32 constant of type `ty` (I32, or I32X4 splatted).
    pub fn iconst_t(&mut self, ty: Type, x: i64) -> Value {
        if ty == I32X4 {
            let s = self.b.ins().iconst(I32, x);
            self.b.ins().splat(ty, s)
        } else {
            self.b.ins().iconst(ty, x)
        }
    }

    /// `a * b + c`, fused where the target has FMA (never a libcall).
    pub fn madd(&mut self, a: Value, b: Value, c: Value) -> Value {
        if self.feat.fma {
            self.b.ins().fma(a, b, c)
        } else {
            let p = self.b.ins().fmul(a, b);
            self.b.ins().fadd(p, c)
        }
    }

    /// `cond ? x : y` for floats of type `ty` with a float comparison mask.
    pub fn fselect(
        &mut self,
        ty: Type,
        cc: FloatCC,
        a: Value,
        b: Value,
        x: Value,
        y: Value,
    ) -> Value {
        let m = self.b.ins().fcmp(cc, a, b);
        if ty == F32 {
            self.b.ins().select(m, x, y)
        } else {
            let m = self.b.ins().bitcast(F32X4, MemFlagsData::new(), m);
            self.b.ins().bitselect(m, x, y)
        }
    }

    /// A variable of type `ty` initialised to `v`.
    pub fn var(&mut self, ty: Type, v: Value) -> Variable {
        let var = self.b.declare_var(ty);
        self.b.def_var(var, v);
        var
    }

    /// `for iv in (start..end).step_by(step) { f(iv) }` with constant bounds.
    pub fn for_range(
        &mut self,
        start: i64,
        end: i64,
        step: i64,
        mut f: impl FnMut(&mut Self, Value),
    ) {
        debug_assert!(step > 0);
        if start >= end {
            return;
        }
        let trips = (end - start + step - 1) / step;
        if trips == 1 {
            let iv = self.c(start);
            f(self, iv);
            return;
        }
        let body = self.b.create_block();
        let exit = self.b.create_block();
        self.b.append_block_param(body, I64);
        let iv0 = self.c(start);
        self.b.ins().jump(body, &[BlockArg::Value(iv0)]);
        self.b.switch_to_block(body);
        let iv = self.b.block_params(body)[0];
        f(self, iv);
        let next = self.b.ins().iadd_imm_s(iv, step);
        let cond = self
            .b
            .ins()
            .icmp_imm_s(IntCC::SignedLessThan, next, start + trips * step);
        self.b
            .ins()
            .brif(cond, body, &[BlockArg::Value(next)], exit, &[]);
        self.b.seal_block(body);
        self.b.switch_to_block(exit);
        self.b.seal_block(exit);
    }

    /// Loads one element of storage `st` at `p + off` as an i32 (sign- or zero-extended;
    /// u32 codes keep their bits).
    pub fn load_i32(&mut self, st: Store, p: Value, off: i64) -> Value {
        let o = off as i32;
        match st {
            Store::I8 => self.b.ins().sload8(I32, MF, p, o),
            Store::U8 => self.b.ins().uload8(I32, MF, p, o),
            Store::I16 => self.b.ins().sload16(I32, MF, p, o),
            Store::U16 => self.b.ins().uload16(I32, MF, p, o),
            Store::I32 | Store::U32 => self.b.ins().load(I32, MF, p, o),
            Store::F32 => {
                let f = self.b.ins().load(F32, MF, p, o);
                self.b.ins().bitcast(I32, MemFlagsData::new(), f)
            }
        }
    }

    /// Loads one element of integer storage `st` as an exact i64 code.
    pub fn load_i64(&mut self, st: Store, p: Value, off: i64) -> Value {
        let o = off as i32;
        match st {
            Store::I8 => self.b.ins().sload8(I64, MF, p, o),
            Store::U8 => self.b.ins().uload8(I64, MF, p, o),
            Store::I16 => self.b.ins().sload16(I64, MF, p, o),
            Store::U16 => self.b.ins().uload16(I64, MF, p, o),
            Store::I32 => self.b.ins().sload32(MF, p, o),
            Store::U32 => self.b.ins().uload32(MF, p, o),
            Store::F32 => {
                let v = self.b.ins().sload32(MF, p, o);
                debug_assert!(false, "load_i64 of f32 storage");
                v
            }
        }
    }

    /// Stores the low bits of an i64 or i32 code into storage `st`.
    pub fn store_int(&mut self, st: Store, v: Value, p: Value, off: i64) {
        let o = off as i32;
        match st.bytes() {
            1 => self.b.ins().istore8(MF, v, p, o),
            2 => self.b.ins().istore16(MF, v, p, o),
            _ => {
                if self.b.func.dfg.value_type(v) == I64 {
                    self.b.ins().istore32(MF, v, p, o)
                } else {
                    self.b.ins().store(MF, v, p, o)
                }
            }
        };
    }

    /// Copies `bytes` bytes from `src` to `dst` (both fixed), 16 bytes at a time.
    pub fn copy_bytes(&mut self, dst: Value, src: Value, bytes: i64) {
        let vec = bytes / 16 * 16;
        if vec >= 64 {
            let unrolled = vec / 64 * 64;
            self.for_range(0, unrolled, 64, |k, i| {
                let s = k.b.ins().iadd(src, i);
                let d = k.b.ins().iadd(dst, i);
                for u in 0..4 {
                    let v = k.load(I32X4, s, u * 16);
                    k.store(v, d, u * 16);
                }
            });
            for o in (unrolled..vec).step_by(16) {
                let v = self.load(I32X4, src, o);
                self.store(v, dst, o);
            }
        } else {
            for o in (0..vec).step_by(16) {
                let v = self.load(I32X4, src, o);
                self.store(v, dst, o);
            }
        }
        let mut o = vec;
        for (w, ty) in [(8, I64), (4, I32)] {
            if bytes - o >= w {
                let v = self.load(ty, src, o);
                self.store(v, dst, o);
                o += w;
            }
        }
        while o < bytes {
            let v = self.b.ins().uload8(I32, MF, src, o as i32);
            self.b.ins().istore8(MF, v, dst, o as i32);
            o += 1;
        }
    }

    /// `v + c` for an integer scalar or vector.
    pub fn iadd_k(&mut self, v: Value, c: i64) -> Value {
        let ty = self.b.func.dfg.value_type(v);
        if ty.is_vector() {
            let l = self.b.ins().iconst(ty.lane_type(), c);
            let s = self.b.ins().splat(ty, l);
            self.b.ins().iadd(v, s)
        } else {
            self.b.ins().iadd_imm_s(v, c)
        }
    }

    /// `v >> c` (arithmetic) for an integer scalar or vector.
    pub fn sshr_k(&mut self, v: Value, c: i64) -> Value {
        let a = self.b.ins().iconst(I32, c);
        self.b.ins().sshr(v, a)
    }

    /// `v << c` for an integer scalar or vector.
    pub fn ishl_k(&mut self, v: Value, c: i64) -> Value {
        let a = self.b.ins().iconst(I32, c);
        self.b.ins().ishl(v, a)
    }

    /// Horizontal sum of an f32x4.
    pub fn hsum(&mut self, v: Value) -> Value {
        let l: Vec<Value> = (0..4)
            .map(|i| self.b.ins().extractlane(v, i as u8))
            .collect();
        let a = self.b.ins().fadd(l[0], l[1]);
        let b = self.b.ins().fadd(l[2], l[3]);
        self.b.ins().fadd(a, b)
    }

    /// Horizontal max of an f32x4 (NaN-propagating like `fmax`).
    pub fn hmax(&mut self, v: Value) -> Value {
        let l: Vec<Value> = (0..4)
            .map(|i| self.b.ins().extractlane(v, i as u8))
            .collect();
        let a = self.b.ins().fmax(l[0], l[1]);
        let b = self.b.ins().fmax(l[2], l[3]);
        self.b.ins().fmax(a, b)
    }
}
