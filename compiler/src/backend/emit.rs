//! Building the Cranelift module: data objects, one function per kernel, the entry
//! function and the ABI v1 getters. Shared by the object writer and the JIT.
//!
//! Symbols: `NAME_run`, `NAME_input_size`, ... are exported; kernels
//! (`NAME__kI_OP`) and data objects (`NAME__dI`) are local, numbered in schedule
//! order, so the same module gives the same object bytes.

use std::collections::{BTreeMap, HashMap};

use cranelift_codegen::Context;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::{I32, I64};
use cranelift_codegen::ir::{
    AbiParam, Block, BlockArg, FuncRef, Function, GlobalValue, InstBuilder, JumpTableData,
    Signature, StackSlotData, StackSlotKind, UserFuncName, Value,
};
use cranelift_codegen::isa::OwnedTargetIsa;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{DataDescription, DataId, FuncId, Linkage, Module as ClModule};
use cranelift_object::{ObjectBuilder, ObjectModule};
use qcc_ir::{Module, ValueDef};

use super::BackendError;
use super::asm::{self, AsmFn};
use super::huffman::{self, Compress};
use super::kb::Kb;
use super::kernels::{self, DataSink, Ecx, Lowering, Placed};
use super::plan::{self, Loc, MemoryPlan};
use super::report::{BlobReport, Compression, LayerReport, Report};
use super::select::{self, Dest, Schedule};
use super::split::{self, Chunk, Split};
use super::target::{Features, Tier};

/// What [`build`] produced.
pub(crate) struct Built {
    pub run: FuncId,
    /// `NAME_run_ctx`, the threaded entry.
    pub run_ctx: FuncId,
    /// The threaded entry's memory plan (its arena is the scratch for 2+ threads).
    pub plan_ctx: MemoryPlan,
    pub report: Report,
    /// The Cranelift IR (with [`Text::Clif`]) or machine code (with [`Text::Asm`]).
    pub text: String,
    pub plan: MemoryPlan,
}

/// Which text [`build`] collects besides the code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Text {
    None,
    /// Every kernel's Cranelift IR, preceded by the qcc node it comes from.
    Clif,
    /// The machine code of the kernels and the entry function (Cranelift's disassembly).
    Asm,
}

pub(crate) struct ObjectOut {
    pub object: Vec<u8>,
    pub report: Report,
}

/// An internal error (a bug in a kernel generator): its Debug form, which for
/// Cranelift's verifier lists each error with the offending instruction.
fn internal(what: &str, e: impl std::fmt::Debug) -> BackendError {
    BackendError::Internal(format!("{what}: {e:?}"))
}

pub(crate) fn compile_object(
    m: &Module,
    name: &str,
    isa: OwnedTargetIsa,
    tier: Option<Tier>,
    opts: super::Options,
) -> Result<ObjectOut, BackendError> {
    let builder = ObjectBuilder::new(
        isa,
        name.to_string(),
        cranelift_module::default_libcall_names(),
    )
    .map_err(|e| internal("object builder", e))?;
    let mut module = ObjectModule::new(builder);
    let built = build(&mut module, m, name, Text::None, tier, opts)?;
    let object = module
        .finish()
        .emit()
        .map_err(|e| internal("object emission", e))?;
    Ok(ObjectOut {
        object,
        report: built.report,
    })
}

pub(crate) fn text(
    m: &Module,
    name: &str,
    isa: OwnedTargetIsa,
    tier: Option<Tier>,
    what: Text,
    opts: super::Options,
) -> Result<String, BackendError> {
    let builder = ObjectBuilder::new(
        isa,
        name.to_string(),
        cranelift_module::default_libcall_names(),
    )
    .map_err(|e| internal("object builder", e))?;
    let mut module = ObjectModule::new(builder);
    Ok(build(&mut module, m, name, what, tier, opts)?.text)
}

/// Where a blob of constant data lives at run time.
#[derive(Clone, Copy, Debug)]
enum DataRef {
    /// A read-only data object.
    Rodata(DataId),
    /// Huffman-coded in the object, decoded to this offset of the weights' region of
    /// the scratch arena (`--compress-weights huffman`).
    Scratch(u64),
}

/// The blobs coded so far (`--compress-weights huffman`).
#[derive(Default)]
struct HuffState {
    blobs: Vec<huffman::Blob>,
    /// What the report says of each.
    reports: Vec<BlobReport>,
    /// The step whose kernels are being generated, and whether they are the threaded
    /// entry's (band and first-phase kernels of a split step).
    step: Option<usize>,
    band: bool,
    /// Per blob, the (step, band) of every kernel that reads it: which entry decodes it.
    uses: Vec<Vec<(usize, bool)>>,
    /// Bytes of the decoded weights' region (each blob at a 64-byte aligned offset).
    region: u64,
}

impl HuffState {
    /// The kernel being generated reads the blob decoded at `offset`.
    fn note_use(&mut self, offset: u64) {
        if let (Some(k), Some(si)) = (
            self.blobs.iter().position(|b| b.offset == offset),
            self.step,
        ) && !self.uses[k].contains(&(si, self.band))
        {
            self.uses[k].push((si, self.band));
        }
    }

    /// The blobs `NAME_run` decodes (those its kernels read) and those `NAME_run_ctx`
    /// decodes (read by the kernels of its inline steps, or by its tasks' kernels).
    fn per_entry(&self, split: &[bool]) -> (Vec<usize>, Vec<usize>) {
        let run = (0..self.blobs.len())
            .filter(|&k| self.uses[k].iter().any(|&(_, band)| !band))
            .collect();
        let ctx = (0..self.blobs.len())
            .filter(|&k| self.uses[k].iter().any(|&(si, band)| band || !split[si]))
            .collect();
        (run, ctx)
    }
}

/// Data objects and assembled functions defined so far (kept across kernels).
#[derive(Default)]
struct DataState {
    count: usize,
    /// Bytes of the data objects, as stored in the object.
    bytes: u64,
    /// The same data before compression (equal to `bytes` without it).
    raw_bytes: u64,
    dedupe: HashMap<(Vec<u8>, u64), DataRef>,
    /// Some: code the blobs that Huffman coding makes smaller.
    huff: Option<HuffState>,
    /// Assembled functions, each defined once, named after its parameters.
    asm: BTreeMap<AsmFn, FuncId>,
    /// The same by symbol, with their code: two parameter sets that name one symbol
    /// must give one code (a field the code never reads), else it is our bug.
    asm_names: HashMap<String, (FuncId, Vec<u8>)>,
    /// Their disassembly, when [`Text::Asm`] is asked for.
    asm_text: Option<String>,
    /// The first failure to assemble or define one (a bug of ours).
    asm_err: Option<BackendError>,
    /// The target has AVX-512: assembled functions may hold EVEX instructions.
    evex_ok: bool,
}

/// The assembled function `f` in `module`: declared and defined on first use.
fn asm_func_id<M: ClModule>(module: &mut M, st: &mut DataState, prefix: &str, f: &AsmFn) -> FuncId {
    if let Some(&id) = st.asm.get(f) {
        return id;
    }
    let name = format!("{prefix}__a_{}", f.symbol());
    if let Some((id, code)) = st.asm_names.get(&name) {
        let id = *id;
        if f.assemble().ok().as_ref() != Some(code) {
            st.asm_err.get_or_insert(internal(
                &name,
                "two different assembled functions share this name",
            ));
        }
        st.asm.insert(f.clone(), id);
        return id;
    }
    let s = sig(module, f.params(), f.returns_i32().then_some(I32));
    let id = module
        .declare_function(&name, Linkage::Local, &s)
        .expect("assembled functions have fresh names");
    match f.assemble() {
        Ok(bytes) => {
            // An EVEX (AVX-512) encoding in code for a tier without AVX-512 would fault
            // there (the assembler prefers EVEX when asked to); this machine may run
            // it, so it is refused here.
            if !st.evex_ok && asm::has_evex(&bytes) {
                st.asm_err.get_or_insert(internal(
                    &name,
                    "an AVX-512 (EVEX) instruction in code for a tier without AVX-512",
                ));
            }
            if let Err(e) = module.define_function_bytes(id, 64, &bytes, &[]) {
                st.asm_err.get_or_insert(internal(&name, e));
            }
            if let Some(t) = &mut st.asm_text {
                t.push_str(&format!(
                    "; assembled with iced-x86\n{name}:\n{}\n",
                    asm::disassemble(&bytes)
                ));
            }
            st.asm_names.insert(name, (id, bytes));
        }
        Err(e) => {
            st.asm_err.get_or_insert(BackendError::Internal(e));
        }
    }
    st.asm.insert(f.clone(), id);
    id
}

struct Data<'a, M: ClModule> {
    module: &'a mut M,
    st: &'a mut DataState,
    prefix: &'a str,
}

