//! The thread pool used by every kernel.
//!
//! A fork (torch DataLoader workers, multiprocessing) copies the address space but not the
//! threads, so a global rayon pool created before the fork would hang in the child. We keep our
//! own pool tagged with the process id that built it and rebuild it when the id changes.
use std::sync::{Arc, Mutex};

use rayon::{ThreadPool, ThreadPoolBuilder};

struct PoolState {
    pid: u32,
    threads: usize,
    pool: Arc<ThreadPool>,
}

static POOL: Mutex<Option<PoolState>> = Mutex::new(None);
static REQUESTED: Mutex<usize> = Mutex::new(0);

fn default_threads() -> usize {
    if let Some(n) = std::env::var("VITFREE_NUM_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
    {
        return n;
    }
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Number of threads the kernels use (0 requested = the default: `VITFREE_NUM_THREADS` or all cores).
pub fn num_threads() -> usize {
    let requested = *REQUESTED.lock().unwrap_or_else(|e| e.into_inner());
    if requested > 0 {
        requested
    } else {
        default_threads()
    }
}

/// Set the number of threads (0 restores the default). Takes effect on the next kernel call.
pub fn set_num_threads(n: usize) {
    *REQUESTED.lock().unwrap_or_else(|e| e.into_inner()) = n;
}

/// The pool for this process, (re)built when the process id or the thread count changed.
pub fn pool() -> Arc<ThreadPool> {
    let threads = num_threads();
    let pid = std::process::id();
    let mut guard = POOL.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(state) = guard.take() {
        if state.pid == pid && state.threads == threads {
            let pool = Arc::clone(&state.pool);
            *guard = Some(state);
            return pool;
        }
        if state.pid != pid {
            // Forked: the pool's threads did not survive, and its locks may be in any state.
            // Dropping it would signal those threads through that state; leak it instead.
            std::mem::forget(state);
        }
    }
    let pool = Arc::new(
        ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("vitfree-{i}"))
            .build()
            .expect("failed to start the vitfree thread pool"),
    );
    *guard = Some(PoolState {
        pid,
        threads,
        pool: Arc::clone(&pool),
    });
    pool
}

/// Run `f` inside the vitfree pool.
pub fn install<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    pool().install(f)
}

/// A raw pointer that parallel tasks share to write disjoint elements of one output buffer
/// (scatter passes, where each task's slots come from exact prefix counts).
#[derive(Clone, Copy)]
pub(crate) struct SharedOut<T>(pub(crate) *mut T);
// SAFETY: only used where every element is written by exactly one task (see call sites).
unsafe impl<T> Send for SharedOut<T> {}
unsafe impl<T> Sync for SharedOut<T> {}

impl<T> SharedOut<T> {
    /// The pointer (a method, so closures capture the whole `Sync` wrapper, not the field).
    #[inline(always)]
    pub(crate) fn get(&self) -> *mut T {
        self.0
    }
}

/// A zeroed vector of `n` elements whose pages the kernel may back with transparent huge pages.
///
/// Large buffers are mapped fresh by the allocator on every call, and touching their pages one
/// 4 KiB fault at a time costs more than the work done in them (~30k faults for the 63 MB of
/// one IJB-C score array). The vector is allocated zeroed (the allocator maps zero pages and
/// does not touch them), then its 2 MiB-aligned interior is marked `MADV_HUGEPAGE`, so its
/// first touch faults in 2 MiB at a time where the system allows it (`enabled` = `always` or
/// `madvise`); elsewhere this is a plain zeroed vector. The vector is an ordinary `Vec`. (numpy
/// marks its own large arrays the same way.)
pub(crate) fn zeroed_vec<T: Copy + Default>(n: usize) -> Vec<T> {
    // calloc (for element alignments up to 16): fresh zero pages that nothing has touched yet
    let v = vec![T::default(); n];
    advise_huge(v.as_ptr() as *const u8, std::mem::size_of_val(v.as_slice()));
    v
}

#[cfg(target_os = "linux")]
fn advise_huge(ptr: *const u8, len: usize) {
    const HUGE: usize = 2 << 20;
    let start = (ptr as usize).next_multiple_of(HUGE);
    let end = (ptr as usize + len) / HUGE * HUGE;
    if end > start {
        // SAFETY: the range lies inside the live allocation `ptr..ptr + len`; MADV_HUGEPAGE is
        // a hint that does not change its contents. A refusal (no THP) is harmless.
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_huge(_ptr: *const u8, _len: usize) {}
