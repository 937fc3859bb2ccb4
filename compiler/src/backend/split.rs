//! Splitting a layer into tasks for the threaded entry `NAME_run_ctx` (issue 15).
//!
//! A layer worth splitting (decided at compile time from its multiply-accumulates or
//! elements, so that small layers pay no synchronisation) becomes `n` chunks, each
//! computed by a task `task(arg, i)` that the caller's `parallel_for` may run on any
//! thread:
//!
//! - **Bands of output rows** (convolutions of every family: f32 im2col/Winograd, u8 x
//!   i8 `pmaddubsw`/VNNI/AVX2, `pmaddwd`, bit-serial, XNOR). Chunk `i` computes output
//!   rows `r0..r1` of every channel with the layer's own kernel generated for the
//!   band's geometry (same weights, tables and epilogue; the read-only data is shared):
//!   the input rows the band reads (`y0..y1`, its halo included) with the padding that
//!   falls inside the band. The u8 x i8 kernels take the image's channel planes as
//!   parameters and read and write the tensors in place; the other families get the
//!   band's input rows copied into the task's slot of scratch and their rows copied
//!   into the output. Bands have at least [`MIN_BAND_PIXELS`] pixels (the wide tiles
//!   take 16-32 pixels per column step). f32 bands keep the layer's exact algorithm
//!   (the same Winograd variant and tile grid, the same wide tile), so the threaded
//!   results equal `NAME_run`'s bit for bit; integer kernels are exact anyway.
//! - **Bit-packed weights** (u8 x i8 kernels) are unpacked by every band, or, when they
//!   are large, once per layer in a first phase of tasks (a second `parallel_for`) into
//!   scratch that every band reads. Deep layers (more output channels
//!   than pixels) with packed weights are split by **output channels** instead of rows:
//!   each task builds the whole im2col but unpacks and reads only its channels' weights.
//! - **Ranges of elements** (elementwise kernels with operands of the result's shape:
//!   the fused quantized add, lookups, f32 unary ops): the kernel over a sub-range,
//!   pointers offset. After a convolution split into bands, the same bands (a range of
//!   rows in every channel plane), so that a thread keeps the rows it wrote.
//!
//! Each task's scratch is its own slot: task `i` of every split layer uses the same
//! slot, at a fixed place after the threaded memory plan's arena (which holds the
//! shared regions of first phases). The pools of the runtime (`runtime/`) run index `i`
//! on thread `i mod T` first, so that a slot stays in one core's cache from layer to
//! layer and call to call.

use qcc_ir::Module;
use qcc_ir::shape::ConvGeom;

use super::kernels::intelem::IntLowering;
use super::kernels::maddubs::{MdKind, MdPhase};
use super::kernels::quant::QuantLowering;
use super::kernels::{self, Lowering};
use super::plan::{ALIGN, value_bytes};
use super::select::{Dest, Step};

/// The grain: below `min` work a layer runs inline; about `chunk` work per task.
#[derive(Clone, Copy, Debug)]
struct Grain {
    min_macs: u64,
    chunk_macs: u64,
    min_elems: usize,
    chunk_elems: usize,
}

/// Layers with fewer multiply-accumulates than `min_macs` run inline (one fork/join
/// costs about a microsecond, ~0.3 M MACs of the wide kernels); `chunk_macs` per task is
/// aimed at (more tasks balance better, each costs a copy of its halo and the kernel's
/// per-call setup). Elementwise kernels: the fewest elements worth a fork/join, and per
/// task.
const GRAIN: Grain = Grain {
    min_macs: 400_000,
    chunk_macs: 16_000_000,
    min_elems: 8 * 1024,
    chunk_elems: 16 * 1024,
};

/// The most chunks of one layer.
pub(crate) const MAX_CHUNKS: usize = 8;

/// The fewest output pixels of a band (per image): the wide tiles take 16 or 32 pixels
/// per column step, and narrower bands run them at a fraction of their rate.
const MIN_BAND_PIXELS: usize = 32;

thread_local! {
    static OVERRIDE: std::cell::Cell<Option<Grain>> = const { std::cell::Cell::new(None) };
}

fn grain() -> Grain {
    OVERRIDE.with(|o| o.get()).unwrap_or(GRAIN)
}