impl<M: ClModule> Data<'_, M> {
    /// A data object holding `bytes` (a fresh name).
    fn new_object(&mut self, bytes: Vec<u8>, align: u64) -> DataId {
        let name = format!("{}__d{}", self.prefix, self.st.count);
        self.st.count += 1;
        // Names are fresh, so declaring and defining cannot collide.
        let id = self
            .module
            .declare_data(&name, Linkage::Local, false, false)
            .expect("fresh data names do not collide");
        let mut d = DataDescription::new();
        let mut b = bytes;
        if b.is_empty() {
            b.push(0);
        }
        self.st.bytes += b.len() as u64;
        d.define(b.into_boxed_slice());
        d.set_align(align);
        self.module
            .define_data(id, &d)
            .expect("a fresh data object is defined once");
        id
    }

    /// Where `bytes` live: a data object, or (`compress`, when Huffman coding is on and
    /// makes them smaller) coded in one and decoded into the scratch arena.
    fn data_ref(&mut self, bytes: Vec<u8>, align: u64, compress: bool) -> DataRef {
        let key = (bytes, align);
        if let Some(&r) = self.st.dedupe.get(&key) {
            if let (DataRef::Scratch(off), Some(h)) = (r, &mut self.st.huff) {
                h.note_use(off);
            }
            return r;
        }
        self.st.raw_bytes += key.0.len().max(1) as u64;
        let coded = match &self.st.huff {
            Some(_) if compress && align <= plan::ALIGN => huffman::compress_blob(&key.0),
            _ => None,
        };
        let r = match coded {
            Some(e) => {
                let stored = e.bytes.len();
                let id = self.new_object(e.bytes, 1);
                let h = self.st.huff.as_mut().expect("checked above");
                let offset = h.region;
                h.region += (e.raw_len as u64).div_ceil(plan::ALIGN) * plan::ALIGN;
                h.reports.push(BlobReport {
                    layer: h.step,
                    raw_bytes: e.raw_len as u64,
                    stored_bytes: stored as u64,
                    symbols: e.symbols,
                    max_code_bits: e.max_len,
                    offset,
                    run: false,
                    run_ctx: false,
                });
                h.blobs.push(huffman::Blob {
                    data: id,
                    stream_at: e.stream_at,
                    raw_len: e.raw_len,
                    stored,
                    offset,
                });
                h.uses.push(Vec::new());
                h.note_use(offset);
                DataRef::Scratch(offset)
            }
            None => DataRef::Rodata(self.new_object(key.0.clone(), align)),
        };
        self.st.dedupe.insert(key, r);
        r
    }

    /// A read-only data object holding `bytes` (never compressed: for code that has no
    /// scratch, such as the getters).
    fn rodata_gv(&mut self, func: &mut Function, bytes: Vec<u8>, align: u64) -> GlobalValue {
        let id = match self.st.dedupe.get(&(bytes.clone(), align)) {
            // The same bytes were coded for a kernel: these get their own object.
            Some(DataRef::Scratch(_)) => self.new_object(bytes, align),
            _ => match self.data_ref(bytes.clone(), align, false) {
                DataRef::Rodata(id) => id,
                DataRef::Scratch(_) => self.new_object(bytes, align),
            },
        };
        self.module.declare_data_in_func(id, func)
    }
}

impl<M: ClModule> DataSink for Data<'_, M> {
    fn define(&mut self, func: &mut Function, bytes: Vec<u8>, align: u64) -> Placed {
        match self.data_ref(bytes, align, true) {
            DataRef::Rodata(id) => Placed::Rodata(self.module.declare_data_in_func(id, func)),
            DataRef::Scratch(off) => Placed::Scratch(off),
        }
    }

    fn asm_func(&mut self, func: &mut Function, f: &AsmFn) -> FuncRef {
        let id = asm_func_id(self.module, self.st, self.prefix, f);
        self.module.declare_func_in_func(id, func)
    }
}

fn sig<M: ClModule>(
    module: &M,
    params: usize,
    ret: Option<cranelift_codegen::ir::Type>,
) -> Signature {
    let mut s = module.make_signature();
    for _ in 0..params {
        s.params.push(AbiParam::new(I64));
    }
    if let Some(r) = ret {
        s.returns.push(AbiParam::new(r));
    }
    s
}

