//! A fork/join pool on std threads for the threaded entry `NAME_run_ctx`: the
//! algorithm of the C runtime's pool (`runtime/c/qcc_runtime.c`).
//!
//! `parallel_for(n, task)` runs `task(i)` for every `i < n` on the calling thread and
//! the pool's `threads - 1` workers, and returns when all are done. The layers of a
//! model are short (tens of microseconds), so the fork/join must cost about a
//! microsecond, and a task should run on the thread that ran the same index last time
//! (its part of the scratch and the rows it writes are then in that core's cache):
//!
//! - the job is published in one atomic word: its epoch (high 32 bits), its count `n`
//!   (6 bits, at most [`MAX_N`]) and a bitmap of the indices taken (26 bits); the task
//!   and its argument are stored before the word;
//! - thread `t` of `T` (the caller is 0) takes indices `t, t + T, ...` first, then what
//!   is left from the end (a slow or descheduled thread's);
//! - an index is taken by a compare-and-swap of the whole word, so it succeeds only
//!   while that job is the published one: the task and argument read before it are the
//!   job's own, and a late worker can never take an index of the next job;
//! - workers spin on the word for a while after each job, then sleep on a condition
//!   variable (the caller wakes sleepers only when there are any);
//! - more than [`MAX_N`] indices run as successive jobs of at most [`MAX_N`].
//!
//! One job at a time: a second caller arriving while a job runs (the pool is shared by
//! threads) runs its own job on its own thread instead of waiting.

use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The C type of a task: `void task(void *arg, size_t i)`.
pub type TaskFn = unsafe extern "C" fn(*mut c_void, usize);

/// `parallel_for(pool, n, task, arg)`, the callback of [`QccCtx`].
pub type ParallelForFn = unsafe extern "C" fn(*mut c_void, usize, TaskFn, *mut c_void);

/// The `qcc_ctx` struct of the C headers: what `NAME_run_ctx` takes.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct QccCtx {
    pub pool: *mut c_void,
    pub parallel_for: Option<ParallelForFn>,
    /// Threads that may run tasks at once (1: `NAME_run_ctx` runs `NAME_run`).
    pub threads: usize,
    /// Bytes at the scratch pointer (at least `NAME_scratch_size_threads(threads)`).
    pub scratch_bytes: usize,
}

/// The most indices of one job (the bitmap of the claim word).
pub const MAX_N: usize = 26;

/// How long a worker spins for the next job before it sleeps.
const SPIN: Duration = Duration::from_micros(300);

struct Shared {
    /// `epoch << 32 | n << 26 | taken bits`.
    word: AtomicU64,
    /// The current job's task and argument (see the module docs).
    task: AtomicPtr<()>,
    arg: AtomicPtr<c_void>,
    /// Indices of the current job finished.
    done: AtomicUsize,
    threads: usize,
    /// Sleeping workers wait on `wake` with `lock` held.
    lock: Mutex<()>,
    sleepers: AtomicUsize,
    wake: Condvar,
    shutdown: AtomicBool,
    busy: AtomicBool,
}

/// A pool of `threads - 1` worker threads (the caller is the other one).
pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    threads: usize,
}

impl std::fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadPool")
            .field("threads", &self.threads)
            .finish_non_exhaustive()
    }
}

