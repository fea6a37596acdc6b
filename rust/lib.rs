//! vitfree's verification core: the throughput-critical half of face-recognition evaluation.
//!
//! Modules, one per concern, all plain Rust (no pyo3) so that `cargo test` needs no Python:
//! - [`aggregate`]: IJB-B/C image features -> L2-normalised template features.
//! - [`score`]: cosine scores of template pairs, addressed by template id.
//! - [`roc`]: ROC curve identical to scikit-learn's `roc_curve`, and TAR@FAR picks.
//! - [`sweep`]: counts of genuine/impostor pairs below a grid of distance thresholds (k-fold accuracy).
//! - [`pool`]: the rayon thread pool, rebuilt after a fork.
//!
//! Design notes (choices made, and rejected):
//! - **Determinism.** Every reduction has a fixed order that does not depend on the number of
//!   threads: a template is aggregated by one task, each media's images summed in row order and
//!   the media means added in media-id order (the images of a template are read in row order,
//!   into one sum per media: memory order lets the CPU prefetch them); a pair is
//!   scored by one task with a fixed 32-lane accumulation (the same for every pair order, tiling
//!   and kernel width); the ROC is built from exact integer counts. So results are bit-identical
//!   for 1 or N threads. (Rejected: parallel reductions over images with rayon's `sum`, whose
//!   split points vary with the thread count.)
//! - **Accumulation.** Template sums are accumulated in f64 (the community code sums into a
//!   float64 array too) and returned as f32; pair dot products run in f32 with 32 independent
//!   lanes (lane k sums elements k, k + 32, ..., a multiply then an add, never fused), reduced
//!   by a fixed pairwise tree; the error is far below float32 resolution of a cosine. (Rejected:
//!   f64 dot products, half the SIMD width for no visible gain.)
//! - **No copies, no pair x dim matrix.** Kernels read the caller's numpy buffers in place
//!   (0/1 int8 labels are viewed as uint8, not copied); pair scoring needs two buffers of 4
//!   bytes a pair (the output and one scratch).
//! - **ROC without a joint sort.** Impostor scores (the bulk) are mapped to order-preserving
//!   integer keys and counted per bucket of their top bits (2^11 buckets; 2^16 from 2^20
//!   scores on, so that the highest scores spread over many buckets), scattered into groups of
//!   consecutive buckets of at most ~32k keys and radix-sorted group by group in cache, in
//!   parallel; genuine scores are sorted apart; each group's ROC points come from one walk with
//!   sklearn's `drop_intermediate` applied as they stream by (no raw points stored), the two
//!   ends of each group decided against its neighbours' afterwards. TAR@FAR needs only the
//!   beginning of the curve, so it sorts only the groups above the largest target FAR, and
//!   returns its picks without building the curve's arrays. (Rejected: a comparison sort of all
//!   (score, label) pairs, 5x slower at 15.7M pairs; a k-way merge of sorted chunks, whose
//!   merge walk was the bottleneck; 2048 buckets for the prefix, where the top 10% of IJB-C's
//!   impostor scores fell into six buckets of up to 630k keys, each sorted and walked by one
//!   thread.)
//! - **Pair order does not matter (issue 11).** From 1,024 pairs on, [`score`] sorts the pairs
//!   into tiles of the template matrix and scores tile by tile, so the cost depends on the set
//!   of pairs, not on their order (IJB-C size: sorted and shuffled within ~10%). A pair is
//!   oriented (smaller row first: `dot(a, b)` and `dot(b, a)` are the same bits), which doubles
//!   the pairs per row in a tile. A tile is (a block of first rows, ~2 MB, streamed from the L3
//!   in row order, each row read once for all its pairs in the tile) x (a block of second rows,
//!   256 kB, kept in the core's L2). Four passes: (1) per input chunk: ids to rows, a 32-bit key
//!   (bucket, offsets) stored in the output buffer, bucket histograms (with AVX-512 eight pairs
//!   at a time: the two table lookups as gathers, the key as vector arithmetic; 60 -> 35 ms at
//!   IJB-C size); (2) a stable counting-sort
//!   scatter into ~500 buckets (first block x group of 8 second blocks); (3) per bucket, in
//!   cache: a counting sort by (second block, first row), then kernels that score up to 8 pairs
//!   sharing a first row per call (that row's elements loaded once; with one pair alone the
//!   32-lane additions wait on each other), scores written over the bucket's entries; (4) per
//!   input chunk, scores gathered back into input order (the mirror of 2). Profile of the old
//!   code (one thread, phases timed with `Instant`; 2.7 s shuffled vs 1.4 s sorted): of the
//!   1.3 s gap, ~0.65 s was the scatter of each score to a random slot of the 62 MB output (a
//!   write miss per pair; timed by redirecting the writes), ~0.3 s the loss of `dot2` (a shared
//!   first row read once for two pairs, almost never adjacent in shuffled order), the rest cache
//!   misses on rows within 2 MB x 2 MB tiles; the grouping passes (histogram, a 188 MB
//!   (index, row, row) scatter, faulted in on each call) were ~0.35 s in both orders. Profile
//!   now (perf, IJB-C size, both threads): the kernels are ~60% of the CPU time, at ~32 ns per
//!   pair and core, near what a microbenchmark of the same kernel reaches with its second rows
//!   in L2 (~22-27 ns; ~13-20 ns with them in L1): 32 multiplies, 32 adds and 32 loads of 64
//!   bytes per pair. Loads that straddle two cache lines cost ~1.3x, hence the 64-byte-aligned
//!   template matrix of [`aggregate`]. (Rejected: scores written to `out[i]` straight from the
//!   tiles, random writes; one global scatter into ~2,000 tiles, slower through TLB and cache
//!   misses than 500 buckets plus an in-cache sort; 512 kB or larger second blocks and first
//!   blocks of 1 MB or 512 kB, no gain measured; software prefetch of the next rows, slower;
//!   caching the scratch buffer across calls, memory held after the call; an aligned copy of an
//!   unaligned template matrix in [`score`], whose 47 MB of fresh memory cost what the aligned
//!   loads saved; a rank bitmap instead of the 16-bit row table, no gain measured.)
//! - **Fresh memory.** Large buffers (the score output and scratch, template features, ROC keys)
//!   are allocated zeroed and marked `MADV_HUGEPAGE` before their first touch
//!   ([`pool::zeroed_vec`]): faulting 63 MB in 4 KiB pages cost ~60 ms of system time per
//!   `score_pairs` call at IJB-C size, in 2 MiB pages ~15 ms.
//! - **Threads.** A process-wide rayon pool of our own, rebuilt when the process id changes, so a
//!   forked torch DataLoader worker never waits on threads that did not survive the fork.
//! - **Errors.** One [`error::Error`] enum with a variant per kind of bad input, carrying
//!   argument names, sizes, indices and values as fields; tests match variants, and `Display`
//!   is the message Python users see. The bindings build the same enum for their own checks
//!   (contiguity, dtype, shape), map it onto ValueError, TypeError (dtype/type kinds) or
//!   RuntimeError ([`error::Error::Internal`]), and catch panics, so none reaches Python.
//!   (Rejected: one `Value(String)` variant, which left tests matching message text.)
//! - **One binding per function.** Float arguments arrive as any numpy array and are borrowed
//!   as float32 or float64, then dispatched to the same generic kernel, so there are no `_f32` /
//!   `_f64` binding copies and no casts. (Rejected: pyo3 overloading by trying each typed
//!   extraction in turn, whose failure message names only the last attempt.)
pub mod aggregate;
pub mod error;
pub mod pool;
pub mod roc;
pub mod score;
pub mod sweep;

#[cfg(feature = "python")]
mod python;