/// Lowers `m` into `module`; returns the entry function and the report.
pub(crate) fn build<M: ClModule>(
    module: &mut M,
    m: &Module,
    name: &str,
    want: Text,
    tier: Option<Tier>,
    opts: super::Options,
) -> Result<Built, BackendError> {
    let compress = opts.compress;
    qcc_ir::verify::verify(m).map_err(|e| BackendError::Invalid(e.to_string()))?;
    let folded = super::fold::constants(m);
    let m: &Module = &folded;
    let isa = module.isa();
    if isa.pointer_type() != I64 {
        return Err(BackendError::Target(format!(
            "{} is not a 64-bit target; qcc generates code for 64-bit targets only",
            isa.triple()
        )));
    }
    // The assembled functions follow the System V convention only.
    let tier = tier.filter(|_| {
        isa.name() == "x64" && isa.default_call_conv() == cranelift_codegen::isa::CallConv::SystemV
    });
    let feat = Features {
        tier,
        fma: isa.has_native_fma(),
        vector_popcnt: matches!(
            isa.triple().architecture,
            target_lexicon::Architecture::Aarch64(_)
        ),
        shuffle: isa.name() != "x64"
            || isa
                .isa_flags()
                .iter()
                .any(|f| f.name == "has_ssse3" && f.as_bool() == Some(true)),
    };
    let target_name = format!("{} ({})", isa.triple(), isa.name());
    let sched = select::schedule(m, super::costs::CostTarget::of_isa(isa, tier))?;
    let plan = plan::plan(m, &sched);
    let mut ctx = module.make_context();
    let mut fctx = FunctionBuilderContext::new();
    let mut data = DataState {
        asm_text: (want == Text::Asm).then(String::new),
        evex_ok: tier.is_some_and(|t| t.level >= 4),
        huff: (compress == Compress::Huffman).then(HuffState::default),
        ..DataState::default()
    };
    let mut text = String::new();
    let mut kernels_ids = Vec::with_capacity(sched.steps.len());
    let mut step_bytes = Vec::with_capacity(sched.steps.len());
    let mut step_raw = Vec::with_capacity(sched.steps.len());
    for (si, step) in sched.steps.iter().enumerate() {
        let bytes_before = data.bytes;
        let raw_before = data.raw_bytes;
        let op = step_op(m, step);
        let fname = format!("{name}__k{si}_{op}");
        if let Some(h) = &mut data.huff {
            h.step = Some(si);
        }
        let line = (want != Text::None).then(|| {
            let line = match step.node {
                Some(n) => {
                    let mut l = m.node_line(&m.nodes[n]);
                    for &f in &step.fused {
                        l.push_str("\n;   fused: ");
                        l.push_str(&m.node_line(&m.nodes[f]));
                    }
                    l
                }
                None => format!("copy into output {}", dest_text(step.dest, &plan)),
            };
            format!(
                "; qcc node: {line}\n; kernel: {}\n",
                step.lowering.kernel_name()
            )
        });
        let fid = define_kernel(
            module,
            (&mut ctx, &mut fctx),
            feat,
            (m, &sched, step),
            &fname,
            (&mut data, name),
            (want, line.as_deref().unwrap_or(""), &mut text),
        )?;
        step_bytes.push(data.bytes - bytes_before);
        step_raw.push(data.raw_bytes - raw_before);
        kernels_ids.push(fid);
    }
    // The read-only data of the layers (what the report counts); the band kernels of
    // the threaded entry add only their own small tables.
    let layer_bytes = data.bytes;
    let layer_raw = data.raw_bytes;
    // The threaded entry: layers split into tasks, and its own memory plan (a split
    // layer's workspace holds one slot per task).
    // Runs of split steps that share one fork/join (`split::jobs`): the plan keeps what
    // is live during a run apart.
    let (splits, jobs) = split::split_all(m, &sched);
    let mut span: Vec<std::ops::Range<usize>> =
        (0..sched.steps.len()).map(|si| si..si + 1).collect();
    for j in &jobs {
        for si in j.clone() {
            span[si] = j.clone();
        }
    }
    // The arena holds a split layer's shared region (its first phase's); the tasks'
    // slots are at fixed places after it, slot `i` of every layer at the same address
    // (`slots_base + i * slot_stride`): a pool that runs index `i` on the same thread
    // every time keeps each slot in one core's cache, from layer to layer.
    let mut plan_ctx = plan::plan_with(
        m,
        &sched,
        &|si| match &splits[si] {
            Some(sp) => sp.shared(),
            None => sched.steps[si].lowering.workspace() as u64,
        },
        &|si| span[si].clone(),
    );
    let slot_stride = splits.iter().flatten().map(|sp| sp.slot).max().unwrap_or(0);
    let slot_count = splits.iter().flatten().map(Split::len).max().unwrap_or(0);
    let slots_base = plan_ctx.arena.div_ceil(plan::ALIGN) * plan::ALIGN;
    plan_ctx.arena = slots_base + slot_stride * slot_count as u64;
    let mut tasks = Vec::with_capacity(sched.steps.len());
    for (si, step) in sched.steps.iter().enumerate() {
        let Some(sp) = &splits[si] else {
            tasks.push(None);
            continue;
        };
        let op = step_op(m, step);
        if let Some(h) = &mut data.huff {
            h.step = Some(si);
            h.band = true;
        }
        // The bands' kernels take the shared region (unpacked weights) as the weights'
        // operand when there is a first phase.
        let band_step = |low: &Lowering| {
            let mut st = select::Step {
                lowering: low.clone(),
                ..step.clone()
            };
            if sp.pre.is_some() {
                st.runtime_operand[1] = true;
                st.reads.insert(1, st.reads[0]);
            }
            st
        };
        // One kernel per distinct band (most bands of a layer share one).
        let mut distinct: Vec<(String, FuncId)> = Vec::new();
        let mut per_chunk = Vec::with_capacity(sp.len());
        for (ci, chunk) in sp.chunks.iter().enumerate() {
            let key = format!("{:?}", chunk.sub());
            if let Some((_, id)) = distinct.iter().find(|(k, _)| *k == key) {
                per_chunk.push(*id);
                continue;
            }
            let sub_step = band_step(chunk.sub());
            let fname = format!("{name}__k{si}_{op}_b{}", distinct.len());
            let line = (want != Text::None).then(|| {
                format!(
                    "; band kernel of step {si} (first used by task {ci}): {}\n",
                    chunk.sub().kernel_name()
                )
            });
            let fid = define_kernel(
                module,
                (&mut ctx, &mut fctx),
                feat,
                (m, &sched, &sub_step),
                &fname,
                (&mut data, name),
                (want, line.as_deref().unwrap_or(""), &mut text),
            )?;
            distinct.push((key, fid));
            per_chunk.push(fid);
        }
        let tid = emit_task(
            module,
            (&mut ctx, &mut fctx),
            feat,
            &format!("{name}__t{si}_{op}"),
            (step, slot_stride, data.huff.is_some()),
            sp,
            &per_chunk,
        )?;
        // The first phase: one kernel per task, and its task function.
        let pre = match &sp.pre {
            None => None,
            Some(pre) => {
                let mut ids = Vec::with_capacity(pre.chunks.len());
                for (pi, low) in pre.chunks.iter().enumerate() {
                    let sub_step = select::Step {
                        lowering: low.clone(),
                        ..step.clone()
                    };
                    let fname = format!("{name}__k{si}_{op}_p{pi}");
                    let line = (want != Text::None)
                        .then(|| format!("; first-phase kernel {pi} of step {si}\n"));
                    ids.push(define_kernel(
                        module,
                        (&mut ctx, &mut fctx),
                        feat,
                        (m, &sched, &sub_step),
                        &fname,
                        (&mut data, name),
                        (want, line.as_deref().unwrap_or(""), &mut text),
                    )?);
                }
                let pid = emit_pre_task(
                    module,
                    (&mut ctx, &mut fctx),
                    &format!("{name}__t{si}_{op}_pre"),
                    (step, data.huff.is_some()),
                    &ids,
                )?;
                Some((pid, ids.len()))
            }
        };
        tasks.push(Some(StepTasks {
            task: tid,
            n: sp.len(),
            pre,
        }));
    }
    // The jobs of several steps: one task function running each member's task `i`.
    let wb_arg = data.huff.is_some();
    let mut job_tasks: Vec<Option<JobTasks>> = vec![None; sched.steps.len()];
    for j in jobs.iter().filter(|j| j.len() > 1) {
        let mut members = Vec::with_capacity(j.len());
        let mut off = 0;
        for si in j.clone() {
            let st = tasks[si].as_ref().expect("a job's members are split");
            members.push((st.task, off));
            off += task_arg_words(&sched.steps[si], wb_arg) * 8;
        }
        let n = j
            .clone()
            .filter_map(|si| tasks[si].as_ref().map(|t| t.n))
            .max()
            .unwrap_or(0);
        let task = emit_job_task(
            module,
            (&mut ctx, &mut fctx),
            &format!("{name}__j{}", j.start),
            &members,
        )?;
        job_tasks[j.start] = Some(JobTasks {
            task,
            n,
            steps: j.clone(),
        });
    }
    // `--compress-weights huffman`: the decoded weights' region follows each entry's
    // arena, and the decoder's lookup tables (one for `NAME_run`, one per blob for the
    // threaded entry, which decodes the blobs in parallel) sit at the start of the
    // arena while it runs (before the first layer nothing in the arena is live), or
    // after the region when the arena is smaller than the tables.
    let mut plan = plan;
    let split: Vec<bool> = splits.iter().map(Option::is_some).collect();
    let unpack = match &data.huff {
        Some(h) if !h.blobs.is_empty() => {
            let (run_blobs, ctx_blobs) = h.per_entry(&split);
            Some((
                huffman::define_unpack(
                    module,
                    (&mut ctx, &mut fctx),
                    name,
                    &h.blobs,
                    (&run_blobs, &ctx_blobs),
                    match want {
                        Text::Clif => Some(huffman::Text::Clif(&mut text)),
                        Text::Asm => Some(huffman::Text::Asm(&mut text)),
                        Text::None => None,
                    },
                )?,
                run_blobs.len(),
                ctx_blobs.len(),
            ))
        }
        _ => None,
    };
    let (weights, weights_ctx) = match (&data.huff, unpack) {
        (Some(h), Some((u, n_run, n_ctx))) => {
            let grow = |arena: &mut u64, tables: u64, w: WeightsAt| {
                let at = arena.div_ceil(plan::ALIGN) * plan::ALIGN;
                let need = tables * huffman::DECODER_SCRATCH;
                let table = if at >= need { 0 } else { at + h.region };
                *arena = (at + h.region).max(table + need);
                Some(WeightsAt { at, table, ..w })
            };
            let none = WeightsAt {
                unpack: None,
                task: None,
                at: 0,
                table: 0,
            };
            (
                grow(
                    &mut plan.arena,
                    1,
                    WeightsAt {
                        unpack: (n_run > 0).then_some(u.serial),
                        ..none
                    },
                ),
                grow(
                    &mut plan_ctx.arena,
                    n_ctx as u64,
                    WeightsAt {
                        task: (n_ctx > 0).then_some((u.task, n_ctx)),
                        ..none
                    },
                ),
            )
        }
        // Compression on but nothing worth it: the kernels' last parameter is unused.
        (Some(_), None) => {
            let none = WeightsAt {
                unpack: None,
                task: None,
                at: 0,
                table: 0,
            };
            (Some(none), Some(none))
        }
        (None, _) => (None, None),
    };
    // int64 inputs and outputs: their int32 copies follow each entry's arena.
    let io64 = Io64At::place(m, opts.int64, &mut plan.arena);
    let io64_ctx = Io64At::place(m, opts.int64, &mut plan_ctx.arena);
    let run = emit_entry(
        module,
        m,
        name,
        &sched,
        (&plan, weights, &io64),
        &kernels_ids,
        (tier, &mut data),
        &mut ctx,
        &mut fctx,
        (want == Text::Asm).then_some(&mut text),
        None,
    )?;
    let run_ctx = emit_entry(
        module,
        m,
        name,
        &sched,
        (&plan_ctx, weights_ctx, &io64_ctx),
        &kernels_ids,
        (tier, &mut data),
        &mut ctx,
        &mut fctx,
        (want == Text::Asm).then_some(&mut text),
        Some(Threaded {
            tasks: &tasks,
            jobs: &job_tasks,
            run,
            arena: plan.arena,
            slots_base,
        }),
    )?;
    if let Some(e) = data.asm_err.take() {
        return Err(e);
    }
    if let Some(t) = data.asm_text.take() {
        text.push_str(&t);
    }
    emit_getters(
        module,
        m,
        name,
        (plan.arena, plan_ctx.arena),
        &mut data,
        &mut ctx,
        &mut fctx,
    )?;
    let mut report = make_report(
        m,
        &sched,
        &plan,
        (layer_bytes, &step_bytes, layer_raw, &step_raw),
        target_name,
        tier,
    );
    report.tier = tier.map(|t| t.to_string());
    report.compression = data.huff.as_ref().map(|h| {
        let (run_blobs, ctx_blobs) = h.per_entry(&split);
        let mut blobs = h.reports.clone();
        for &k in &run_blobs {
            blobs[k].run = true;
        }
        for &k in &ctx_blobs {
            blobs[k].run_ctx = true;
        }
        let raw: u64 = h.blobs.iter().map(|b| b.raw_len as u64).sum();
        let stored: u64 = h.blobs.iter().map(|b| b.stored as u64).sum();
        Compression {
            method: Compress::Huffman.to_string(),
            blobs,
            raw_bytes: raw,
            stored_bytes: stored,
            decoded_bytes: h.region,
            decoder_code_bytes: unpack.map_or(0, |u| u.0.code),
            weights_offset: weights.and_then(|w| w.unpack.map(|_| w.at)),
        }
    });
    report.arena_ctx_bytes = plan_ctx.arena;
    for ((l, t), sp) in report.layers.iter_mut().zip(&tasks).zip(&splits) {
        l.tasks = t.as_ref().map_or(1, |t| t.n);
        l.split_by = sp
            .as_ref()
            .and_then(|sp| sp.chunks.first())
            .map(|c| match c {
                Chunk::Rows { .. }
                | Chunk::Range {
                    planes: Some(_), ..
                } => "rows",
                Chunk::Chans { .. } => "channels",
                Chunk::Range { planes: None, .. } => "elements",
            });
    }
    for j in jobs.iter().filter(|j| j.len() > 1) {
        for si in j.clone() {
            report.layers[si].job = Some(j.start);
        }
    }
    Ok(Built {
        run,
        run_ctx,
        plan_ctx,
        report,
        text,
        plan,
    })
}

/// The op's name in kernel symbols.
fn step_op(m: &Module, step: &select::Step) -> &'static str {
    match step.node {
        Some(n) => m.nodes[n].op.name(),
        None => "output_copy",
    }
}