/// Runs `f` (a compilation on this thread) with the grain of the task split set to
/// `min` units of work to split a layer at all and `chunk` units per task (units:
/// multiply-accumulates for convolutions, elements for elementwise kernels), e.g.
/// `(1, 1)` to split every layer that can be into as many tasks as it allows (tests).
pub fn with_grain<R>(min: u64, chunk: u64, f: impl FnOnce() -> R) -> R {
    let g = Grain {
        min_macs: min,
        chunk_macs: chunk.max(1),
        min_elems: min as usize,
        chunk_elems: (chunk as usize).max(1),
    };
    let saved = OVERRIDE.with(|o| o.replace(Some(g)));
    let r = f();
    OVERRIDE.with(|o| o.set(saved));
    r
}

/// How a step runs as tasks.
#[derive(Clone, Debug)]
pub(crate) struct Split {
    pub chunks: Vec<Chunk>,
    /// Bytes of one task's slot (a multiple of [`ALIGN`]).
    pub slot: u64,
    /// A first phase, run as its own tasks before the chunks: kernels writing a region
    /// shared by every chunk, at the start of the step's workspace (the unpacked
    /// weights of a conv with bit-packed weights, which each band would otherwise
    /// unpack again). The chunks' kernels then take its address in the weights' place.
    pub pre: Option<Pre>,
}

#[derive(Clone, Debug)]
pub(crate) struct Pre {
    /// One kernel per task, each writing its part of the region (the kernel's result
    /// pointer is the region's start).
    pub chunks: Vec<Lowering>,
    /// Bytes of the region (a multiple of [`ALIGN`]).
    pub bytes: u64,
}

#[derive(Clone, Debug)]
pub(crate) enum Chunk {
    /// Output rows `r0..r1` of a convolution, from input rows `y0..y1`.
    Rows {
        sub: Lowering,
        full: ConvGeom,
        r0: usize,
        r1: usize,
        y0: usize,
        y1: usize,
        /// Bytes per element of the input and of the output.
        eb_in: usize,
        eb_out: usize,
        /// The band's kernel reads and writes the whole tensors in place (given its
        /// first rows' addresses), instead of copies in the task's slot.
        direct: bool,
    },
    /// Output channels of a convolution (the kernel writes them in place; its workspace
    /// is the task's slot).
    Chans { sub: Lowering },
    /// Elements `e0..e0 + len` of an elementwise kernel; bytes per element of each
    /// run-time operand (in read order) and of the result.
    Range {
        sub: Lowering,
        e0: usize,
        eb_reads: Vec<usize>,
        eb_out: usize,
        /// `(count, stride)`: the range is repeated in `count` planes `stride` elements
        /// apart (a band of rows of every channel, as the convolutions around it split
        /// the same tensors, so that each thread keeps touching the same rows).
        planes: Option<(usize, usize)>,
    },
}

impl Chunk {
    pub fn sub(&self) -> &Lowering {
        match self {
            Chunk::Rows { sub, .. } | Chunk::Chans { sub } | Chunk::Range { sub, .. } => sub,
        }
    }
}

fn align(x: u64) -> u64 {
    x.div_ceil(ALIGN) * ALIGN
}

impl Split {
    pub fn len(&self) -> usize {
        self.chunks.len()
    }

    /// Bytes of the shared region before the slots.
    pub fn shared(&self) -> u64 {
        self.pre.as_ref().map_or(0, |p| p.bytes)
    }
}

/// Offsets in a task's slot of a row chunk: input band, output band, kernel workspace
/// (all 0 for a direct band: the slot is the kernel's workspace).
pub(crate) fn row_slot(
    g: &ConvGeom,
    (y0, y1): (usize, usize),
    (r0, r1): (usize, usize),
    (eb_in, eb_out): (usize, usize),
    direct: bool,
) -> (u64, u64, u64) {
    if direct {
        return (0, 0, 0);
    }
    let xin = align((g.n * g.c * (y1 - y0) * g.w * eb_in) as u64);
    let xout = align((g.n * g.m * (r1 - r0) * g.ow * eb_out) as u64);
    (0, xin, xin + xout)
}

/// The chunks of `step` for the threaded entry, or None to run it inline.
pub(crate) fn split(m: &Module, step: &Step) -> Option<Split> {
    step.node?;
    if let Some(g) = step.lowering.conv_geom() {
        return split_rows(m, step, g);
    }
    split_range(m, step)
}