impl ThreadPool {
    /// A pool running jobs on `threads` threads (the caller and `threads - 1` workers;
    /// 0 counts as 1).
    pub fn new(threads: usize) -> ThreadPool {
        let threads = threads.max(1);
        let shared = Arc::new(Shared {
            word: AtomicU64::new(0),
            task: AtomicPtr::new(std::ptr::null_mut()),
            arg: AtomicPtr::new(std::ptr::null_mut()),
            done: AtomicUsize::new(0),
            threads,
            lock: Mutex::new(()),
            sleepers: AtomicUsize::new(0),
            wake: Condvar::new(),
            shutdown: AtomicBool::new(false),
            busy: AtomicBool::new(false),
        });
        let workers = (1..threads)
            .map(|k| {
                let s = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("qcc-pool-{k}"))
                    .spawn(move || worker(&s, k))
                    .expect("spawning a pool thread")
            })
            .collect();
        ThreadPool {
            shared,
            workers,
            threads,
        }
    }

    /// Threads that run a job (the caller included).
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f(i)` for every `i < n` on the pool's threads; returns when all are done.
    pub fn parallel_for(&self, n: usize, f: &(dyn Fn(usize) + Sync)) {
        unsafe extern "C" fn tramp(arg: *mut c_void, i: usize) {
            // SAFETY: `arg` is the `&&dyn Fn` below, alive until `run_on` returns.
            let f = unsafe { &*(arg as *const &(dyn Fn(usize) + Sync)) };
            f(i)
        }
        let r: &(dyn Fn(usize) + Sync) = f;
        run_on(&self.shared, n, tramp, &r as *const _ as *mut c_void);
    }

    /// The context for `NAME_run_ctx` with this pool and `scratch_bytes` of scratch.
    pub fn ctx(&self, scratch_bytes: usize) -> QccCtx {
        QccCtx {
            pool: Arc::as_ptr(&self.shared) as *mut c_void,
            parallel_for: Some(qcc_pool_parallel_for),
            threads: self.threads,
            scratch_bytes,
        }
    }
}

/// `parallel_for` for C: `pool` is a [`ThreadPool`]'s shared state (what
/// [`ThreadPool::ctx`] puts into the context).
///
/// # Safety
///
/// `pool` must come from [`ThreadPool::ctx`] of a pool still alive, and `task(arg, i)`
/// must be safe to call from any thread for every `i < n`, concurrently for distinct
/// `i`.
pub unsafe extern "C" fn qcc_pool_parallel_for(
    pool: *mut c_void,
    n: usize,
    task: TaskFn,
    arg: *mut c_void,
) {
    // SAFETY: the caller passes the pointer `ThreadPool::ctx` gave, of a live pool.
    let shared = unsafe { &*(pool as *const Shared) };
    run_on(shared, n, task, arg);
}

/// Indices `base + i` of a larger job.
struct Batch {
    task: TaskFn,
    arg: *mut c_void,
    base: usize,
}

unsafe extern "C" fn batch_task(b: *mut c_void, i: usize) {
    // SAFETY: `b` is the `Batch` of `run_on`, alive until its job is done.
    let b = unsafe { &*(b as *const Batch) };
    // SAFETY: the caller's contract for every index below its n.
    unsafe { (b.task)(b.arg, b.base + i) }
}

fn run_on(s: &Shared, n: usize, task: TaskFn, arg: *mut c_void) {
    if n == 0 {
        return;
    }
    // No workers, one index, or another job running (the pool shared by several
    // callers): run here.
    if s.threads < 2
        || n == 1
        || s.busy
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
    {
        for i in 0..n {
            // SAFETY: `parallel_for`'s contract.
            unsafe { task(arg, i) };
        }
        return;
    }
    if n <= MAX_N {
        run_job(s, n, task, arg);
    } else {
        let mut b = Batch { task, arg, base: 0 };
        while b.base < n {
            let k = (n - b.base).min(MAX_N);
            run_job(s, k, batch_task, (&raw mut b).cast::<c_void>());
            b.base += k;
        }
    }
    s.busy.store(false, Ordering::Release);
}

/// Publishes the job (`n <= MAX_N`), takes the caller's share, waits for the rest.
fn run_job(s: &Shared, n: usize, task: TaskFn, arg: *mut c_void) {
    s.task.store(task as *mut (), Ordering::Relaxed);
    s.arg.store(arg, Ordering::Relaxed);
    s.done.store(0, Ordering::Relaxed);
    let epoch = ((s.word.load(Ordering::Relaxed) >> 32) + 1) & 0xffff_ffff;
    s.word
        .store(epoch << 32 | (n as u64) << 26, Ordering::SeqCst);
    if s.sleepers.load(Ordering::SeqCst) > 0 {
        let _g = s.lock.lock().unwrap_or_else(|e| e.into_inner());
        s.wake.notify_all();
    }
    share(s, epoch, n, 0);
    let mut spins = 0u32;
    while s.done.load(Ordering::Acquire) < n {
        // A worker may have been descheduled with an index: yield now and then.
        spins = spins.wrapping_add(1);
        if spins.is_multiple_of(4096) {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
}

/// Thread `id`'s share of the job of `epoch` (`n` indices), then whatever is left.
fn share(s: &Shared, epoch: u64, n: usize, id: usize) {
    let own = (id..n).step_by(s.threads.max(1));
    for i in own.chain((0..n).rev()) {
        if !take(s, epoch, i) {
            return;
        }
    }
}

/// Tries to take index `i` of the job of `epoch` and runs it; false once that job is
/// no longer the published one.
fn take(s: &Shared, epoch: u64, i: usize) -> bool {
    let bit = 1u64 << i;
    let mut w = s.word.load(Ordering::Acquire);
    loop {
        if w >> 32 != epoch {
            return false;
        }
        if w & bit != 0 {
            return true;
        }
        let task = s.task.load(Ordering::Relaxed);
        let arg = s.arg.load(Ordering::Relaxed);
        match s
            .word
            .compare_exchange_weak(w, w | bit, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {
                // The word was unchanged since before task and argument were read: the
                // job was the published one then, so they are its own (stored from a
                // `TaskFn`), alive until its caller sees `done` reach `n`.
                let task = unsafe { std::mem::transmute::<*mut (), TaskFn>(task) };
                // SAFETY: index `i < n` of the job, which its caller allows on any
                // thread.
                unsafe { task(arg, i) };
                s.done.fetch_add(1, Ordering::Release);
                return true;
            }
            Err(now) => w = now,
        }
    }
}

fn worker(s: &Shared, id: usize) {
    let mut seen = 0u64;
    loop {
        // Wait for a new epoch: spin, then sleep.
        let mut start = Instant::now();
        let mut spins = 0u32;
        let w = loop {
            let w = s.word.load(Ordering::Acquire);
            if s.shutdown.load(Ordering::Acquire) {
                return;
            }
            if w >> 32 != seen {
                break w;
            }
            spins = spins.wrapping_add(1);
            if !spins.is_multiple_of(256) {
                std::hint::spin_loop();
                continue;
            }
            if start.elapsed() < SPIN {
                // Let another thread of this CPU run (the caller, on a busy machine).
                if spins.is_multiple_of(4096) {
                    std::thread::yield_now();
                }
                continue;
            }
            let g = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.sleepers.fetch_add(1, Ordering::SeqCst);
            if s.word.load(Ordering::SeqCst) >> 32 == seen && !s.shutdown.load(Ordering::SeqCst) {
                drop(s.wake.wait(g).unwrap_or_else(|e| e.into_inner()));
            } else {
                drop(g);
            }
            s.sleepers.fetch_sub(1, Ordering::SeqCst);
            start = Instant::now();
        };
        seen = w >> 32;
        share(s, seen, ((w >> 26) & 0x3f) as usize, id);
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        {
            let _g = self.shared.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    /// Every index runs exactly once, for pools of 1..8 threads and counts up to 300,
    /// many jobs in a row (the epochs), and from several callers sharing one pool.
    #[test]
    fn every_index_once() {
        for threads in 1..=8 {
            let pool = ThreadPool::new(threads);
            for n in [0usize, 1, 2, 3, 7, 8, 64, 300] {
                for _ in 0..20 {
                    let hits: Vec<AtomicU32> = (0..n).map(|_| AtomicU32::new(0)).collect();
                    pool.parallel_for(n, &|i| {
                        hits[i].fetch_add(1, Ordering::Relaxed);
                    });
                    assert!(
                        hits.iter().all(|h| h.load(Ordering::Relaxed) == 1),
                        "{threads} {n}"
                    );
                }
            }
        }
        let pool = Arc::new(ThreadPool::new(3));
        let callers: Vec<_> = (0..4)
            .map(|_| {
                let p = Arc::clone(&pool);
                std::thread::spawn(move || {
                    for n in 0..200usize {
                        let sum = AtomicUsize::new(0);
                        p.parallel_for(n % 9, &|i| {
                            sum.fetch_add(i + 1, Ordering::Relaxed);
                        });
                        let k = n % 9;
                        assert_eq!(sum.load(Ordering::Relaxed), k * (k + 1) / 2);
                    }
                })
            })
            .collect();
        for c in callers {
            c.join().unwrap();
        }
    }

    /// Workers that fell asleep wake for the next job.
    #[test]
    fn sleeping_workers_wake() {
        let pool = ThreadPool::new(2);
        std::thread::sleep(SPIN * 4);
        let seen = Mutex::new(std::collections::HashSet::new());
        for _ in 0..50 {
            pool.parallel_for(2, &|_| {
                seen.lock().unwrap().insert(std::thread::current().id());
                std::thread::sleep(Duration::from_millis(1));
            });
        }
        assert_eq!(seen.lock().unwrap().len(), 2, "the worker never ran a task");
    }
}