/// Declares and defines the kernel function `fname` of `step`: `(reads..., out, ws)`,
/// and `wbase` (the decoded weights' region) last with `--compress-weights huffman`.
/// With [`Text::Clif`] or [`Text::Asm`], appends its text after `comment`.
fn define_kernel<M: ClModule>(
    module: &mut M,
    (ctx, fctx): (&mut Context, &mut FunctionBuilderContext),
    feat: Features,
    (m, sched, step): (&Module, &Schedule, &select::Step),
    fname: &str,
    (data, prefix): (&mut DataState, &str),
    (want, comment, text): (Text, &str, &mut String),
) -> Result<FuncId, BackendError> {
    let frontend = module.isa().frontend_config();
    let extra = usize::from(data.huff.is_some());
    let s = sig(module, step.reads.len() + 2 + extra, None);
    let fid = module
        .declare_function(fname, Linkage::Local, &s)
        .map_err(|e| internal("declare kernel", e))?;
    ctx.func.signature = s;
    ctx.func.name = UserFuncName::user(0, fid.as_u32());
    {
        let mut b = FunctionBuilder::new(&mut ctx.func, fctx);
        let blk = b.create_block();
        b.append_block_params_for_function_params(blk);
        b.switch_to_block(blk);
        b.seal_block(blk);
        let params = b.block_params(blk).to_vec();
        let k = params.len() - extra;
        let (out, ws) = (params[k - 2], params[k - 1]);
        let wbase = (extra > 0).then(|| params[k]);
        let mut kb = Kb::new(&mut b, feat);
        let mut sink = Data {
            module,
            st: data,
            prefix,
        };
        emit_step(
            &mut kb,
            m,
            sched,
            step,
            &params[..k],
            (out, ws, wbase),
            &mut sink,
        );
        b.ins().return_(&[]);
        b.finalize(frontend);
    }
    if want == Text::Clif {
        text.push_str(&format!("{comment}{}\n", ctx.func.display()));
    }
    ctx.set_disasm(want == Text::Asm);
    module
        .define_function(fid, ctx)
        .map_err(|e| internal(&format!("kernel {fname}"), e))?;
    if want == Text::Asm {
        push_asm(text, comment, fname, ctx);
    }
    module.clear_context(ctx);
    if let Some(e) = data.asm_err.take() {
        return Err(e);
    }
    Ok(fid)
}

/// Declares task function `fname` (`fn(arg, i)`, local) and, in `ctx`'s function, the
/// `kernels` it calls.
fn declare_task<M: ClModule>(
    module: &mut M,
    ctx: &mut Context,
    fname: &str,
    kernels: &[FuncId],
) -> Result<(FuncId, Vec<FuncRef>), BackendError> {
    let s = sig(module, 2, None);
    let fid = module
        .declare_function(fname, Linkage::Local, &s)
        .map_err(|e| internal("declare task", e))?;
    ctx.func.signature = s;
    ctx.func.name = UserFuncName::user(0, fid.as_u32());
    let refs = kernels
        .iter()
        .map(|&k| module.declare_func_in_func(k, &mut ctx.func))
        .collect();
    Ok((fid, refs))
}

/// Defines the task function `fname(arg, i)` calling `kernels`: `body` gets the
/// builder in the entry block, the kernels' references and the two parameters, and
/// ends every block it makes.
fn define_task<M: ClModule>(
    module: &mut M,
    (ctx, fctx): (&mut Context, &mut FunctionBuilderContext),
    fname: &str,
    kernels: &[FuncId],
    body: impl FnOnce(&mut FunctionBuilder<'_>, &[FuncRef], Value, Value),
) -> Result<FuncId, BackendError> {
    let frontend = module.isa().frontend_config();
    let (fid, refs) = declare_task(module, ctx, fname, kernels)?;
    {
        let mut b = FunctionBuilder::new(&mut ctx.func, fctx);
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        b.seal_block(entry);
        let p = b.block_params(entry).to_vec();
        body(&mut b, &refs, p[0], p[1]);
        b.finalize(frontend);
    }
    module
        .define_function(fid, ctx)
        .map_err(|e| internal(&format!("task {fname}"), e))?;
    module.clear_context(ctx);
    Ok(fid)
}

/// The task function `task(arg, i)` of a split step: `arg` points at the step's
/// pointers (its run-time operands, its result, its shared region, the first task
/// slot); chunk `i` runs its kernel (`kernels[i]`) in slot `i`, `slot_stride` bytes
/// apart. An `i` out of range does nothing. With `wb`, `arg` holds the decoded
/// weights' region after the first task slot, and every kernel gets it last.
fn emit_task<M: ClModule>(
    module: &mut M,
    (ctx, fctx): (&mut Context, &mut FunctionBuilderContext),
    feat: Features,
    fname: &str,
    (step, slot_stride, wb): (&select::Step, u64, bool),
    sp: &Split,
    kernels: &[FuncId],
) -> Result<FuncId, BackendError> {
    define_task(module, (ctx, fctx), fname, kernels, |b, refs, arg, i| {
        let nr = step.reads.len();
        let mf = super::kb::MF;
        let reads: Vec<Value> = (0..nr)
            .map(|k| b.ins().load(I64, mf, arg, (k * 8) as i32))
            .collect();
        let out = b.ins().load(I64, mf, arg, (nr * 8) as i32);
        let base = b.ins().load(I64, mf, arg, (nr * 8 + 8) as i32);
        let slots = b.ins().load(I64, mf, arg, (nr * 8 + 16) as i32);
        let wbase = wb.then(|| b.ins().load(I64, mf, arg, (nr * 8 + 24) as i32));
        let exit = b.create_block();
        let dispatch = b.create_block();
        let ok = b
            .ins()
            .icmp_imm_s(IntCC::UnsignedLessThan, i, sp.len() as i64);
        b.ins().brif(ok, dispatch, &[], exit, &[]);
        b.switch_to_block(dispatch);
        b.seal_block(dispatch);
        let blocks: Vec<_> = (0..sp.len()).map(|_| b.create_block()).collect();
        let i32v = b.ins().ireduce(I32, i);
        let calls: Vec<_> = blocks
            .iter()
            .map(|&blk| b.func.dfg.block_call(blk, &[]))
            .collect();
        let def = b.func.dfg.block_call(exit, &[]);
        let jt = b.create_jump_table(JumpTableData::new(def, &calls));
        b.ins().br_table(i32v, jt);
        for (ci, (chunk, &blk)) in sp.chunks.iter().zip(&blocks).enumerate() {
            b.switch_to_block(blk);
            b.seal_block(blk);
            let mut kb = Kb::new(b, feat);
            let slot = kb.off(slots, (ci as u64 * slot_stride) as i64);
            match chunk {
                Chunk::Rows {
                    full: g,
                    r0,
                    r1,
                    y0,
                    y1,
                    eb_in,
                    eb_out,
                    direct,
                    ..
                } => {
                    let (r0, r1, y0, y1, ei, eo) = (*r0, *r1, *y0, *y1, *eb_in, *eb_out);
                    let x = reads[0];
                    // The shared region (the unpacked weights) in the weights' place.
                    let call = |kb: &mut Kb<'_, '_>, xs: Value, os: Value, ws: Value| {
                        let mut args = if sp.pre.is_some() {
                            vec![xs, base, os, ws]
                        } else {
                            vec![xs, os, ws]
                        };
                        args.extend(wbase);
                        kb.b.ins().call(refs[ci], &args);
                    };
                    if *direct {
                        // The kernel reads and writes the tensors in place.
                        let xs = kb.off(x, (y0 * g.w * ei) as i64);
                        let os = kb.off(out, (r0 * g.ow * eo) as i64);
                        call(&mut kb, xs, os, slot);
                    } else {
                        let (_, o_off, w_off) =
                            split::row_slot(g, (y0, y1), (r0, r1), (ei, eo), false);
                        let xs = slot;
                        let os = kb.off(slot, o_off as i64);
                        let ws = kb.off(slot, w_off as i64);
                        // The band's input rows, plane by plane.
                        let in_rows = ((y1 - y0) * g.w * ei) as i64;
                        kb.for_range(0, (g.n * g.c) as i64, 1, |kb, pl| {
                            let s = kb.idx(x, pl, (g.h * g.w * ei) as i64);
                            let s = kb.off(s, (y0 * g.w * ei) as i64);
                            let d = kb.idx(xs, pl, in_rows);
                            kb.copy_bytes(d, s, in_rows);
                        });
                        call(&mut kb, xs, os, ws);
                        let out_rows = ((r1 - r0) * g.ow * eo) as i64;
                        kb.for_range(0, (g.n * g.m) as i64, 1, |kb, pl| {
                            let d = kb.idx(out, pl, (g.oh * g.ow * eo) as i64);
                            let d = kb.off(d, (r0 * g.ow * eo) as i64);
                            let s = kb.idx(os, pl, out_rows);
                            kb.copy_bytes(d, s, out_rows);
                        });
                    }
                }
                Chunk::Chans { .. } => {
                    let mut args = reads.clone();
                    args.push(out);
                    args.push(slot);
                    args.extend(wbase);
                    kb.b.ins().call(refs[ci], &args);
                }
                Chunk::Range {
                    e0,
                    eb_reads,
                    eb_out,
                    planes,
                    ..
                } => {
                    let (count, stride) = planes.unwrap_or((1, 0));
                    let f = refs[ci];
                    let call = |kb: &mut Kb<'_, '_>, pl: Option<Value>| {
                        let at = |kb: &mut Kb<'_, '_>, p: Value, eb: usize| {
                            let p = match pl {
                                Some(pl) => kb.idx(p, pl, (stride * eb) as i64),
                                None => p,
                            };
                            kb.off(p, (e0 * eb) as i64)
                        };
                        let mut args: Vec<Value> = reads
                            .iter()
                            .zip(eb_reads)
                            .map(|(&r, &eb)| at(kb, r, eb))
                            .collect();
                        args.push(at(kb, out, *eb_out));
                        args.push(slot);
                        args.extend(wbase);
                        kb.b.ins().call(f, &args);
                    };
                    if count > 1 {
                        kb.for_range(0, count as i64, 1, |kb, pl| call(kb, Some(pl)));
                    } else {
                        call(&mut kb, None);
                    }
                }
            }
            b.ins().return_(&[]);
        }
        b.switch_to_block(exit);
        b.seal_block(exit);
        b.ins().return_(&[]);
    })
}

/// The task function of a split step's first phase: task `i` runs `kernels[i]` with
/// the step's operands, the shared region (the base of the step's workspace) as its
/// result and workspace (and, with `wb`, the decoded weights' region last).
fn emit_pre_task<M: ClModule>(
    module: &mut M,
    (ctx, fctx): (&mut Context, &mut FunctionBuilderContext),
    fname: &str,
    (step, wb): (&select::Step, bool),
    kernels: &[FuncId],
) -> Result<FuncId, BackendError> {
    define_task(module, (ctx, fctx), fname, kernels, |b, refs, arg, i| {
        let nr = step.reads.len();
        let mf = super::kb::MF;
        let mut args: Vec<Value> = (0..nr)
            .map(|k| b.ins().load(I64, mf, arg, (k * 8) as i32))
            .collect();
        let base = b.ins().load(I64, mf, arg, (nr * 8 + 8) as i32);
        args.push(base);
        args.push(base);
        if wb {
            args.push(b.ins().load(I64, mf, arg, (nr * 8 + 24) as i32));
        }
        let exit = b.create_block();
        for (ci, &r) in refs.iter().enumerate() {
            let this = b.create_block();
            let next = b.create_block();
            let is = b.ins().icmp_imm_s(IntCC::Equal, i, ci as i64);
            b.ins().brif(is, this, &[], next, &[]);
            b.switch_to_block(this);
            b.seal_block(this);
            b.ins().call(r, &args);
            b.ins().jump(exit, &[]);
            b.switch_to_block(next);
            b.seal_block(next);
        }
        b.ins().jump(exit, &[]);
        b.switch_to_block(exit);
        b.seal_block(exit);
        b.ins().return_(&[]);
    })
}

/// Appends the disassembly of the function just defined in `ctx`.
fn push_asm(out: &mut String, comment: &str, fname: &str, ctx: &Context) {
    let code = ctx
        .compiled_code()
        .and_then(|c| c.vcode.as_deref())
        .unwrap_or("; (no disassembly)\n");
    out.push_str(&format!("{comment}{fname}:\n{code}\n"));
}

#[allow(
    clippy::too_many_arguments,
    reason = "the pieces of one kernel function"
)]
fn emit_step<M: ClModule>(
    kb: &mut Kb<'_, '_>,
    m: &Module,
    sched: &Schedule,
    step: &select::Step,
    params: &[Value],
    (out, ws, wbase): (Value, Value, Option<Value>),
    sink: &mut Data<'_, M>,
) {
    let const_of = |v: qcc_ir::ValueId| sched.const_data(m, v);
    match step.node {
        Some(n) => {
            let node = &m.nodes[n];
            let mut it = params.iter();
            let ops = step
                .runtime_operand
                .iter()
                .map(|&rt| if rt { it.next().copied() } else { None })
                .collect();
            let mut cx = Ecx {
                kb,
                m,
                node,
                data: sink,
                const_of: &const_of,
                ops,
                out,
                ws,
                wbase,
            };
            kernels::emit(&mut cx, &step.lowering);
        }
        None => {
            let Lowering::Copy { bytes } = step.lowering else {
                unreachable!("output steps are copies")
            };
            let src = match step.reads.first() {
                Some(_) => params[0],
                None => {
                    // A constant output: its data, in its storage layout.
                    let Dest::Output(j) = step.dest else {
                        unreachable!("copies write outputs")
                    };
                    let v = m.outputs[j];
                    let bytes = match const_of(v) {
                        Some(qcc_ir::ConstData::F32(d)) => {
                            d.iter().flat_map(|x| x.to_le_bytes()).collect()
                        }
                        Some(qcc_ir::ConstData::Int(d)) => {
                            let mut b = Vec::new();
                            super::storage::Store::of(&m.ty(v).elem).encode_ints(d, &mut b);
                            b
                        }
                        None => Vec::new(),
                    };
                    let p = sink.define(kb.b.func, bytes, 16);
                    kernels::placed_ptr(kb, p, wbase)
                }
            };
            kb.copy_bytes(out, src, bytes as i64);
        }
    }
}