/// The splits of every step of `s`: as [`split`], except that an elementwise kernel on
/// `[N, C, H, W]` tensors whose operand was split into bands of rows (by a convolution,
/// or an elementwise kernel after one) is split into the same bands, so that the
/// thread that computed a band's rows also reads them next.
///
/// A step too small to be worth a fork/join of its own is still split when it can
/// join the job of the step before it (an elementwise kernel on that step's bands, a
/// convolution into bands of the same height); where it then does not join one, it
/// runs inline after all. Returns the splits and the jobs ([`jobs`]).
pub(crate) fn split_all(
    m: &Module,
    s: &super::select::Schedule,
) -> (Vec<Option<Split>>, Vec<std::ops::Range<usize>>) {
    let (mut splits, forced) = split_each(m, s);
    let mut runs = jobs(m, s, &splits);
    let alone: Vec<usize> = runs
        .iter()
        .filter(|r| r.len() == 1 && forced[r.start])
        .map(|r| r.start)
        .collect();
    if !alone.is_empty() {
        for si in alone {
            splits[si] = None;
        }
        runs = jobs(m, s, &splits);
    }
    (splits, runs)
}

/// Each step's split, and whether it was split only to join a job.
fn split_each(m: &Module, s: &super::select::Schedule) -> (Vec<Option<Split>>, Vec<bool>) {
    // Per value written by a split step: its shape and what each chunk wrote.
    type Bands = ([usize; 4], Written);
    let mut bands: std::collections::HashMap<u32, Bands> = std::collections::HashMap::new();
    let mut out: Vec<Option<Split>> = Vec::with_capacity(s.steps.len());
    let mut forced = Vec::with_capacity(s.steps.len());
    for (si, st) in s.steps.iter().enumerate() {
        let mut sp = None;
        let mut small = false;
        let prev_split = si > 0 && out[si - 1].is_some();
        if st.node.is_some() && st.lowering.splits_by_range() {
            let big = out_elem_bytes(m, st).is_some_and(|(_, n)| n >= grain().min_elems);
            let from = st
                .reads
                .iter()
                .find_map(|r| bands.get(&s.root[r.index()].0));
            if let (Some((shape, w)), true) = (from, big || prev_split) {
                sp = match w {
                    Written::Rows(rows) => split_planes(m, st, *shape, rows),
                    Written::Elems(el) => split_elems(m, st, el),
                };
                small = !big;
            }
        }
        if sp.is_none() {
            sp = split(m, st);
        }
        // A convolution too small to split, after a step split into bands of an image
        // of its height: the same band height.
        if sp.is_none()
            && prev_split
            && st.node.is_some()
            && let Some(g) = st.lowering.conv_geom()
            && let Some(Dest::Value(pv)) = s.steps.get(si - 1).map(|p| p.dest)
            && let Some((shape, Written::Rows(rows))) = bands.get(&pv.0)
            && shape[2] == g.oh
            && let Some(&(r0, r1)) = rows.first()
        {
            sp = split_rows_in(m, st, g, Some(r1 - r0));
            small = sp.is_some();
        }
        // ... after one split by output channels (whole planes): the same, by channels.
        if sp.is_none()
            && prev_split
            && st.node.is_some()
            && let Some(g) = st.lowering.conv_geom()
            && let Some(Dest::Value(pv)) = s.steps.get(si - 1).map(|p| p.dest)
            && let Some((_, Written::Elems(_))) = bands.get(&pv.0)
        {
            sp = split_chans_in(st, g, true);
            small = sp.is_some();
        }
        // Remember the bands of what this step writes.
        if let (Some(Split { chunks, .. }), Dest::Value(v)) = (&sp, st.dest) {
            let shape = &m.ty(v).shape;
            if let Some(w) = written(shape, chunks) {
                bands.insert(v.0, ([shape[0], shape[1], shape[2], shape[3]], w));
            }
        }
        out.push(sp);
        forced.push(small);
    }
    (out, forced)
}

/// What each chunk of a split writes of its `[N, C, H, W]` result.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Written {
    /// Rows `r0..r1` of every channel plane (a convolution's bands, or an elementwise
    /// kernel split into bands).
    Rows(Vec<(usize, usize)>),
    /// Elements `e0..e1` of the tensor (a convolution's output channels of one image,
    /// whole planes; an elementwise kernel's ranges).
    Elems(Vec<(usize, usize)>),
}

