//! Software prefetch of the rows a task of the threaded entry is about to read or write
//! (`split.rs`): a band of a convolution reads rows that the other core wrote in the
//! job before (its halo) and writes rows whose lines the other core read, and on this
//! kind of machine each such line costs a transfer of about 140 ns between cores. A
//! kernel that meets them one at a time pays those latencies in series; `prefetcht0` /
//! `prefetchw` over the whole region first, with nothing waiting on them, starts all the
//! transfers at once (the lines the core has already cost a cache hit each).

use iced_x86::IcedError;
use iced_x86::code_asm::*;

/// `void touch(const u8 *p)`: prefetches `bytes` bytes from `p + k * stride` for each of
/// `planes` planes, for reading or (`write`) for writing.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Touch {
    pub planes: u32,
    pub stride: u32,
    pub bytes: u32,
    pub write: bool,
}

impl Touch {
    pub fn symbol(&self) -> String {
        format!(
            "touch_{}_p{}_s{}_b{}",
            if self.write { "w" } else { "r" },
            self.planes,
            self.stride,
            self.bytes
        )
    }

    pub fn assemble(&self) -> Result<Vec<u8>, IcedError> {
        let mut a = super::assembler(false)?;
        if self.planes > 0 && self.bytes > 0 {
            // One prefetch per 64 bytes and one at the last byte (the region need not
            // start on a line).
            let mut offs: Vec<i32> = (0..self.bytes).step_by(64).map(|o| o as i32).collect();
            offs.push(self.bytes as i32 - 1);
            let mut top = a.create_label();
            a.mov(ecx, self.planes)?;
            a.set_label(&mut top)?;
            for o in offs {
                let m = byte_ptr(rdi + o);
                if self.write {
                    a.prefetchw(m)?;
                } else {
                    a.prefetcht0(m)?;
                }
            }
            a.add(rdi, self.stride as i32)?;
            a.sub(ecx, 1)?;
            a.jnz(top)?;
        }
        a.ret()?;
        a.assemble(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn touch_prefetches_every_line_of_each_plane_and_its_last_byte() {
        for write in [false, true] {
            let t = Touch {
                planes: 3,
                stride: 256,
                bytes: 130,
                write,
            };
            let text = crate::backend::asm::disassemble(&t.assemble().unwrap());
            let op = if write { "prefetchw" } else { "prefetcht0" };
            // Offsets 0, 64, 128 and 129 (the last byte) per plane, in a loop of 3.
            assert_eq!(text.matches(op).count(), 4, "{text}");
            assert!(text.contains("81h]"), "{text}");
            assert!(text.contains("mov ecx,3"), "{text}");
            assert!(text.trim_end().ends_with("ret"), "{text}");
        }
        let empty = Touch {
            planes: 0,
            stride: 0,
            bytes: 0,
            write: false,
        };
        let text = crate::backend::asm::disassemble(&empty.assemble().unwrap());
        assert!(!text.contains("prefetch"), "{text}");
    }
}