fn dest_text(d: Dest, plan: &MemoryPlan) -> String {
    match d {
        Dest::Output(j) => format!("output[{j}]"),
        Dest::Value(v) => match plan.loc[v.index()] {
            Loc::Scratch(o) => format!("scratch+{o}"),
            l => format!("{l:?}"),
        },
    }
}

/// How the threaded entry runs a split step: `n` tasks of `task`, after `pre`'s.
struct StepTasks {
    task: FuncId,
    n: usize,
    pre: Option<(FuncId, usize)>,
}

/// A job of several split steps (`split::jobs`): `task(arg, i)` runs task `i` of each
/// step of `steps` in turn, `arg` holding their argument blocks one after another.
#[derive(Clone, Debug)]
struct JobTasks {
    task: FuncId,
    n: usize,
    steps: std::ops::Range<usize>,
}

/// Words of a split step's argument block (`emit_task`): its run-time operands, its
/// result, its shared region, the first task slot, and the decoded weights' region.
fn task_arg_words(step: &select::Step, wb: bool) -> usize {
    step.reads.len() + 3 + usize::from(wb)
}

/// The task function of a job: `task(arg, i)` calls `members[k].0(arg + members[k].1,
/// i)` for each member in order.
fn emit_job_task<M: ClModule>(
    module: &mut M,
    (ctx, fctx): (&mut Context, &mut FunctionBuilderContext),
    fname: &str,
    members: &[(FuncId, usize)],
) -> Result<FuncId, BackendError> {
    let ids: Vec<FuncId> = members.iter().map(|m| m.0).collect();
    define_task(module, (ctx, fctx), fname, &ids, |b, refs, arg, i| {
        for (&f, &(_, off)) in refs.iter().zip(members) {
            let a = b.ins().iadd_imm_s(arg, off as i64);
            b.ins().call(f, &[a, i]);
        }
        b.ins().return_(&[]);
    })
}

/// Where an entry keeps the int32 copies of its int64 inputs and outputs
/// (`super::Int64Io`): `(index, scratch offset, elements)`.
#[derive(Debug, Default)]
struct Io64At {
    inputs: Vec<(usize, u64, usize)>,
    outputs: Vec<(usize, u64, usize)>,
}

impl Io64At {
    /// Regions after `arena` (which grows to hold them).
    fn place(m: &Module, io: super::Int64Io, arena: &mut u64) -> Io64At {
        let mut at = Io64At::default();
        let mut off = arena.div_ceil(plan::ALIGN) * plan::ALIGN;
        for (list, ids, input) in [
            (&mut at.inputs, &m.inputs, true),
            (&mut at.outputs, &m.outputs, false),
        ] {
            for (i, &v) in ids.iter().enumerate() {
                if if input { io.input(i) } else { io.output(i) } {
                    let n = m.ty(v).numel();
                    list.push((i, off, n));
                    off += (n as u64 * 4).div_ceil(plan::ALIGN) * plan::ALIGN;
                }
            }
        }
        if !at.inputs.is_empty() || !at.outputs.is_empty() {
            *arena = off;
        }
        at
    }
}

/// Copies `n` elements from `src` to `dst`: int64 to int32 when `fail` is given (a
/// value beyond int32 jumps there), else int32 to int64 (sign-extended).
fn emit_int64_copy(
    b: &mut FunctionBuilder<'_>,
    src: Value,
    dst: Value,
    n: usize,
    fail: Option<Block>,
) {
    if n == 0 {
        return;
    }
    let mf = super::kb::MF;
    let body = b.create_block();
    let exit = b.create_block();
    b.append_block_param(body, I64);
    let i0 = b.ins().iconst(I64, 0);
    b.ins().jump(body, &[BlockArg::Value(i0)]);
    b.switch_to_block(body);
    let i = b.block_params(body)[0];
    let (se, de) = if fail.is_some() { (8, 4) } else { (4, 8) };
    let s_off = b.ins().imul_imm_s(i, se);
    let sp = b.ins().iadd(src, s_off);
    let d_off = b.ins().imul_imm_s(i, de);
    let dp = b.ins().iadd(dst, d_off);
    match fail {
        Some(fail) => {
            let v = b.ins().load(I64, mf, sp, 0);
            let lo = b.ins().ireduce(I32, v);
            let back = b.ins().sextend(I64, lo);
            let bad = b.ins().icmp(IntCC::NotEqual, back, v);
            let ok = b.create_block();
            b.ins().brif(bad, fail, &[], ok, &[]);
            b.switch_to_block(ok);
            b.seal_block(ok);
            b.ins().store(mf, lo, dp, 0);
        }
        None => {
            let v = b.ins().load(I32, mf, sp, 0);
            let w = b.ins().sextend(I64, v);
            b.ins().store(mf, w, dp, 0);
        }
    }
    let next = b.ins().iadd_imm_s(i, 1);
    let more = b.ins().icmp_imm_s(IntCC::SignedLessThan, next, n as i64);
    b.ins()
        .brif(more, body, &[BlockArg::Value(next)], exit, &[]);
    b.seal_block(body);
    b.switch_to_block(exit);
    b.seal_block(exit);
}

