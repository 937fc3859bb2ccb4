//! f32 `add`, `sub`, `mul`, `div` on zmm with AVX-512, assembled with iced-x86: the
//! innermost run of a broadcast nest (`elementwise::emit_binary`), 16 elements per step,
//! either operand contiguous or one broadcast scalar; the run's tail stays on the
//! 128-bit loop. IEEE operations lane by lane, so the results are the 128-bit kernel's.

use iced_x86::IcedError;
use iced_x86::code_asm::*;

/// The operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
}

/// One assembled kernel: `void op(const f32 *a, const f32 *b, f32 *out)` over `steps` x
/// 16 elements; an operand that is not `*_vec` is the scalar at its pointer.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct BinZmm {
    pub op: BinOp,
    pub steps: u32,
    pub a_vec: bool,
    pub b_vec: bool,
}

impl BinZmm {
    pub fn symbol(&self) -> String {
        let v = |b: bool| if b { "v" } else { "s" };
        format!(
            "{:?}_zmm_n{}_{}{}",
            self.op,
            self.steps,
            v(self.a_vec),
            v(self.b_vec)
        )
        .to_lowercase()
    }

    pub fn assemble(&self) -> Result<Vec<u8>, IcedError> {
        let mut a = crate::backend::asm::assembler(true)?;
        if !self.a_vec {
            a.vbroadcastss(zmm1, dword_ptr(rdi))?;
        }
        if !self.b_vec {
            a.vbroadcastss(zmm2, dword_ptr(rsi))?;
        }
        let mut top = a.create_label();
        a.mov(ecx, self.steps)?;
        a.set_label(&mut top)?;
        if self.a_vec {
            a.vmovups(zmm1, zmmword_ptr(rdi))?;
            a.add(rdi, 64)?;
        }
        // The second operand from memory where it is a vector.
        match (self.op, self.b_vec) {
            (BinOp::Add, true) => a.vaddps(zmm0, zmm1, zmmword_ptr(rsi))?,
            (BinOp::Sub, true) => a.vsubps(zmm0, zmm1, zmmword_ptr(rsi))?,
            (BinOp::Mul, true) => a.vmulps(zmm0, zmm1, zmmword_ptr(rsi))?,
            (BinOp::Div, true) => a.vdivps(zmm0, zmm1, zmmword_ptr(rsi))?,
            (BinOp::Add, false) => a.vaddps(zmm0, zmm1, zmm2)?,
            (BinOp::Sub, false) => a.vsubps(zmm0, zmm1, zmm2)?,
            (BinOp::Mul, false) => a.vmulps(zmm0, zmm1, zmm2)?,
            (BinOp::Div, false) => a.vdivps(zmm0, zmm1, zmm2)?,
        }
        if self.b_vec {
            a.add(rsi, 64)?;
        }
        a.vmovups(zmmword_ptr(rdx), zmm0)?;
        a.add(rdx, 64)?;
        a.sub(ecx, 1)?;
        a.jnz(top)?;
        a.vzeroupper()?;
        a.ret()?;
        a.assemble(0)
    }
}