/// What each chunk writes (see [`Written`]); None for other splits.
fn written(shape: &[usize], chunks: &[Chunk]) -> Option<Written> {
    if shape.len() != 4 || shape[3] == 0 {
        return None;
    }
    let (w, plane) = (shape[3], shape[2] * shape[3]);
    let rows: Option<Vec<(usize, usize)>> = chunks
        .iter()
        .map(|c| match c {
            Chunk::Rows { r0, r1, .. } => Some((*r0, *r1)),
            Chunk::Range {
                e0,
                sub,
                planes: Some(_),
                ..
            } => {
                let len = sub.range_len()?;
                (e0 % w == 0 && len % w == 0).then(|| (e0 / w, (e0 + len) / w))
            }
            _ => None,
        })
        .collect();
    if let Some(rows) = rows {
        return Some(Written::Rows(rows));
    }
    chunks
        .iter()
        .map(|c| match c {
            Chunk::Chans {
                sub: Lowering::Maddubs(q),
            } if shape[0] == 1 => match q.phase {
                MdPhase::Chans(c0, c1) => Some((c0 * plane, c1 * plane)),
                _ => None,
            },
            Chunk::Range {
                e0,
                sub,
                planes: None,
                ..
            } => Some((*e0, e0 + sub.range_len()?)),
            _ => None,
        })
        .collect::<Option<Vec<_>>>()
        .map(Written::Elems)
}

/// Runs of consecutive split steps that the threaded entry runs as one job (one
/// `parallel_for`): task `i` of the job runs chunk `i` of every member in turn, so that
/// the members share one fork/join and a thread goes on with the rows it has just
/// written. Every split step is in exactly one run (most runs are one step).
///
/// A step joins the run before it when it has no first phase and every value it reads
/// from a member of the run is read only where that member's chunk `i` wrote it: an
/// elementwise kernel split into the same bands of rows, or a convolution band whose
/// input rows lie inside the producer's band (a 1x1 convolution of stride 1). Values
/// from before the run are complete when the job starts. The threaded memory plan
/// keeps everything live during a run apart (`plan::plan_with`'s spans), so that no
/// task overwrites what another task of the job still reads.
pub(crate) fn jobs(
    m: &Module,
    s: &super::select::Schedule,
    splits: &[Option<Split>],
) -> Vec<std::ops::Range<usize>> {
    let mut runs: Vec<std::ops::Range<usize>> = Vec::new();
    // Per value written by the current run: what each chunk wrote (None: not known).
    let mut wrote: std::collections::HashMap<u32, Option<Written>> =
        std::collections::HashMap::new();
    for (si, st) in s.steps.iter().enumerate() {
        let Some(sp) = &splits[si] else {
            continue;
        };
        let joins = runs.last().is_some_and(|r| r.end == si) && joins_run(m, s, si, sp, &wrote);
        if joins {
            if let Some(r) = runs.last_mut() {
                r.end = si + 1;
            }
        } else {
            wrote.clear();
            runs.push(si..si + 1);
        }
        let v = match st.dest {
            Dest::Value(v) => v,
            Dest::Output(j) => m.outputs[j],
        };
        wrote.insert(s.root[v.index()].0, written(&m.ty(v).shape, &sp.chunks));
    }
    runs
}

/// Whether split step `si` may run in the same job as the steps that wrote `wrote`
/// (see [`jobs`]).
fn joins_run(
    m: &Module,
    s: &super::select::Schedule,
    si: usize,
    sp: &Split,
    wrote: &std::collections::HashMap<u32, Option<Written>>,
) -> bool {
    if sp.pre.is_some() {
        return false;
    }
    let reads = &s.steps[si].reads;
    reads.iter().enumerate().all(|(k, &r)| {
        let root = s.root[r.index()];
        let Some(w) = wrote.get(&root.0) else {
            return true;
        };
        let Some(w) = w else {
            return false;
        };
        let n = match w {
            Written::Rows(v) | Written::Elems(v) => v.len(),
        };
        if r != root || n != sp.len() {
            return false;
        }
        let wd = m.ty(root).shape[3];
        sp.chunks.iter().enumerate().all(|(i, c)| match (c, w) {
            (
                Chunk::Range {
                    e0,
                    sub,
                    planes: Some(_),
                    ..
                },
                Written::Rows(rows),
            ) => sub.range_len().is_some_and(|len| {
                e0 % wd == 0 && len % wd == 0 && (e0 / wd, (e0 + len) / wd) == rows[i]
            }),
            (
                Chunk::Range {
                    e0,
                    sub,
                    planes: None,
                    ..
                },
                Written::Elems(el),
            ) => sub.range_len().is_some_and(|len| (*e0, e0 + len) == el[i]),
            (Chunk::Rows { y0, y1, .. }, Written::Rows(rows)) => {
                let (r0, r1) = rows[i];
                k == 0 && reads[1..].iter().all(|&o| o != r) && r0 <= *y0 && *y1 <= r1
            }
            _ => false,
        })
    })
}