/// Where an entry finds the compressed weights (`--compress-weights huffman`).
#[derive(Clone, Copy, Debug)]
struct WeightsAt {
    /// The serial decoder of every blob (None: nothing was worth compressing).
    unpack: Option<FuncId>,
    /// The threaded entry's: one task per blob, and the blob count.
    task: Option<(FuncId, usize)>,
    /// The offset of the decoded weights' region in the entry's scratch, and that of
    /// the decoder's lookup table(s).
    at: u64,
    table: u64,
}

/// A split step's task function and count, after its first phase's, in the entry.
type TaskRefs = (FuncRef, usize, Option<(FuncRef, usize)>);

/// What the threaded entry `NAME_run_ctx` adds to the plain one.
struct Threaded<'a> {
    /// Per step: its tasks, or None to run it inline.
    tasks: &'a [Option<StepTasks>],
    /// Per step: the job it starts, when that job has several steps.
    jobs: &'a [Option<JobTasks>],
    /// `NAME_run`, which one thread runs.
    run: FuncId,
    /// `NAME_run`'s arena.
    arena: u64,
    /// Where the tasks' slots start in the threaded entry's scratch.
    slots_base: u64,
}

/// Offsets in the `qcc_ctx` struct (docs/design.md, the header): `void *pool`,
/// `parallel_for`, `size_t threads`, `size_t scratch_bytes`.
const CTX_POOL: i32 = 0;
const CTX_PARALLEL_FOR: i32 = 8;
const CTX_THREADS: i32 = 16;
const CTX_SCRATCH_BYTES: i32 = 24;

#[allow(
    clippy::too_many_arguments,
    reason = "the pieces of the entry function"
)]
fn emit_entry<M: ClModule>(
    module: &mut M,
    m: &Module,
    name: &str,
    sched: &Schedule,
    (plan, weights, io64): (&MemoryPlan, Option<WeightsAt>, &Io64At),
    kernels: &[FuncId],
    (tier, data): (Option<Tier>, &mut DataState),
    ctx: &mut Context,
    fctx: &mut FunctionBuilderContext,
    asm: Option<&mut String>,
    threaded: Option<Threaded<'_>>,
) -> Result<FuncId, BackendError> {
    let nparams = if threaded.is_some() { 4 } else { 3 };
    let s = sig(module, nparams, Some(I32));
    let fname = match threaded {
        Some(_) => format!("{name}_run_ctx"),
        None => format!("{name}_run"),
    };
    let fid = module
        .declare_function(&fname, Linkage::Export, &s)
        .map_err(|e| internal("declare entry", e))?;
    ctx.func.signature = s;
    ctx.func.name = UserFuncName::user(0, fid.as_u32());
    let refs: Vec<_> = kernels
        .iter()
        .map(|&k| module.declare_func_in_func(k, &mut ctx.func))
        .collect();
    let unpack = weights
        .and_then(|w| w.unpack)
        .map(|f| module.declare_func_in_func(f, &mut ctx.func));
    let unpack_task = weights
        .and_then(|w| w.task)
        .map(|(f, n)| (module.declare_func_in_func(f, &mut ctx.func), n));
    // The threaded entry: `NAME_run` (for one thread) and the task functions.
    let th = threaded.as_ref().map(|t| {
        let run = module.declare_func_in_func(t.run, &mut ctx.func);
        let mut declare = |f: FuncId| module.declare_func_in_func(f, &mut ctx.func);
        let tasks: Vec<Option<TaskRefs>> = t
            .tasks
            .iter()
            .map(|o| {
                o.as_ref()
                    .map(|st| (declare(st.task), st.n, st.pre.map(|(p, n)| (declare(p), n))))
            })
            .collect();
        // parallel_for(pool, n, task, arg)
        let pf_sig = sig(module, 4, None);
        let jobs: Vec<Option<(FuncRef, usize, std::ops::Range<usize>)>> = t
            .jobs
            .iter()
            .map(|o| {
                o.as_ref().map(|j| {
                    (
                        module.declare_func_in_func(j.task, &mut ctx.func),
                        j.n,
                        j.steps.clone(),
                    )
                })
            })
            .collect();
        (run, tasks, pf_sig, t.arena, jobs)
    });
    // The CPU check of the tier (a CPU without it would fault in a wide kernel), and a
    // word caching its success: `cpuid` is slow (a VM exit under a hypervisor), and
    // every thread that writes the word writes the same 1.
    let check = tier.filter(|&t| asm::cpu_check(t)).map(|t| {
        let id = asm_func_id(module, data, name, &AsmFn::CpuCheck(t));
        let f = module.declare_func_in_func(id, &mut ctx.func);
        let flag_name = format!("{name}__cpu_ok");
        let flag = match module.get_name(&flag_name) {
            Some(cranelift_module::FuncOrDataId::Data(d)) => d,
            _ => {
                let flag = module
                    .declare_data(&flag_name, Linkage::Local, true, false)
                    .expect("a fresh data name");
                let mut d = DataDescription::new();
                d.define_zeroinit(4);
                d.set_align(4);
                module
                    .define_data(flag, &d)
                    .expect("the flag is defined once");
                flag
            }
        };
        (f, module.declare_data_in_func(flag, &mut ctx.func))
    });
    {
        let mut b = FunctionBuilder::new(&mut ctx.func, fctx);
        let entry = b.create_block();
        let body = b.create_block();
        let fail = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        b.seal_block(entry);
        let p = b.block_params(entry).to_vec();
        let (cp, p) = match th {
            Some(_) => (Some(p[0]), &p[1..]),
            None => (None, &p[..]),
        };
        let (ins, outs, scratch) = (p[0], p[1], p[2]);
        // The context: not NULL, at least one thread; one thread runs `NAME_run`, more
        // need the callback; the scratch bytes it declares must be enough.
        let mut pf_call = None;
        if let (Some(cp), Some((run, _, pf_sig, arena1, _))) = (cp, &th) {
            let ctx_ok = b.create_block();
            let one_thread = b.create_block();
            let many = b.create_block();
            let bad_ctx = b.create_block();
            let null = b.ins().icmp_imm_s(IntCC::Equal, cp, 0);
            b.ins().brif(null, bad_ctx, &[], ctx_ok, &[]);
            b.switch_to_block(ctx_ok);
            b.seal_block(ctx_ok);
            let mf = super::kb::MF;
            let threads = b.ins().load(I64, mf, cp, CTX_THREADS);
            let sbytes = b.ins().load(I64, mf, cp, CTX_SCRATCH_BYTES);
            let zero = b.ins().icmp_imm_s(IntCC::Equal, threads, 0);
            let check1 = b.create_block();
            b.ins().brif(zero, bad_ctx, &[], check1, &[]);
            b.switch_to_block(check1);
            b.seal_block(check1);
            let single = b.ins().icmp_imm_s(IntCC::Equal, threads, 1);
            b.ins().brif(single, one_thread, &[], many, &[]);
            // One thread: `NAME_run`, with its (smaller) scratch.
            b.switch_to_block(one_thread);
            b.seal_block(one_thread);
            let small = b
                .ins()
                .icmp_imm_s(IntCC::UnsignedLessThan, sbytes, *arena1 as i64);
            let run1 = b.create_block();
            b.ins().brif(small, bad_ctx, &[], run1, &[]);
            b.switch_to_block(run1);
            b.seal_block(run1);
            let call = b.ins().call(*run, &[ins, outs, scratch]);
            let rc = b.inst_results(call)[0];
            b.ins().return_(&[rc]);
            // Two or more: the callback, and the threaded plan's scratch.
            b.switch_to_block(many);
            b.seal_block(many);
            let pf = b.ins().load(I64, mf, cp, CTX_PARALLEL_FOR);
            let pool = b.ins().load(I64, mf, cp, CTX_POOL);
            let nopf = b.ins().icmp_imm_s(IntCC::Equal, pf, 0);
            let small = b
                .ins()
                .icmp_imm_s(IntCC::UnsignedLessThan, sbytes, plan.arena as i64);
            let bad = b.ins().bor(nopf, small);
            let go = b.create_block();
            b.ins().brif(bad, bad_ctx, &[], go, &[]);
            b.switch_to_block(bad_ctx);
            b.seal_block(bad_ctx);
            let one = b.ins().iconst(I32, 1);
            b.ins().return_(&[one]);
            b.switch_to_block(go);
            b.seal_block(go);
            let sref = b.import_signature(pf_sig.clone());
            pf_call = Some((pf, pool, sref));
        }
        if let Some((f, flag)) = check {
            let cpu_ok = b.create_block();
            let ask = b.create_block();
            let no_cpu = b.create_block();
            let fp = b.ins().symbol_value(I64, flag);
            let known = b.ins().load(I32, super::kb::MF, fp, 0);
            b.ins().brif(known, cpu_ok, &[], ask, &[]);
            b.switch_to_block(ask);
            b.seal_block(ask);
            let call = b.ins().call(f, &[]);
            let ok = b.inst_results(call)[0];
            let answered = b.create_block();
            b.ins().brif(ok, answered, &[], no_cpu, &[]);
            b.switch_to_block(answered);
            b.seal_block(answered);
            b.ins().store(super::kb::MF, ok, fp, 0);
            b.ins().jump(cpu_ok, &[]);
            b.switch_to_block(no_cpu);
            b.seal_block(no_cpu);
            let two = b.ins().iconst(I32, 2);
            b.ins().return_(&[two]);
            b.switch_to_block(cpu_ok);
            b.seal_block(cpu_ok);
        }
        // Argument checks: array pointers, every tensor pointer, scratch and its alignment.
        let mut bad = b.ins().icmp_imm_s(IntCC::Equal, outs, 0);
        if !m.inputs.is_empty() {
            let t = b.ins().icmp_imm_s(IntCC::Equal, ins, 0);
            bad = b.ins().bor(bad, t);
        }
        if plan.arena > 0 {
            let t = b.ins().icmp_imm_s(IntCC::Equal, scratch, 0);
            bad = b.ins().bor(bad, t);
            let low = b.ins().band_imm_s(scratch, (plan::ALIGN - 1) as i64);
            let t = b.ins().icmp_imm_s(IntCC::NotEqual, low, 0);
            bad = b.ins().bor(bad, t);
        }
        b.ins().brif(bad, fail, &[], body, &[]);
        b.switch_to_block(fail);
        b.seal_block(fail);
        let one = b.ins().iconst(I32, 1);
        b.ins().return_(&[one]);

        b.switch_to_block(body);
        b.seal_block(body);
        let fail2 = b.create_block();
        let go = b.create_block();
        let mf = super::kb::MF;
        let mut in_ptrs: Vec<Value> = (0..m.inputs.len())
            .map(|i| b.ins().load(I64, mf, ins, (i * 8) as i32))
            .collect();
        let mut out_ptrs: Vec<Value> = (0..m.outputs.len())
            .map(|j| b.ins().load(I64, mf, outs, (j * 8) as i32))
            .collect();
        let mut bad = b.ins().iconst(cranelift_codegen::ir::types::I8, 0);
        for &q in in_ptrs.iter().chain(&out_ptrs) {
            let t = b.ins().icmp_imm_s(IntCC::Equal, q, 0);
            bad = b.ins().bor(bad, t);
        }
        b.ins().brif(bad, fail2, &[], go, &[]);
        b.switch_to_block(fail2);
        b.seal_block(fail2);
        let one = b.ins().iconst(I32, 1);
        b.ins().return_(&[one]);
        b.switch_to_block(go);
        b.seal_block(go);
        // int64 inputs narrowed to their int32 copies (3 for a value beyond int32, before
        // anything runs); int64 outputs written as int32 copies, widened at the end.
        if !io64.inputs.is_empty() {
            let beyond = b.create_block();
            for &(i, off, n) in &io64.inputs {
                let dst = b.ins().iadd_imm_s(scratch, off as i64);
                emit_int64_copy(&mut b, in_ptrs[i], dst, n, Some(beyond));
                in_ptrs[i] = dst;
            }
            let cont = b.create_block();
            b.ins().jump(cont, &[]);
            b.switch_to_block(beyond);
            b.seal_block(beyond);
            let three = b.ins().iconst(I32, 3);
            b.ins().return_(&[three]);
            b.switch_to_block(cont);
            b.seal_block(cont);
        }
        let mut widen = Vec::new();
        for &(j, off, n) in &io64.outputs {
            let tmp = b.ins().iadd_imm_s(scratch, off as i64);
            widen.push((tmp, out_ptrs[j], n));
            out_ptrs[j] = tmp;
        }
        // The compressed weights, decoded into their region (with the lookup table in
        // scratch that is not live yet); every kernel gets the region last.
        let wb = weights.map(|w| b.ins().iadd_imm_s(scratch, w.at as i64));
        if let (Some(w), Some(wbv)) = (weights, wb) {
            let t = b.ins().iadd_imm_s(scratch, w.table as i64);
            match (unpack_task, pf_call, unpack) {
                // Two or more threads: a task per blob.
                (Some((tf, n)), Some((pf, pool, sref)), _) => {
                    let ss = b.create_sized_stack_slot(StackSlotData::new(
                        StackSlotKind::ExplicitSlot,
                        16,
                        3,
                    ));
                    b.ins().stack_store(I64, wbv, ss, 0);
                    b.ins().stack_store(I64, t, ss, 8);
                    let argp = b.ins().stack_addr(I64, ss, 0);
                    let taddr = b.ins().func_addr(I64, tf);
                    let nv = b.ins().iconst(I64, n as i64);
                    b.ins().call_indirect(sref, pf, &[pool, nv, taddr, argp]);
                }
                (_, _, Some(f)) => {
                    b.ins().call(f, &[wbv, t]);
                }
                _ => {}
            }
        }
        let ptr_of = |b: &mut FunctionBuilder<'_>, l: Loc| -> Value {
            match l {
                Loc::Input(i) => in_ptrs[i],
                Loc::Output(j) => out_ptrs[j],
                Loc::Scratch(o) => b.ins().iadd_imm_s(scratch, o as i64),
                Loc::None => b.ins().iconst(I64, 0),
            }
        };
        // The pointers a task function reads (`emit_task`), in a stack slot: one block
        // per step of a job.
        let arg_slot = th.as_ref().map(|t| {
            let words = |si: usize| task_arg_words(&sched.steps[si], wb.is_some());
            let most = (0..sched.steps.len())
                .map(|si| match &t.4[si] {
                    Some((_, _, steps)) => steps.clone().map(words).sum(),
                    None => words(si),
                })
                .max()
                .unwrap_or(3 + usize::from(wb.is_some()));
            b.create_sized_stack_slot(StackSlotData::new(
                StackSlotKind::ExplicitSlot,
                (most * 8) as u32,
                3,
            ))
        });
        // A step's operands, result and workspace.
        let step_args = |b: &mut FunctionBuilder<'_>, si: usize| -> Vec<Value> {
            let step = &sched.steps[si];
            let mut args: Vec<Value> = step
                .reads
                .iter()
                .map(|&v| ptr_of(b, plan.loc[v.index()]))
                .collect();
            let out = match step.dest {
                Dest::Output(j) => out_ptrs[j],
                Dest::Value(v) => ptr_of(b, plan.loc[v.index()]),
            };
            args.push(out);
            let (wo, wsz) = plan.workspace[si];
            args.push(if wsz > 0 {
                b.ins().iadd_imm_s(scratch, wo as i64)
            } else {
                scratch
            });
            args
        };
        let slots_base = threaded.as_ref().map_or(0, |t| t.slots_base);
        let mut next = 0;
        for (si, &kernel) in refs.iter().enumerate() {
            if si < next {
                // A later step of a job already run.
                continue;
            }
            let job = th.as_ref().and_then(|t| t.4[si].clone());
            if let (Some((jf, n, steps)), Some((pf, pool, sref)), Some(ss)) =
                (job, pf_call, arg_slot)
            {
                // Every member's block, then the first member's first phase (on its own
                // block) and the job.
                let mut off = 0;
                for mi in steps.clone() {
                    let mut args = step_args(&mut b, mi);
                    args.push(b.ins().iadd_imm_s(scratch, slots_base as i64));
                    args.extend(wb);
                    for &a in &args {
                        b.ins().stack_store(I64, a, ss, off);
                        off += 8;
                    }
                }
                let argp = b.ins().stack_addr(I64, ss, 0);
                let pre = th.as_ref().and_then(|t| t.1[si]).and_then(|t| t.2);
                for (f, n) in pre.into_iter().chain([(jf, n)]) {
                    let taddr = b.ins().func_addr(I64, f);
                    let nv = b.ins().iconst(I64, n as i64);
                    b.ins().call_indirect(sref, pf, &[pool, nv, taddr, argp]);
                }
                next = steps.end;
                continue;
            }
            let mut args = step_args(&mut b, si);
            let task = th.as_ref().and_then(|t| t.1[si]);
            match (task, pf_call, arg_slot) {
                (Some((tf, n, pre)), Some((pf, pool, sref)), Some(ss)) => {
                    args.push(b.ins().iadd_imm_s(scratch, slots_base as i64));
                    args.extend(wb);
                    for (k, &a) in args.iter().enumerate() {
                        b.ins().stack_store(I64, a, ss, (k * 8) as i32);
                    }
                    let argp = b.ins().stack_addr(I64, ss, 0);
                    for (f, n) in pre.into_iter().chain([(tf, n)]) {
                        let taddr = b.ins().func_addr(I64, f);
                        let nv = b.ins().iconst(I64, n as i64);
                        b.ins().call_indirect(sref, pf, &[pool, nv, taddr, argp]);
                    }
                }
                _ => {
                    args.extend(wb);
                    b.ins().call(kernel, &args);
                }
            }
        }
        for (tmp, dst, n) in widen {
            emit_int64_copy(&mut b, tmp, dst, n, None);
        }
        let zero = b.ins().iconst(I32, 0);
        b.ins().return_(&[zero]);
        b.finalize(module.isa().frontend_config());
    }
    ctx.set_disasm(asm.is_some());
    module
        .define_function(fid, ctx)
        .map_err(|e| internal("entry function", e))?;
    if let Some(out) = asm {
        let what = if threaded.is_some() {
            "; the threaded entry function\n"
        } else {
            "; the entry function\n"
        };
        push_asm(out, what, &fname, ctx);
    }
    module.clear_context(ctx);
    Ok(fid)
}