/// `step` (elementwise, every operand of the result's shape `[n, c, h, w]`) split into
/// the bands of rows `rows`.
fn split_planes(
    m: &Module,
    step: &Step,
    shape: [usize; 4],
    rows: &[(usize, usize)],
) -> Option<Split> {
    let (eb_out, numel) = out_elem_bytes(m, step)?;
    let [n, c, h, w] = shape;
    if numel != n * c * h * w || rows.last().map(|r| r.1) != Some(h) {
        return None;
    }
    let out_shape = match step.dest {
        Dest::Value(v) => m.ty(v).shape.clone(),
        Dest::Output(j) => m.ty(m.outputs[j]).shape.clone(),
    };
    if out_shape != shape {
        return None;
    }
    let mut eb_reads = Vec::new();
    for &r in &step.reads {
        if m.ty(r).shape != shape {
            return None;
        }
        eb_reads.push(value_bytes(m, r) as usize / numel);
    }
    let chunks = rows
        .iter()
        .map(|&(r0, r1)| {
            Some(Chunk::Range {
                sub: step.lowering.with_len((r1 - r0) * w)?,
                e0: r0 * w,
                eb_reads: eb_reads.clone(),
                eb_out,
                planes: Some((n * c, h * w)),
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Split {
        chunks,
        slot: ALIGN,
        pre: None,
    })
}

/// `step` (elementwise, every operand of the result's element count) split into the
/// element ranges `ranges` (those an earlier split step's chunks wrote).
fn split_elems(m: &Module, step: &Step, ranges: &[(usize, usize)]) -> Option<Split> {
    let (eb_out, n) = out_elem_bytes(m, step)?;
    let contiguous = ranges.first().map(|r| r.0) == Some(0)
        && ranges
            .windows(2)
            .all(|w| w[0].1 == w[1].0 && w[0].0 < w[0].1);
    if !contiguous || ranges.last().map(|r| r.1) != Some(n) || ranges.len() < 2 {
        return None;
    }
    let mut eb_reads = Vec::new();
    for &r in &step.reads {
        if m.ty(r).numel() != n {
            return None;
        }
        eb_reads.push(value_bytes(m, r) as usize / n);
    }
    let chunks = ranges
        .iter()
        .map(|&(e0, e1)| {
            Some(Chunk::Range {
                sub: step.lowering.with_len(e1 - e0)?,
                e0,
                eb_reads: eb_reads.clone(),
                eb_out,
                planes: None,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Split {
        chunks,
        slot: ALIGN,
        pre: None,
    })
}

/// The result's bytes per element.
fn out_elem_bytes(m: &Module, step: &Step) -> Option<(usize, usize)> {
    let v = match step.dest {
        Dest::Value(v) => v,
        Dest::Output(j) => m.outputs[j],
    };
    let n = m.ty(v).numel();
    let b = value_bytes(m, v) as usize;
    (n > 0 && b.is_multiple_of(n)).then(|| (b / n, n))
}

/// The u8 x i8 kernels' convolutions with bit-packed weights that outweigh their
/// patches (deep layers with few pixels) are split by output channels: every task
/// builds the whole im2col but unpacks and reads only its channels' weights (bands of
/// rows would share the unpacked rows across cores, each band reading all of them).
/// The im2col is repeated by every task, so they are half as many as bands would be.
fn split_chans(step: &Step, g: &ConvGeom) -> Option<Split> {
    split_chans_in(step, g, false)
}

/// [`split_chans`], or with `any`, for every u8 x i8 conv of one group (bands of rows
/// would share cache lines, see [`split_rows`]).
fn split_chans_in(step: &Step, g: &ConvGeom, any: bool) -> Option<Split> {
    let Lowering::Maddubs(q) = &step.lowering else {
        return None;
    };
    if g.group != 1
        || q.phase != MdPhase::Full
        || (!any && (g.m <= g.npix() || q.pack.is_none()))
        || (any && g.n != 1)
    {
        return None;
    }
    let gr = grain();
    let macs = step.lowering.macs();
    let want = (macs / gr.chunk_macs / 2).clamp(2, MAX_CHUNKS as u64) as usize;
    // Channel ranges of whole 16s (the tiles' rows), at least 2 of them.
    let n = want
        .min(g.m / 16)
        .max(if gr.chunk_macs == GRAIN.chunk_macs {
            0
        } else {
            2
        });
    let n = n.min(g.m);
    if n < 2 {
        return None;
    }
    let per = g.m.div_ceil(n).div_ceil(16) * 16;
    let per = if per * (n - 1) >= g.m {
        g.m.div_ceil(n)
    } else {
        per
    };
    let mut chunks = Vec::new();
    let mut c0 = 0;
    while c0 < g.m {
        let c1 = (c0 + per).min(g.m);
        let mut sub = q.clone();
        sub.phase = MdPhase::Chans(c0, c1);
        chunks.push(Chunk::Chans {
            sub: Lowering::Maddubs(sub),
        });
        c0 = c1;
    }
    let slot = align(step.lowering.workspace() as u64).max(ALIGN);
    (chunks.len() >= 2).then_some(Split {
        chunks,
        slot,
        pre: None,
    })
}

fn split_rows(m: &Module, step: &Step, g: &ConvGeom) -> Option<Split> {
    let sp = split_rows_in(m, step, g, None)?;
    // Bands whose rows start inside a cache line of an output plane (u8 planes of 8x8:
    // a band of 4 rows is half a line) have both cores write every line: split such a
    // u8 x i8 conv by output channels instead (whole planes per task).
    let shares_lines = sp.chunks.iter().any(|c| match c {
        Chunk::Rows {
            r0, eb_out, full, ..
        } => (r0 * full.ow * eb_out) % 64 != 0,
        _ => false,
    });
    if shares_lines && let Some(ch) = split_chans_in(step, g, true) {
        return Some(ch);
    }
    Some(sp)
}

/// [`split_rows`], or with `forced`, bands of exactly that many rows whatever the
/// layer's size (to join the job of the step before it, see [`jobs`]).
fn split_rows_in(m: &Module, step: &Step, g: &ConvGeom, forced: Option<usize>) -> Option<Split> {
    let g = *g;
    let macs = step.lowering.macs();
    if forced.is_none() && macs < grain().min_macs {
        return None;
    }
    if forced.is_none()
        && let Some(sp) = split_chans(step, &g)
    {
        return Some(sp);
    }
    if g.oh < 2 {
        return None;
    }
    // Only the input is read at run time (weights and bias are constants).
    if step.reads.len() != 1 || !step.runtime_operand.first().copied().unwrap_or(false) {
        return None;
    }
    let x = step.reads[0];
    let xn = m.ty(x).numel();
    if xn != g.n * g.c * g.h * g.w || xn == 0 {
        return None;
    }
    let eb_in = value_bytes(m, x) as usize / xn;
    let (eb_out, on) = out_elem_bytes(m, step)?;
    if on != g.n * g.m * g.oh * g.ow {
        return None;
    }
    let gr = grain();
    let want = (macs / gr.chunk_macs).clamp(2, MAX_CHUNKS as u64) as usize;
    // Bands of at least MIN_BAND_PIXELS pixels (at the default grain).
    let min_rows = if gr.chunk_macs == GRAIN.chunk_macs {
        MIN_BAND_PIXELS.div_ceil(g.ow)
    } else {
        1
    };
    // Float kernels must keep their algorithm (bit-identical to `NAME_run`): try band
    // heights from the even split upwards until every band's kernel is the layer's.
    let float = matches!(step.lowering, Lowering::Conv { .. });
    let name = step.lowering.kernel_name();
    let mut rows = forced.unwrap_or(g.oh.div_ceil(want).max(min_rows));
    while rows < g.oh && forced.is_none_or(|f| f == rows) {
        let Some(chunks) = band_chunks(&g, rows, &step.lowering, eb_in, eb_out) else {
            rows += 1;
            continue;
        };
        if chunks.len() >= 2 && (!float || chunks.iter().all(|c| c.sub().kernel_name() == name)) {
            let slot = chunks
                .iter()
                .map(|c| match c {
                    Chunk::Rows {
                        sub,
                        full,
                        r0,
                        r1,
                        y0,
                        y1,
                        eb_in,
                        eb_out,
                        direct,
                    } => {
                        let (_, _, ws) =
                            row_slot(full, (*y0, *y1), (*r0, *r1), (*eb_in, *eb_out), *direct);
                        ws + align(sub.workspace() as u64)
                    }
                    Chunk::Range { .. } | Chunk::Chans { .. } => 0,
                })
                .max()
                .unwrap_or(0)
                .max(ALIGN);
            // A first phase unpacks the weights once, in the layer's K order: only
            // where every band reads them in that order (a band of a direct
            // convolution may not be one, or the reverse).
            let direct = |l: &Lowering| matches!(l, Lowering::Maddubs(q) if q.window().is_some());
            let pre = prepare(&step.lowering, chunks.len()).filter(|_| {
                chunks
                    .iter()
                    .all(|c| direct(c.sub()) == direct(&step.lowering))
            });
            let chunks = match &pre {
                Some(_) => chunks
                    .into_iter()
                    .map(|c| match c {
                        Chunk::Rows {
                            sub: Lowering::Maddubs(mut q),
                            full,
                            r0,
                            r1,
                            y0,
                            y1,
                            eb_in,
                            eb_out,
                            direct,
                        } => {
                            q.phase = MdPhase::Prepared;
                            Chunk::Rows {
                                sub: Lowering::Maddubs(q),
                                full,
                                r0,
                                r1,
                                y0,
                                y1,
                                eb_in,
                                eb_out,
                                direct,
                            }
                        }
                        c => c,
                    })
                    .collect(),
                None => chunks,
            };
            return Some(Split { chunks, slot, pre });
        }
        rows += 1;
    }
    None
}

/// Unpacked weights below this many bytes are unpacked by every band rather than once
/// in a first phase: one fork/join less, and each band reads rows its own core wrote
/// (measured faster on the 4x-wide ResNet's 147 KB layers).
const SHARED_UNPACK_BYTES: usize = 256 * 1024;

/// The first phase of a conv with bit-packed weights (u8 x i8 kernels): its rows
/// unpacked in `n` ranges (one, when concurrent ranges could touch each other's rows).
fn prepare(low: &Lowering, n: usize) -> Option<Pre> {
    let Lowering::Maddubs(q) = low else {
        return None;
    };
    let (bytes, concurrent) = q.unpacked_rows()?;
    // (A grain of 1 per task, the tests', shares the smallest weights too.)
    if bytes < SHARED_UNPACK_BYTES && grain().chunk_macs != 1 {
        return None;
    }
    let MdKind::Conv { g } = &q.kind else {
        return None;
    };
    let n = if concurrent { n.min(g.m).max(1) } else { 1 };
    let chunks = (0..n)
        .map(|i| {
            let (r0, r1) = (g.m * i / n, g.m * (i + 1) / n);
            let mut p = q.clone();
            p.phase = MdPhase::UnpackRows(r0, r1);
            Lowering::Maddubs(p)
        })
        .collect();
    Some(Pre {
        chunks,
        bytes: align(bytes as u64),
    })
}

fn band_chunks(
    g: &ConvGeom,
    rows: usize,
    low: &Lowering,
    eb_in: usize,
    eb_out: usize,
) -> Option<Vec<Chunk>> {
    let mut out = Vec::new();
    let mut r0 = 0;
    while r0 < g.oh {
        let r1 = (r0 + rows).min(g.oh);
        // Input rows the band reads (clamped to the image).
        let first = (r0 * g.sh).saturating_sub(g.top);
        let last = ((r1 - 1) * g.sh + (g.kh - 1) * g.dh + 1)
            .saturating_sub(g.top)
            .min(g.h);
        if first >= last {
            // Every tap of the band is padding (a sub-image would need a negative top).
            return None;
        }
        let (y0, y1) = (first, last);
        let sub = ConvGeom {
            h: y1 - y0,
            oh: r1 - r0,
            top: g.top + y0 - r0 * g.sh,
            ..*g
        };
        // The u8 x i8 kernels take the image's channel planes: their bands read and
        // write in place.
        let mut sub = low.with_conv_geom(sub);
        let direct = match &mut sub {
            Lowering::Maddubs(q) => {
                q.planes = Some((g.h * g.w, g.oh * g.ow));
                true
            }
            _ => false,
        };
        out.push(Chunk::Rows {
            sub,
            full: *g,
            r0,
            r1,
            y0,
            y1,
            eb_in,
            eb_out,
            direct,
        });
        r0 = r1;
    }
    Some(out)
}

fn split_range(m: &Module, step: &Step) -> Option<Split> {
    let (eb_out, n) = out_elem_bytes(m, step)?;
    if n < grain().min_elems {
        return None;
    }
    // Every run-time operand has the result's element count (no broadcasting).
    let mut eb_reads = Vec::new();
    for &r in &step.reads {
        let rn = m.ty(r).numel();
        if rn != n {
            return None;
        }
        eb_reads.push(value_bytes(m, r) as usize / rn);
    }
    if !step.lowering.splits_by_range() {
        return None;
    }
    let want = (n / grain().chunk_elems).clamp(2, MAX_CHUNKS);
    // Chunks of whole 64-element blocks (vector loops keep their shape).
    let len = n.div_ceil(want).div_ceil(64) * 64;
    let mut chunks = Vec::new();
    let mut e0 = 0;
    while e0 < n {
        let l = len.min(n - e0);
        chunks.push(Chunk::Range {
            sub: step.lowering.with_len(l)?,
            e0,
            eb_reads: eb_reads.clone(),
            eb_out,
            planes: None,
        });
        e0 += l;
    }
    (chunks.len() >= 2).then_some(Split {
        chunks,
        slot: ALIGN,
        pre: None,
    })
}

impl Lowering {
    /// The geometry of a convolution whose kernel can run on a band of output rows.
    pub(crate) fn conv_geom(&self) -> Option<&ConvGeom> {
        use kernels::binary::BinKind;
        use kernels::bitserial::BsKind;
        use kernels::maddubs::MdKind;
        match self {
            Lowering::Conv { g, .. } => Some(g),
            Lowering::Maddubs(q) => match &q.kind {
                MdKind::Conv { g } => Some(g),
                MdKind::MatMul { .. } => None,
            },
            Lowering::Quant(QuantLowering::ConvInt { g, .. }) => Some(g),
            Lowering::BitSerial(q) => match &q.kind {
                BsKind::Conv { g, .. } => Some(g),
                BsKind::MatMul { .. } => None,
            },
            Lowering::Xnor(q) => match &q.kind {
                BinKind::Conv { g, .. } => Some(g),
                BinKind::MatMul { .. } => None,
            },
            _ => None,
        }
    }

    /// The same kernel on the geometry `sub` (a band of [`Lowering::conv_geom`]'s rows).
    pub(crate) fn with_conv_geom(&self, sub: ConvGeom) -> Lowering {
        use kernels::binary::BinKind;
        use kernels::bitserial::BsKind;
        use kernels::maddubs::MdKind;
        let mut l = self.clone();
        match &mut l {
            Lowering::Conv { g, .. } => *g = sub,
            Lowering::Maddubs(q) => q.kind = MdKind::Conv { g: sub },
            Lowering::Quant(QuantLowering::ConvInt { g, .. }) => *g = sub,
            Lowering::BitSerial(q) => {
                if let BsKind::Conv { g, .. } = &mut q.kind {
                    *g = sub;
                    q.reshape_wide();
                }
            }
            Lowering::Xnor(q) => {
                if let BinKind::Conv { g, masked, .. } = &mut q.kind {
                    *g = sub;
                    *masked = kernels::binary::conv_masked(&sub);
                    let in_tile = q.epi.rq.is_some() || q.epi.thr.is_some();
                    if let Some(w) = &mut q.wide {
                        *w = kernels::xnor::XnorWide::new(
                            w.isa,
                            (sub.mg(), sub.npix(), sub.kdim()),
                            *masked,
                            in_tile,
                            None,
                        );
                    }
                }
            }
            _ => {}
        }
        l
    }

    /// Whether the kernel is elementwise over whole tensors of the result's shape, so
    /// that [`Lowering::with_len`] gives it for a sub-range.
    fn splits_by_range(&self) -> bool {
        match self {
            Lowering::Unary { .. } => true,
            // Per-tensor requantizes (the kernel has no channel index).
            Lowering::Int(IntLowering::FusedRequant { .. } | IntLowering::Lookup { .. }) => true,
            _ => false,
        }
    }

    /// The element count of an elementwise kernel.
    fn range_len(&self) -> Option<usize> {
        match self {
            Lowering::Unary { n, .. } => Some(*n),
            Lowering::Int(IntLowering::FusedRequant { n, .. } | IntLowering::Lookup { n, .. }) => {
                Some(*n)
            }
            _ => None,
        }
    }

    /// The same elementwise kernel over `len` elements.
    fn with_len(&self, len: usize) -> Option<Lowering> {
        let mut l = self.clone();
        match &mut l {
            Lowering::Unary { n, .. } => *n = len,
            Lowering::Int(IntLowering::FusedRequant { n, .. }) => *n = len,
            Lowering::Int(IntLowering::Lookup { n, .. }) => *n = len,
            _ => return None,
        }
        Some(l)
    }
}