/// `NAME_input_size(i)`, `_output_size`, `_input_rank`, `_output_rank`,
/// `_input_dims`, `_output_dims`, `_scratch_size()`.
fn emit_getters<M: ClModule>(
    module: &mut M,
    m: &Module,
    name: &str,
    (arena, arena_ctx): (u64, u64),
    data: &mut DataState,
    ctx: &mut Context,
    fctx: &mut FunctionBuilderContext,
) -> Result<(), BackendError> {
    let shapes = |ids: &[qcc_ir::ValueId]| -> Vec<Vec<usize>> {
        ids.iter().map(|&v| m.ty(v).shape.clone()).collect()
    };
    let ins = shapes(&m.inputs);
    let outs = shapes(&m.outputs);
    enum G<'s> {
        Table(Vec<i64>),
        Dims(&'s [Vec<usize>]),
        Const(i64),
        /// `threads <= 1 ? a : b`.
        Threads(i64, i64),
    }
    let getters: Vec<(String, G<'_>)> = vec![
        (
            format!("{name}_input_size"),
            G::Table(
                ins.iter()
                    .map(|s| s.iter().product::<usize>() as i64)
                    .collect(),
            ),
        ),
        (
            format!("{name}_output_size"),
            G::Table(
                outs.iter()
                    .map(|s| s.iter().product::<usize>() as i64)
                    .collect(),
            ),
        ),
        (
            format!("{name}_input_rank"),
            G::Table(ins.iter().map(|s| s.len() as i64).collect()),
        ),
        (
            format!("{name}_output_rank"),
            G::Table(outs.iter().map(|s| s.len() as i64).collect()),
        ),
        (format!("{name}_input_dims"), G::Dims(&ins)),
        (format!("{name}_output_dims"), G::Dims(&outs)),
        (format!("{name}_scratch_size"), G::Const(arena as i64)),
        (
            format!("{name}_scratch_size_threads"),
            G::Threads(arena as i64, arena_ctx as i64),
        ),
    ];
    for (fname, g) in getters {
        let nparams = if matches!(g, G::Const(_)) { 0 } else { 1 };
        let s = sig(module, nparams, Some(I64));
        let fid = module
            .declare_function(&fname, Linkage::Export, &s)
            .map_err(|e| internal("declare getter", e))?;
        ctx.func.signature = s;
        ctx.func.name = UserFuncName::user(0, fid.as_u32());
        // Data objects first (they need the module), then the body.
        let dims_gv: Vec<GlobalValue> = match &g {
            G::Dims(shapes) => shapes
                .iter()
                .map(|s| {
                    let bytes: Vec<u8> = s.iter().flat_map(|&d| (d as i64).to_le_bytes()).collect();
                    let mut sink = Data {
                        module: &mut *module,
                        st: &mut *data,
                        prefix: name,
                    };
                    let bytes = if bytes.is_empty() { vec![0; 8] } else { bytes };
                    sink.rodata_gv(&mut ctx.func, bytes, 8)
                })
                .collect(),
            _ => Vec::new(),
        };
        {
            let mut b = FunctionBuilder::new(&mut ctx.func, fctx);
            let blk = b.create_block();
            b.append_block_params_for_function_params(blk);
            b.switch_to_block(blk);
            b.seal_block(blk);
            let r = match &g {
                G::Const(c) => b.ins().iconst(I64, *c),
                G::Threads(one, many) => {
                    let t = b.block_params(blk)[0];
                    let c = b.ins().icmp_imm_s(IntCC::UnsignedLessThanOrEqual, t, 1);
                    let a = b.ins().iconst(I64, *one);
                    let m = b.ins().iconst(I64, *many);
                    b.ins().select(c, a, m)
                }
                G::Table(t) => {
                    let i = b.block_params(blk)[0];
                    let mut acc = b.ins().iconst(I64, 0);
                    for (k, &v) in t.iter().enumerate() {
                        let c = b.ins().icmp_imm_s(IntCC::Equal, i, k as i64);
                        let vv = b.ins().iconst(I64, v);
                        acc = b.ins().select(c, vv, acc);
                    }
                    acc
                }
                G::Dims(_) => {
                    let i = b.block_params(blk)[0];
                    let mut acc = b.ins().iconst(I64, 0);
                    for (k, &gv) in dims_gv.iter().enumerate() {
                        let c = b.ins().icmp_imm_s(IntCC::Equal, i, k as i64);
                        let p = b.ins().symbol_value(I64, gv);
                        acc = b.ins().select(c, p, acc);
                    }
                    acc
                }
            };
            b.ins().return_(&[r]);
            b.finalize(module.isa().frontend_config());
        }
        module
            .define_function(fid, ctx)
            .map_err(|e| internal("getter", e))?;
        module.clear_context(ctx);
    }
    Ok(())
}

/// The f32 model's bytes for the constants of step `step` that wrote `bytes` of data: an
/// integer conv/matmul with constant weights would hold them (and a constant bias) as
/// 4-byte floats; every other kernel's data stays as it is.
fn float_bytes(m: &Module, sched: &Schedule, step: &select::Step, bytes: u64) -> u64 {
    let Some(n) = step.node else { return bytes };
    let node = &m.nodes[n];
    let is_const = |i: usize| {
        node.operands
            .get(i)
            .is_some_and(|&v| sched.const_data(m, v).is_some())
    };
    if !matches!(node.op, qcc_ir::Op::Conv2dInt | qcc_ir::Op::MatMulInt) || !is_const(1) {
        return bytes;
    }
    let elems = |i: usize| m.ty(node.operands[i]).numel() as u64;
    4 * elems(1) + if is_const(2) { 4 * elems(2) } else { 0 }
}

/// `data`: bytes of read-only data in all and defined by each step, as stored in the
/// object and before compression (the f32 model's figure is from the latter).
fn make_report(
    m: &Module,
    sched: &Schedule,
    plan: &MemoryPlan,
    data: (u64, &[u64], u64, &[u64]),
    target: String,
    tier: Option<Tier>,
) -> Report {
    let (weight_bytes, step_bytes, raw_bytes, step_raw) = data;
    let steps_total: u64 = step_raw.iter().sum();
    let float_weight_bytes = raw_bytes - steps_total
        + sched
            .steps
            .iter()
            .zip(step_raw)
            .map(|(st, &b)| float_bytes(m, sched, st, b))
            .sum::<u64>();
    let mut layers = Vec::new();
    for (si, step) in sched.steps.iter().enumerate() {
        let (op, result, loc, inputs, input_bits, out_v) = match step.node {
            Some(n) => {
                let node = &m.nodes[n];
                // A fused integer add reads its requantizes' operands.
                let ins: &[qcc_ir::ValueId] = if matches!(step.lowering, Lowering::Int(_)) {
                    &step.reads
                } else {
                    &node.operands
                };
                let mut op = node.op.name().to_string();
                let mut out_v = node.result;
                for &f in &step.fused {
                    op.push('+');
                    op.push_str(m.nodes[f].op.name());
                    out_v = m.nodes[f].result;
                }
                (
                    op,
                    m.value(out_v).spelling(),
                    node.loc.clone(),
                    ins.iter()
                        .map(|&o| m.ty(o).elem.to_string())
                        .collect::<Vec<_>>(),
                    ins.iter().map(|&o| m.ty(o).elem.bits()).collect::<Vec<_>>(),
                    out_v,
                )
            }
            None => {
                let Dest::Output(j) = step.dest else {
                    unreachable!("copies write outputs")
                };
                let v = m.outputs[j];
                (
                    "copy".to_string(),
                    m.value(v).spelling(),
                    None,
                    vec![m.ty(v).elem.to_string()],
                    vec![m.ty(v).elem.bits()],
                    v,
                )
            }
        };
        let out_ty = &m.ty(out_v).elem;
        let integer = match step.node {
            Some(n) => {
                let node = &m.nodes[n];
                node.operands.iter().all(|&o| !m.ty(o).elem.is_float())
                    && !matches!(m.value(out_v).def, ValueDef::Input)
                    && node.operands.iter().all(|&o| m.ty(o).elem.is_integer())
            }
            None => false,
        };
        layers.push(LayerReport {
            index: si,
            op,
            result,
            loc,
            kernel: step.lowering.kernel_name_on(tier),
            inputs,
            output: out_ty.to_string(),
            input_bits,
            output_bits: out_ty.bits(),
            macs: step.lowering.macs(),
            dest: dest_text(step.dest, plan),
            workspace: plan.workspace[si],
            integer,
            rodata_bytes: step_bytes[si],
            tier: step.lowering.tier_on(tier).map(str::to_string),
            tasks: 1,
            job: None,
            split_by: None,
        });
    }
    Report {
        model: m.name.clone(),
        target,
        tier: None,
        total_macs: layers.iter().map(|l| l.macs).sum(),
        layers,
        weight_bytes,
        float_weight_bytes,
        arena_bytes: plan.arena,
        arena_ctx_bytes: plan.arena,
        tensor_bytes: plan.tensor_bytes,
        compression: None,
    }
}
