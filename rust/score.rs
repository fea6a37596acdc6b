//! Cosine scores of template pairs (docs/protocols.md §3): the dot product of unit template vectors.
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::pool::{self, SharedOut};

/// Pairs scored per task in input order; small enough to balance, large enough to amortise
/// scheduling.
const CHUNK: usize = 1 << 14;

/// Maps template ids to rows: a dense table when the ids are compact (16-bit rows below 65535
/// templates, so that more of it stays in cache), binary search otherwise.
pub enum IdIndex<'a> {
    Dense { min: i64, rows: Vec<u32> },
    Dense16 { min: i64, rows: Vec<u16> },
    Sorted(&'a [i64]),
}

impl<'a> IdIndex<'a> {
    /// `ids` must be sorted ascending and unique.
    pub fn new(ids: &'a [i64]) -> Self {
        if let (Some(&min), Some(&max)) = (ids.first(), ids.last()) {
            let span = (max as i128 - min as i128 + 1) as u128;
            // A table of up to 16 slots per template (and 64M at most) beats binary search.
            if span <= (16 * ids.len() as u128).max(1 << 16) && span <= 1 << 26 {
                if ids.len() < u16::MAX as usize {
                    // one slot past the span: a 4-byte gather of the last slot stays inside
                    let mut rows = vec![u16::MAX; span as usize + 1];
                    for (i, &id) in ids.iter().enumerate() {
                        rows[(id - min) as usize] = i as u16;
                    }
                    return IdIndex::Dense16 { min, rows };
                }
                let mut rows = vec![u32::MAX; span as usize];
                for (i, &id) in ids.iter().enumerate() {
                    rows[(id - min) as usize] = i as u32;
                }
                return IdIndex::Dense { min, rows };
            }
        }
        IdIndex::Sorted(ids)
    }

    #[inline]
    pub fn row(&self, id: i64) -> Option<usize> {
        match self {
            IdIndex::Dense { min, rows } => match rows.get(id.wrapping_sub(*min) as u64 as usize) {
                // ids below `min` wrap to offsets far beyond the table
                Some(&r) if r != u32::MAX && id >= *min => Some(r as usize),
                _ => None,
            },
            IdIndex::Dense16 { min, rows } => match rows.get(id.wrapping_sub(*min) as u64 as usize)
            {
                Some(&r) if r != u16::MAX && id >= *min => Some(r as usize),
                _ => None,
            },
            IdIndex::Sorted(ids) => ids.binary_search(&id).ok(),
        }
    }

    /// The rows of `ids` into `rows` (`u32::MAX` for an id without one), as one tight loop per
    /// kind of index so that the table reads of many ids overlap; true when every id has a row.
    fn rows_of(&self, ids: &[i64], rows: &mut [u32]) -> bool {
        fn dense<T: Copy + Into<u32>>(
            min: i64,
            table: &[T],
            none: T,
            ids: &[i64],
            rows: &mut [u32],
        ) -> bool {
            let none = none.into();
            let mut all = true;
            for (r, &id) in rows.iter_mut().zip(ids) {
                // ids below `min` wrap to offsets beyond the table (checked too, for 32-bit usize)
                let off = id.wrapping_sub(min) as u64 as usize;
                let row = match table.get(off) {
                    Some(&t) if id >= min => t.into(),
                    _ => none,
                };
                *r = if row == none { u32::MAX } else { row };
                all &= row != none;
            }
            all
        }
        match self {
            IdIndex::Dense { min, rows: table } => dense(*min, table, u32::MAX, ids, rows),
            IdIndex::Dense16 { min, rows: table } => dense(*min, table, u16::MAX, ids, rows),
            IdIndex::Sorted(_) => {
                let mut all = true;
                for (r, &id) in rows.iter_mut().zip(ids) {
                    *r = self.row(id).map_or(u32::MAX, |x| x as u32);
                    all &= *r != u32::MAX;
                }
                all
            }
        }
    }
}

/// Independent partial sums of [`dot`]: lane `k` accumulates elements `k, k + LANES, ...`.
pub const LANES: usize = 32;

/// Reduce the lanes (pairwise tree, fixed order) and add the tail elements to their lanes first.
#[inline(always)]
fn finish(mut acc: [f32; LANES], a: &[f32], b: &[f32], start: usize) -> f32 {
    for (k, (x, y)) in a[start..].iter().zip(&b[start..]).enumerate() {
        acc[k] += x * y;
    }
    let mut width = LANES / 2;
    while width > 0 {
        for k in 0..width {
            acc[k] += acc[k + width];
        }
        width /= 2;
    }
    acc[0]
}

/// Portable reference: the arithmetic every SIMD path reproduces exactly (lane-wise mul then
/// add, no fused multiply-add), so scores do not depend on the CPU's vector width.
pub fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let m = n - n % LANES;
    let mut acc = [0f32; LANES];
    for i in (0..m).step_by(LANES) {
        for k in 0..LANES {
            acc[k] += a[i + k] * b[i + k];
        }
    }
    finish(acc, &a[..n], &b[..n], m)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn dot_avx(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let m = n - n % LANES;
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut s = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i < m {
        for (r, acc) in s.iter_mut().enumerate() {
            let x = _mm256_loadu_ps(pa.add(i + 8 * r));
            let y = _mm256_loadu_ps(pb.add(i + 8 * r));
            *acc = _mm256_add_ps(*acc, _mm256_mul_ps(x, y));
        }
        i += LANES;
    }
    let mut acc = [0f32; LANES];
    for (r, v) in s.iter().enumerate() {
        _mm256_storeu_ps(acc.as_mut_ptr().add(8 * r), *v);
    }
    finish(acc, &a[..n], &b[..n], m)
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn dot_sse(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let m = n - n % LANES;
    let mut acc = [0f32; LANES];
    // SAFETY: SSE is part of the x86_64 baseline; loads stay below `m <= len`.
    unsafe {
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut s = [_mm_setzero_ps(); 8];
        let mut i = 0;
        while i < m {
            for (r, v) in s.iter_mut().enumerate() {
                let x = _mm_loadu_ps(pa.add(i + 4 * r));
                let y = _mm_loadu_ps(pb.add(i + 4 * r));
                *v = _mm_add_ps(*v, _mm_mul_ps(x, y));
            }
            i += LANES;
        }
        for (r, v) in s.iter().enumerate() {
            _mm_storeu_ps(acc.as_mut_ptr().add(4 * r), *v);
        }
    }
    finish(acc, &a[..n], &b[..n], m)
}

/// Dot product of two f32 vectors with [`LANES`] partial sums; identical on every CPU.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx") {
            // SAFETY: AVX is available (checked above).
            return unsafe { dot_avx(a, b) };
        }
        dot_sse(a, b)
    }
    #[cfg(not(target_arch = "x86_64"))]
    dot_portable(a, b)
}

#[inline(always)]
fn score_chunk(
    feats: &[f32],
    dim: usize,
    index: &IdIndex<'_>,
    p1: &[i64],
    p2: &[i64],
    out: &mut [f32],
) -> std::result::Result<(), usize> {
    for (k, ((&a, &b), o)) in p1.iter().zip(p2).zip(out.iter_mut()).enumerate() {
        let (ra, rb) = match (index.row(a), index.row(b)) {
            (Some(ra), Some(rb)) => (ra, rb),
            _ => return Err(k),
        };
        *o = dot(
            &feats[ra * dim..(ra + 1) * dim],
            &feats[rb * dim..(rb + 1) * dim],
        );
    }
    Ok(())
}

/// Whether every value of `row` is finite: a branch-free scan of the exponent bits, which the
/// compiler vectorises (a NaN/inf float has all exponent bits set).
#[inline]
fn row_is_finite(row: &[f32]) -> bool {
    const EXP: u32 = 0x7f80_0000;
    let mut bad = false;
    for x in row {
        bad |= x.to_bits() & EXP == EXP;
    }
    !bad
}

/// Template rows checked per task by [`first_non_finite_row`].
const CHECK_ROWS: usize = 1024;

/// The first row of the row-major (n, dim) `feats` that holds NaN or inf, if any.
fn first_non_finite_row(feats: &[f32], dim: usize) -> Option<usize> {
    feats
        .par_chunks(dim * CHECK_ROWS)
        .enumerate()
        .filter_map(|(c, block)| {
            block
                .chunks(dim)
                .position(|row| !row_is_finite(row))
                .map(|k| c * CHECK_ROWS + k)
        })
        .min()
}

/// Below this many pairs, pairs are scored in input order (sorting would cost more than it saves).
const MIN_SORTED: usize = 1 << 10;
/// Bytes of template rows in a block of first rows: a block is read from the L3 once per tile.
const A_BYTES: usize = 2 << 20;
/// Bytes of template rows in a tile's block of second rows: it stays in a core's L2.
const B_BYTES: usize = 256 << 10;
/// Second-row blocks per group (a group is the second side of a bucket of the global sort).
const GROUP_SHIFT: u32 = 3;
/// At most 2^14 rows per block, so that a pair's two offsets in its bucket pack into 32 bits.
const MAX_BLOCK_SHIFT: u32 = 14;
/// Buckets of the global sort above which blocks grow (histograms stay small).
const MAX_BUCKETS: usize = 1 << 12;
/// Pairs per task of the passes over the input.
const SORT_CHUNK: usize = 1 << 16;
/// Ids looked up per loop of [`IdIndex::rows_of`].
const LOOKUP_BLOCK: usize = 256;
/// Pairs per task of the scoring pass at most (a larger bucket is split).
const MAX_TASK: usize = 1 << 18;

/// Tile geometry of [`score_sorted`]. A pair is oriented so that its first row is the smaller
/// one (a dot product does not depend on the order of its operands, bit for bit), which gives
/// each row twice as many pairs per tile as a fixed orientation would. First rows are grouped
/// in blocks of `1 << sa` rows, second rows in blocks of `1 << sb` rows and groups of
/// `1 << sg`; a tile is (first block, second block), a bucket (first block, second group).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tiles {
    sa: u32,
    sb: u32,
    sg: u32,
}

impl Tiles {
    /// Blocks of about [`A_BYTES`] and [`B_BYTES`] for `n_templates` rows of `dim` floats.
    fn new(n_templates: usize, dim: usize) -> Self {
        let row = dim * 4;
        let shift = |bytes: usize| (bytes / row).clamp(1, 1 << MAX_BLOCK_SHIFT).ilog2();
        let sb = shift(B_BYTES);
        let mut t = Tiles {
            sa: shift(A_BYTES).max(sb),
            sb,
            sg: sb + GROUP_SHIFT,
        };
        while t.buckets(n_templates) > MAX_BUCKETS && t.sa + t.sg + 2 <= 32 {
            t.sa += 1;
            t.sg += 1;
        }
        t
    }

    fn groups(&self, n_templates: usize) -> usize {
        ((n_templates.max(1) - 1) >> self.sg) + 1
    }

    fn buckets(&self, n_templates: usize) -> usize {
        (((n_templates.max(1) - 1) >> self.sa) + 1) * self.groups(n_templates)
    }
}

/// The SIMD kernels of this CPU, detected once per call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
enum Simd {
    Avx512,
    Avx,
    Base,
}

impl Simd {
    fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Simd::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx") {
                return Simd::Avx;
            }
        }
        Simd::Base
    }
}

/// Widths 4, 2, 1 of the lane tree of [`finish`], on `w8[k] = acc[k] + acc[k + 8]` (k < 8).
///
/// The helpers below are `inline(always)` without a target feature: they are only called from
/// functions that enable AVX (or AVX-512F), into which they are inlined with their intrinsics.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn reduce8(w8: std::arch::x86_64::__m256) -> f32 {
    use std::arch::x86_64::*;
    let w4 = _mm_add_ps(_mm256_castps256_ps128(w8), _mm256_extractf128_ps(w8, 1));
    let w2 = _mm_add_ps(w4, _mm_movehl_ps(w4, w4));
    let w1 = _mm_add_ss(w2, _mm_shuffle_ps(w2, w2, 1));
    _mm_cvtss_f32(w1)
}

/// `K` dot products of `a` with the rows `b` (all of `a`'s length), each bit-identical to
/// [`dot`]: lane `k` sums elements `k, k + 32, ...` of the products, a multiply then an add,
/// then the same tail and lane tree. Each element of `a` is loaded once for all `K`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn dots_avx<const K: usize>(a: &[f32], b: [&[f32]; K]) -> [f32; K] {
    use std::arch::x86_64::*;
    let n = a.len();
    let m = n - n % LANES;
    let pa = a.as_ptr();
    let mut pb = [pa; K];
    for (p, b) in pb.iter_mut().zip(&b) {
        assert_eq!(b.len(), n);
        *p = b.as_ptr();
    }
    // s[r][j]: lanes 8r..8r + 8 of pair j
    let mut s = [[_mm256_setzero_ps(); K]; 4];
    let mut i = 0;
    while i < m {
        for (r, sr) in s.iter_mut().enumerate() {
            let x = _mm256_loadu_ps(pa.add(i + 8 * r));
            for (acc, p) in sr.iter_mut().zip(&pb) {
                let y = _mm256_loadu_ps(p.add(i + 8 * r));
                *acc = _mm256_add_ps(*acc, _mm256_mul_ps(x, y));
            }
        }
        i += LANES;
    }
    let mut out = [0f32; K];
    for (j, o) in out.iter_mut().enumerate() {
        let [s0, s1, s2, s3] = [s[0][j], s[1][j], s[2][j], s[3][j]];
        *o = if m == n {
            // width 16: lanes 0..8 (s0) += 16..24 (s2), lanes 8..16 (s1) += 24..32 (s3); width 8
            reduce8(_mm256_add_ps(_mm256_add_ps(s0, s2), _mm256_add_ps(s1, s3)))
        } else {
            let mut acc = [0f32; LANES];
            for (r, v) in [s0, s1, s2, s3].iter().enumerate() {
                _mm256_storeu_ps(acc.as_mut_ptr().add(8 * r), *v);
            }
            finish(acc, a, b[j], m)
        };
    }
    out
}

/// [`dots_avx`] with 16-lane vectors: lanes 0..16 in the first, 16..32 in the second.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn dots_avx512<const K: usize>(a: &[f32], b: [&[f32]; K]) -> [f32; K] {
    use std::arch::x86_64::*;
    let n = a.len();
    let m = n - n % LANES;
    let pa = a.as_ptr();
    let mut pb = [pa; K];
    for (p, b) in pb.iter_mut().zip(&b) {
        assert_eq!(b.len(), n);
        *p = b.as_ptr();
    }
    // s[r][j]: lanes 16r..16r + 16 of pair j
    let mut s = [[_mm512_setzero_ps(); K]; 2];
    let mut i = 0;
    while i < m {
        for (r, sr) in s.iter_mut().enumerate() {
            let x = _mm512_loadu_ps(pa.add(i + 16 * r));
            for (acc, p) in sr.iter_mut().zip(&pb) {
                let y = _mm512_loadu_ps(p.add(i + 16 * r));
                *acc = _mm512_add_ps(*acc, _mm512_mul_ps(x, y));
            }
        }
        i += LANES;
    }
    let mut out = [0f32; K];
    for (j, o) in out.iter_mut().enumerate() {
        *o = if m == n {
            // width 16, then width 8 on the two halves
            let w16 = _mm512_add_ps(s[0][j], s[1][j]);
            let lo = _mm512_castps512_ps256(w16);
            let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(w16), 1));
            reduce8(_mm256_add_ps(lo, hi))
        } else {
            let mut acc = [0f32; LANES];
            _mm512_storeu_ps(acc.as_mut_ptr(), s[0][j]);
            _mm512_storeu_ps(acc.as_mut_ptr().add(16), s[1][j]);
            finish(acc, a, b[j], m)
        };
    }
    out
}

/// Row `r` of the row-major `feats`.
#[inline(always)]
fn row(feats: &[f32], dim: usize, r: usize) -> &[f32] {
    &feats[r * dim..(r + 1) * dim]
}

/// A pair of a scoring task, sorted: its slot in the task and its second row.
type Entry = [u32; 2];

/// The runs of one scoring task: for `runs[r] = (first, end)`, the pairs
/// `pairs[runs[r - 1].1..end]` (from 0 for `r = 0`) share the first row `first`; the score of
/// pair `[slot, second]` goes to `scores[slot]`.
struct Runs<'a> {
    feats: &'a [f32],
    dim: usize,
    runs: &'a [(u32, u32)],
    pairs: &'a [Entry],
}

/// Scores [`Runs`] with the kernel `$kernel`: pairs that share a first row are scored `$wide` at
/// a time, reading that row once, and a shorter rest with the kernel of its exact length (two
/// or more pairs per call overlap the additions of different pairs; one pair alone waits on
/// each of its own).
macro_rules! score_runs_with {
    ($kernel:ident, $wide:literal, [$($k:literal),*], $runs:ident, $scores:ident) => {{
        let Runs { feats, dim, runs, pairs } = $runs;
        let mut start = 0;
        for &(first, end) in runs {
            let end = end as usize;
            let a = row(feats, dim, first as usize);
            let mut rest = &pairs[start..end];
            start = end;
            while rest.len() >= $wide {
                let mut b = [a; $wide];
                for (b, e) in b.iter_mut().zip(rest) {
                    *b = row(feats, dim, e[1] as usize);
                }
                for (e, v) in rest.iter().zip($kernel::<$wide>(a, b)) {
                    $scores[e[0] as usize] = v;
                }
                rest = &rest[$wide..];
            }
            match rest.len() {
                $($k => {
                    let mut b = [a; $k];
                    for (b, e) in b.iter_mut().zip(rest) {
                        *b = row(feats, dim, e[1] as usize);
                    }
                    for (e, v) in rest.iter().zip($kernel::<$k>(a, b)) {
                        $scores[e[0] as usize] = v;
                    }
                })*
                _ => {}
            }
        }
    }};
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn score_runs_avx512(runs: Runs<'_>, scores: &mut [f32]) {
    score_runs_with!(dots_avx512, 8, [1, 2, 3, 4, 5, 6, 7], runs, scores);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn score_runs_avx(runs: Runs<'_>, scores: &mut [f32]) {
    score_runs_with!(dots_avx, 3, [1, 2], runs, scores);
}

fn score_runs_base(runs: Runs<'_>, scores: &mut [f32]) {
    let Runs {
        feats,
        dim,
        runs,
        pairs,
    } = runs;
    let mut start = 0;
    for &(first, end) in runs {
        let end = end as usize;
        let a = row(feats, dim, first as usize);
        for e in &pairs[start..end] {
            scores[e[0] as usize] = dot(a, row(feats, dim, e[1] as usize));
        }
        start = end;
    }
}

fn score_runs(simd: Simd, runs: Runs<'_>, scores: &mut [f32]) {
    match simd {
        // SAFETY: the CPU has AVX-512F (`Simd::detect`).
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512 => unsafe { score_runs_avx512(runs, scores) },
        // SAFETY: the CPU has AVX (`Simd::detect`).
        #[cfg(target_arch = "x86_64")]
        Simd::Avx => unsafe { score_runs_avx(runs, scores) },
        _ => score_runs_base(runs, scores),
    }
}

/// Cosine score of each pair `(p1[i], p2[i])` of template ids; `feats` is row-major
/// (ids.len(), dim) with unit rows and `ids` sorted ascending and unique.
///
/// Every template row must be finite (a NaN/inf row would give NaN scores that a ROC cannot
/// rank): the first that is not is named by [`Error::NonFiniteTemplate`]. The check is one
/// parallel scan of the features, a few milliseconds at IJB-C size.
///
/// The cost does not depend on the order of the pairs: from 1,024 pairs on they are sorted into
/// cache-sized tiles of the template matrix (see `score_sorted`) and their scores written back
/// in input order. Each score is computed by the arithmetic of [`dot`], so the
/// result does not depend on the pair order, the tiling or the thread count.
pub fn score_pairs(
    feats: &[f32],
    ids: &[i64],
    dim: usize,
    p1: &[i64],
    p2: &[i64],
) -> Result<Vec<f32>> {
    let tiles = (p1.len() >= MIN_SORTED).then(|| Tiles::new(ids.len(), dim));
    score_pairs_with(feats, ids, dim, p1, p2, tiles)
}

/// [`score_pairs`] with the tiling given (None: input order).
fn score_pairs_with(
    feats: &[f32],
    ids: &[i64],
    dim: usize,
    p1: &[i64],
    p2: &[i64],
    tiles: Option<Tiles>,
) -> Result<Vec<f32>> {
    if dim == 0 || feats.len() != ids.len() * dim {
        return Err(Error::FeatureSize {
            arg: "template_feats",
            len: feats.len(),
            templates: ids.len(),
            dim,
        });
    }
    if let Some(w) = ids.windows(2).position(|w| w[0] >= w[1]) {
        return Err(Error::UnsortedIds {
            arg: "template_ids",
            position: w,
            first: ids[w],
            second: ids[w + 1],
        });
    }
    if p1.len() != p2.len() {
        return Err(Error::LengthMismatch {
            arg: "p1",
            len: p1.len(),
            unit: "pairs",
            other: "p2",
            other_len: p2.len(),
        });
    }
    for (what, count) in [("pairs", p1.len()), ("templates", ids.len())] {
        if count > u32::MAX as usize {
            return Err(Error::TooMany { what, count });
        }
    }
    pool::install(|| {
        if let Some(row) = first_non_finite_row(feats, dim) {
            return Err(Error::NonFiniteTemplate {
                arg: "template_feats",
                row,
                template: ids[row],
            });
        }
        let index = IdIndex::new(ids);
        let unknown = |i: usize| {
            let (side, template) = if index.row(p1[i]).is_none() {
                ("p1", p1[i])
            } else {
                ("p2", p2[i])
            };
            Error::UnknownTemplate {
                pair: i,
                side,
                template,
            }
        };
        let Some(tiles) = tiles else {
            let mut out = vec![0f32; p1.len()];
            let failures: Vec<usize> = out
                .par_chunks_mut(CHUNK)
                .enumerate()
                .filter_map(|(c, o)| {
                    let s = c * CHUNK;
                    let e = s + o.len();
                    score_chunk(feats, dim, &index, &p1[s..e], &p2[s..e], o)
                        .err()
                        .map(|k| s + k)
                })
                .collect();
            return match failures.iter().min() {
                Some(&i) => Err(unknown(i)),
                None => Ok(out),
            };
        };
        score_sorted(feats, dim, &index, p1, p2, tiles).map_err(unknown)
    })
}

/// Sort keys of the pairs: a pair's bucket and its two rows' offsets in that bucket.
struct Keys<'a> {
    index: &'a IdIndex<'a>,
    p1: &'a [i64],
    p2: &'a [i64],
    tiles: Tiles,
    groups: usize,
    /// Whether pass 1 stores the keys, packed in 32 bits (up to 65536 templates).
    stored: bool,
}

impl Keys<'_> {
    /// The bucket and packed offsets of the pair of rows `(a, b)`, oriented.
    #[inline(always)]
    fn key(&self, a: u32, b: u32) -> (usize, u32) {
        let Tiles { sa, sg, .. } = self.tiles;
        let (a, b) = (a.min(b), a.max(b));
        let bucket = (a >> sa) as usize * self.groups + (b >> sg) as usize;
        (bucket, (a & ((1 << sa) - 1)) << sg | (b & ((1 << sg) - 1)))
    }

    #[inline(always)]
    fn pack(&self, (bucket, local): (usize, u32)) -> u32 {
        ((bucket as u64) << (self.tiles.sa + self.tiles.sg) | local as u64) as u32
    }

    #[inline(always)]
    fn unpack(&self, k: u32) -> (usize, u32) {
        let bits = self.tiles.sa + self.tiles.sg;
        (
            (k as u64 >> bits) as usize,
            (k as u64 & ((1 << bits) - 1)) as u32,
        )
    }

    /// Calls `f(i, bucket, local)` for the pairs of `range` in order: from the keys stored by
    /// pass 1 (`stored` points at the key of pair `range.start`; the key of a pair is read
    /// before `f` is called for it, so `f` may overwrite it), or else by looking the ids up
    /// again (all known after pass 1), a block at a time.
    ///
    /// # Safety
    /// With `self.stored`, `stored` must be valid for reading `range.len()` keys.
    #[inline(always)]
    unsafe fn for_each(
        &self,
        range: std::ops::Range<usize>,
        stored: *const u32,
        mut f: impl FnMut(usize, usize, u32),
    ) {
        if self.stored {
            for (k, i) in range.enumerate() {
                let (bucket, local) = self.unpack(*stored.add(k));
                f(i, bucket, local);
            }
            return;
        }
        let (mut ra, mut rb) = ([0u32; LOOKUP_BLOCK], [0u32; LOOKUP_BLOCK]);
        for s in range.clone().step_by(LOOKUP_BLOCK) {
            let e = (s + LOOKUP_BLOCK).min(range.end);
            self.index.rows_of(&self.p1[s..e], &mut ra[..e - s]);
            self.index.rows_of(&self.p2[s..e], &mut rb[..e - s]);
            for k in 0..e - s {
                let (bucket, local) = self.key(ra[k], rb[k]);
                f(s + k, bucket, local);
            }
        }
    }
}

/// Pass 1 of [`score_sorted`] for the pairs `p1`, `p2` (both of `slots.len()` at least), eight
/// at a time with AVX-512: the two table lookups as gathers, the key as vector arithmetic, each
/// pair's packed key into `slots` and its bucket counted in `h`. Returns how many pairs (a
/// multiple of 8) it did, or None at a block holding an unknown id (the caller's scalar pass
/// then names the first one). Keys are those of [`Keys::key`] and [`Keys::pack`], exactly.
///
/// # Safety
/// The CPU has AVX-512F and AVX-512VL; `keys.stored` holds.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx2")]
unsafe fn keys_avx512(
    keys: &Keys<'_>,
    p1: &[i64],
    p2: &[i64],
    slots: &mut [u32],
    h: &mut [u32],
) -> Option<usize> {
    use std::arch::x86_64::*;
    // the table, its slot width and its "no template" value; Sorted has no table
    let (min, base, len, scale16) = match keys.index {
        IdIndex::Dense16 { min, rows } => (*min, rows.as_ptr() as *const u8, rows.len() - 1, true),
        IdIndex::Dense { min, rows } => (*min, rows.as_ptr() as *const u8, rows.len(), false),
        IdIndex::Sorted(_) => return Some(0),
    };
    let Tiles { sa, sg, .. } = keys.tiles;
    let n = p1.len().min(p2.len()).min(slots.len()) / 8 * 8;
    let vmin = _mm512_set1_epi64(min);
    let vlen = _mm512_set1_epi64(len as i64);
    let none = _mm256_set1_epi32(if scale16 { 0xffff } else { -1 });
    let all = _mm256_set1_epi32(-1);
    let (vsa, vsg) = (_mm_cvtsi32_si128(sa as i32), _mm_cvtsi32_si128(sg as i32));
    let vbits = _mm_cvtsi32_si128((sa + sg) as i32);
    let amask = _mm256_set1_epi32(((1u64 << sa) - 1) as i32);
    let gmask = _mm256_set1_epi32(((1u64 << sg) - 1) as i32);
    let groups = _mm256_set1_epi32(keys.groups as i32);
    let rows = |ids: *const i64| {
        let off = _mm512_sub_epi64(_mm512_loadu_si512(ids as *const _), vmin);
        // unsigned: ids below `min` wrap to huge offsets
        let inside = _mm512_cmplt_epu64_mask(off, vlen);
        let got = if scale16 {
            // 4 bytes at slot `off`: the slot in the low half (little-endian)
            _mm256_and_si256(
                _mm512_mask_i64gather_epi32::<2>(all, inside, off, base as _),
                none,
            )
        } else {
            _mm512_mask_i64gather_epi32::<4>(all, inside, off, base as _)
        };
        let got = _mm256_mask_mov_epi32(none, inside, got);
        (got, _mm256_cmpeq_epi32_mask(got, none))
    };
    let mut buckets = [0u32; 8];
    for i in (0..n).step_by(8) {
        let (ra, missing_a) = rows(p1.as_ptr().add(i));
        let (rb, missing_b) = rows(p2.as_ptr().add(i));
        if missing_a | missing_b != 0 {
            return None;
        }
        let a = _mm256_min_epu32(ra, rb);
        let b = _mm256_max_epu32(ra, rb);
        let bucket = _mm256_add_epi32(
            _mm256_mullo_epi32(_mm256_srl_epi32(a, vsa), groups),
            _mm256_srl_epi32(b, vsg),
        );
        let local = _mm256_or_si256(
            _mm256_sll_epi32(_mm256_and_si256(a, amask), vsg),
            _mm256_and_si256(b, gmask),
        );
        // a shift by 32 (one bucket) gives 0, as the 64-bit shift of `pack` truncated
        let key = _mm256_or_si256(_mm256_sll_epi32(bucket, vbits), local);
        _mm256_storeu_si256(slots.as_mut_ptr().add(i) as *mut __m256i, key);
        _mm256_storeu_si256(buckets.as_mut_ptr() as *mut __m256i, bucket);
        for &g in &buckets {
            h[g as usize] += 1;
        }
    }
    Some(n)
}

/// Per-thread buffers of the scoring pass.
#[derive(Default)]
struct Scratch {
    ends: Vec<u32>,
    keyed: Vec<(u64, Entry)>,
    runs: Vec<(u32, u32)>,
    pairs: Vec<Entry>,
}

/// Scoring in an order that depends on the pairs, not on their order in the input; on an
/// unknown id returns the smallest pair index that has one.
///
/// The pairs are sorted into tiles of (first rows, second rows) such that a tile's second rows
/// stay in a core's L2 while its first rows stream from the L3 in order, each read once for all
/// its pairs in the tile. Four passes, with two buffers of one `u32` per pair: `out` holds each
/// pair's key until its score replaces it, `buf` the pairs in bucket order, then their scores.
/// 1. Per chunk of the input: id check, keys (stored in `out` when they fit in 32 bits),
///    bucket histograms.
/// 2. Per chunk: each pair's offsets scattered into its bucket's range of `buf` (a stable
///    counting sort; in-chunk order kept).
/// 3. Per bucket: a counting sort by (second block, first row) in cache, the scores of each run
///    of pairs that share a first row, written over the bucket's range of `buf`.
/// 4. Per chunk: each pair's score gathered from `buf` into `out` (the mirror of pass 2).
fn score_sorted(
    feats: &[f32],
    dim: usize,
    index: &IdIndex<'_>,
    p1: &[i64],
    p2: &[i64],
    tiles: Tiles,
) -> std::result::Result<Vec<f32>, usize> {
    let n_templates = feats.len() / dim;
    let Tiles { sa, sb, sg } = tiles;
    let n_buckets = tiles.buckets(n_templates);
    let keys = Keys {
        index,
        p1,
        p2,
        tiles,
        groups: tiles.groups(n_templates),
        stored: (n_buckets as u64) << (sa + sg) <= 1 << 32,
    };
    let n = p1.len();
    // chunks long enough that the per-chunk histograms stay below 4 bytes a pair
    let chunk_len = SORT_CHUNK.max(n_buckets * 16);
    let chunk = |c: usize| c * chunk_len..((c + 1) * chunk_len).min(n);
    let mut out = pool::zeroed_vec::<u32>(n);

    // pass 1
    #[cfg(target_arch = "x86_64")]
    let fast = keys.stored
        && std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512vl");
    let hists: Vec<std::result::Result<Vec<u32>, usize>> = out
        .par_chunks_mut(chunk_len)
        .enumerate()
        .map(|(c, slots)| {
            let mut h = vec![0u32; n_buckets];
            let (mut ra, mut rb) = ([0u32; LOOKUP_BLOCK], [0u32; LOOKUP_BLOCK]);
            let range = chunk(c);
            #[allow(unused_mut)] // only the AVX-512 pass sets it
            let mut done = 0;
            #[cfg(target_arch = "x86_64")]
            if fast {
                let (a, b) = (&p1[range.clone()], &p2[range.clone()]);
                // SAFETY: `fast` checked AVX-512F/VL and `keys.stored`.
                match unsafe { keys_avx512(&keys, a, b, slots, &mut h) } {
                    Some(n) => done = n,
                    // an unknown id: the scalar pass below names the first one
                    None => h.iter_mut().for_each(|c| *c = 0),
                }
            }
            for s in (range.start + done..range.end).step_by(LOOKUP_BLOCK) {
                let e = (s + LOOKUP_BLOCK).min(range.end);
                let known = index.rows_of(&p1[s..e], &mut ra[..e - s])
                    & index.rows_of(&p2[s..e], &mut rb[..e - s]);
                if !known {
                    let k = (0..e - s).find(|&k| ra[k] == u32::MAX || rb[k] == u32::MAX);
                    return Err(s + k.unwrap_or(0));
                }
                for (k, slot) in slots[s - range.start..e - range.start]
                    .iter_mut()
                    .enumerate()
                {
                    let key = keys.key(ra[k], rb[k]);
                    h[key.0] += 1;
                    if keys.stored {
                        *slot = keys.pack(key);
                    }
                }
            }
            Ok(h)
        })
        .collect();
    // the first failing chunk holds the smallest failing pair
    let mut cursors = hists
        .into_iter()
        .collect::<std::result::Result<Vec<_>, usize>>()?;
    // bucket-major, then chunk order: where each chunk starts in each bucket
    let mut bucket_start = vec![0usize; n_buckets + 1];
    let mut pos = 0usize;
    for (g, start) in bucket_start.iter_mut().enumerate().take(n_buckets) {
        *start = pos;
        for h in cursors.iter_mut() {
            let count = h[g] as usize;
            h[g] = pos as u32;
            pos += count;
        }
    }
    bucket_start[n_buckets] = pos;

    // pass 2
    let mut buf = pool::zeroed_vec::<u32>(n);
    let buf_ptr = SharedOut(buf.as_mut_ptr());
    cursors
        .par_iter()
        .zip(out.par_chunks(chunk_len))
        .enumerate()
        .for_each(|(c, (cursor, stored))| {
            let mut cursor = cursor.clone();
            let scatter = |_, bucket: usize, local| {
                // SAFETY: the cursors of (chunk, bucket) cover disjoint ranges of `buf`, built
                // from exact counts, so every slot is written by exactly one task, in bounds.
                unsafe { *buf_ptr.get().add(cursor[bucket] as usize) = local };
                cursor[bucket] += 1;
            };
            // SAFETY: `stored` is this chunk's part of `out`.
            unsafe { keys.for_each(chunk(c), stored.as_ptr(), scatter) };
        });

    // pass 3
    let mut tasks = Vec::new();
    for g in 0..n_buckets {
        let (s, e) = (bucket_start[g], bucket_start[g + 1]);
        let parts = (e - s).div_ceil(MAX_TASK);
        for p in 0..parts {
            tasks.push((g, s + (e - s) * p / parts, s + (e - s) * (p + 1) / parts));
        }
    }
    let simd = Simd::detect();
    tasks
        .into_par_iter()
        .for_each_init(Scratch::default, |scratch, (g, s, e)| {
            let first = (g / keys.groups) << sa;
            let second = (g % keys.groups) << sg;
            let n_first = (1usize << sa).min(n_templates - first);
            let n_blocks = (n_templates - second).min(1 << sg).div_ceil(1 << sb);
            let n_runs = n_blocks * n_first;
            // run of a pair: (second block, first row)
            let run = |local: u32| {
                let (a, b) = ((local >> sg) as usize, local as usize & ((1 << sg) - 1));
                ((b >> sb) * n_first + a, b)
            };
            let Scratch {
                ends,
                keyed,
                runs,
                pairs,
            } = scratch;
            let len = e - s;
            runs.clear();
            // SAFETY: this task alone accesses buf[s..e]; the slice is last used before the
            // scores are written there.
            let local = unsafe { std::slice::from_raw_parts(buf_ptr.get().add(s), len) };
            if n_runs <= 2 * len + 4096 {
                // a counting sort: a permutation, which writes every one of pairs[..len]
                ends.clear();
                ends.resize(n_runs + 1, 0);
                if pairs.len() < len {
                    pairs.resize(len, [0; 2]);
                }
                for &l in local {
                    ends[run(l).0 + 1] += 1;
                }
                for f in 0..n_runs {
                    ends[f + 1] += ends[f];
                }
                for (slot, &l) in local.iter().enumerate() {
                    let (f, b) = run(l);
                    pairs[ends[f] as usize] = [slot as u32, (second + b) as u32];
                    ends[f] += 1;
                }
                // ends[f] is now the end of run f
                let mut start = 0;
                for (f, &end) in ends[..n_runs].iter().enumerate() {
                    if end > start {
                        runs.push(((first + f % n_first) as u32, end));
                        start = end;
                    }
                }
            } else {
                // few pairs for many possible runs (huge blocks): a comparison sort
                pairs.clear();
                keyed.clear();
                keyed.extend(local.iter().enumerate().map(|(slot, &l)| {
                    let (f, b) = run(l);
                    (f as u64, [slot as u32, (second + b) as u32])
                }));
                keyed.sort_unstable_by_key(|&(f, [slot, _])| (f, slot));
                for (k, &(f, entry)) in keyed.iter().enumerate() {
                    let row = (first + f as usize % n_first) as u32;
                    match runs.last_mut() {
                        Some(last) if keyed[k - 1].0 == f => last.1 += 1,
                        _ => runs.push((row, k as u32 + 1)),
                    }
                    pairs.push(entry);
                }
            }
            let runs = Runs {
                feats,
                dim,
                runs,
                pairs: &pairs[..len],
            };
            // each score straight over its pair's key in the bucket's range (slots are distinct
            // and below len)
            // SAFETY: this task alone accesses buf[s..e], and `local` is no longer used; f32
            // and u32 have the same size and alignment.
            let scores =
                unsafe { std::slice::from_raw_parts_mut(buf_ptr.get().add(s) as *mut f32, len) };
            score_runs(simd, runs, scores);
        });

    // pass 4
    let out_ptr = SharedOut(out.as_mut_ptr());
    cursors
        .into_par_iter()
        .enumerate()
        .for_each(|(c, mut cursor)| {
            let range = chunk(c);
            let gather = |i, bucket: usize, _| {
                // SAFETY: reads the slot of `buf` that pass 2 gave pair `i` (now its score) and
                // writes out[i], in this task's chunk, after `for_each` has read its key.
                unsafe { *out_ptr.get().add(i) = *buf_ptr.get().add(cursor[bucket] as usize) };
                cursor[bucket] += 1;
            };
            // SAFETY: this task alone accesses out[range], through `out_ptr`.
            unsafe { keys.for_each(range.clone(), out_ptr.get().add(range.start), gather) };
        });
    drop(buf);
    // the slots of `out` now hold the scores' bits
    let mut out = std::mem::ManuallyDrop::new(out);
    // SAFETY: f32 and u32 have the same size and alignment; length and capacity are `out`'s.
    Ok(unsafe { Vec::from_raw_parts(out.as_mut_ptr() as *mut f32, out.len(), out.capacity()) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_scores() {
        // ids 10, 20, 30 with unit vectors (1,0), (0,1), (0.6,0.8)
        let feats = [1.0, 0.0, 0.0, 1.0, 0.6, 0.8];
        let ids = [10, 20, 30];
        let s = score_pairs(&feats, &ids, 2, &[10, 30, 20], &[20, 10, 30]).unwrap();
        assert_eq!(s, vec![0.0, 0.6, 0.8]);
    }

    #[test]
    fn unknown_id_named() {
        let feats = [1.0, 0.0];
        let err = score_pairs(&feats, &[5], 2, &[5, 5], &[5, 6]).unwrap_err();
        assert_eq!(
            err,
            Error::UnknownTemplate {
                pair: 1,
                side: "p2",
                template: 6
            }
        );
        assert!(
            err.to_string()
                .contains("unknown template id 6 in p2 (pair 1)"),
            "{err}"
        );
    }

    #[test]
    fn sparse_ids_use_binary_search() {
        let ids = [-5i64, 1 << 40];
        assert!(matches!(IdIndex::new(&ids), IdIndex::Sorted(_)));
        let feats = [1.0, 0.0, 0.0, 1.0];
        let s = score_pairs(&feats, &ids, 2, &[-5, 1 << 40], &[-5, -5]).unwrap();
        assert_eq!(s, vec![1.0, 0.0]);
        assert!(matches!(
            score_pairs(&feats, &ids, 2, &[7], &[-5]),
            Err(Error::UnknownTemplate {
                pair: 0,
                side: "p1",
                template: 7
            })
        ));
    }

    #[test]
    fn non_finite_template_named() {
        let mut feats = vec![0.5f32; 3 * 40];
        feats[2 * 40 + 39] = f32::NAN;
        let err = score_pairs(&feats, &[4, 8, 15], 40, &[4], &[8]).unwrap_err();
        assert_eq!(
            err,
            Error::NonFiniteTemplate {
                arg: "template_feats",
                row: 2,
                template: 15
            }
        );
        assert!(
            err.to_string()
                .contains("template_feats row 2 (template 15) has NaN or infinite values"),
            "{err}"
        );
        feats[2 * 40 + 39] = 0.5;
        feats[40] = f32::NEG_INFINITY;
        assert!(matches!(
            score_pairs(&feats, &[4, 8, 15], 40, &[4], &[4]),
            Err(Error::NonFiniteTemplate {
                row: 1,
                template: 8,
                ..
            })
        ));
        // the first bad row in row order, across check blocks
        let (t, d) = (3 * CHECK_ROWS, 3);
        let mut feats = vec![0.0f32; t * d];
        feats[(2 * CHECK_ROWS + 5) * d] = f32::INFINITY;
        feats[(CHECK_ROWS + 7) * d + 2] = f32::NAN;
        let ids: Vec<i64> = (0..t as i64).collect();
        assert_eq!(first_non_finite_row(&feats, d), Some(CHECK_ROWS + 7));
        assert!(matches!(
            score_pairs(&feats, &ids, d, &[0], &[1]),
            Err(Error::NonFiniteTemplate { row, .. }) if row == CHECK_ROWS + 7
        ));
        assert!(row_is_finite(&[
            f32::MAX,
            f32::MIN,
            0.0,
            -0.0,
            f32::MIN_POSITIVE,
            1e-45
        ]));
    }

    #[test]
    fn dense_index_rejects_out_of_range() {
        let ids = [3i64, 4, 9];
        let index = IdIndex::new(&ids);
        assert!(matches!(index, IdIndex::Dense16 { .. }));
        assert_eq!(index.row(9), Some(2));
        assert_eq!(index.row(5), None);
        assert_eq!(index.row(2), None);
        assert_eq!(index.row(i64::MIN), None);
        assert_eq!(index.row(100), None);
        let mut rows = [0u32; 5];
        assert!(!index.rows_of(&[4, 5, 9, i64::MIN, 2], &mut rows));
        assert_eq!(rows, [1, u32::MAX, 2, u32::MAX, u32::MAX]);
        assert!(index.rows_of(&[9, 3], &mut rows[..2]));
        assert_eq!(rows[..2], [2, 0]);
        // 65535 templates and more: 32-bit rows
        let ids: Vec<i64> = (0..70_000).map(|i| 2 * i - 7).collect();
        let index = IdIndex::new(&ids);
        assert!(matches!(index, IdIndex::Dense { .. }));
        assert_eq!(index.row(2 * 69_999 - 7), Some(69_999));
        assert_eq!(index.row(-6), None);
        assert_eq!(index.row(i64::MAX), None);
        let mut rows = [0u32; 3];
        assert!(!index.rows_of(&[-7, -8, 2 * 65_535 - 7], &mut rows));
        assert_eq!(rows, [0, u32::MAX, 65_535]);
    }

    #[test]
    fn vector_keys_name_the_first_unknown_id() {
        // both tables (16-bit rows below 65535 templates, 32-bit above), ids below the first,
        // beyond the last and in the gaps, in the 8-pair blocks and in the scalar tail
        for t in [300usize, 70_000] {
            let d = 16;
            let feats = features(t, d, 5);
            let ids: Vec<i64> = (0..t as i64).map(|i| 3 * i + 10).collect();
            let n = 5003;
            let p1: Vec<i64> = picks(n, t, 37, 11).iter().map(|&r| ids[r]).collect();
            let p2: Vec<i64> = picks(n, t, 101, 7).iter().map(|&r| ids[r]).collect();
            let good = score_pairs(&feats, &ids, d, &p1, &p2).unwrap();
            assert_dots(&feats, d, &ids, &p1, &p2, &good);
            let last = *ids.last().unwrap();
            for (pair, side, bad) in [
                (4000, "p2", 9),
                (1234, "p1", last + 1),
                (8, "p2", 11),
                (5001, "p1", -7),
                (4999, "p2", last + 3 * 70_000),
            ] {
                let (mut a, mut b) = (p1.clone(), p2.clone());
                if side == "p1" {
                    a[pair] = bad;
                } else {
                    b[pair] = bad;
                }
                // a later unknown id too: the first one is named
                a[n - 1] = i64::MIN;
                let err = score_pairs(&feats, &ids, d, &a, &b).unwrap_err();
                assert_eq!(
                    err,
                    Error::UnknownTemplate {
                        pair,
                        side,
                        template: bad
                    },
                    "{t} templates"
                );
            }
        }
    }

    /// `n` rows of `d` values in [-0.5, 0.5) (not unit vectors: more varied bits).
    fn features(n: usize, d: usize, seed: usize) -> Vec<f32> {
        (0..n * d)
            .map(|i| ((((i + seed) * 7919) % 1009) as f32 / 1009.0) - 0.5)
            .collect()
    }

    /// A permutation-like pseudo-random sequence of `len` values below `m`.
    fn picks(len: usize, m: usize, mul: usize, add: usize) -> Vec<usize> {
        (0..len)
            .map(|i| (i * mul + add * (i >> 7) + i / 3) % m)
            .collect()
    }

    /// Every score equals `dot` of its two rows, bit for bit.
    fn assert_dots(feats: &[f32], d: usize, ids: &[i64], p1: &[i64], p2: &[i64], s: &[f32]) {
        let index = IdIndex::new(ids);
        for i in 0..p1.len() {
            let a = index.row(p1[i]).unwrap();
            let b = index.row(p2[i]).unwrap();
            let expected = dot(&feats[a * d..(a + 1) * d], &feats[b * d..(b + 1) * d]);
            assert_eq!(s[i].to_bits(), expected.to_bits(), "pair {i} ({a}, {b})");
        }
    }

    #[test]
    fn sorted_equals_direct_for_any_tiling_and_order() {
        let (t, d) = (300usize, 40usize);
        let feats = features(t, d, 3);
        let ids: Vec<i64> = (0..t as i64).map(|i| i * 3 + 1).collect();
        let a = picks(20_000, t, 37, 11);
        let b = picks(20_000, t, 101, 7);
        let p1: Vec<i64> = a.iter().map(|&r| ids[r]).collect();
        let p2: Vec<i64> = b.iter().map(|&r| ids[r]).collect();
        let direct = score_pairs_with(&feats, &ids, d, &p1, &p2, None).unwrap();
        assert_dots(&feats, d, &ids, &p1, &p2, &direct);
        let bits = |s: &[f32]| s.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let tiles = |sa, sb, sg| Tiles { sa, sb, sg };
        let geometries = [
            Tiles::new(t, d),
            // many buckets, tiles and short runs
            tiles(3, 1, 2),
            tiles(5, 2, 5),
            tiles(0, 0, 0),
            // few pairs per possible run: a comparison sort in the tasks
            tiles(14, 0, 17),
            // offsets too wide to store keys: ids looked up again
            tiles(8, 1, 24),
        ];
        assert!((n_buckets_stored(geometries[5], t)).is_none());
        for tiles in geometries {
            let s = score_pairs_with(&feats, &ids, d, &p1, &p2, Some(tiles)).unwrap();
            assert_eq!(bits(&s), bits(&direct), "{tiles:?}");
            // reversed pairs and reversed order: the same scores, reversed
            let (r1, r2): (Vec<i64>, Vec<i64>) = p2.iter().rev().zip(p1.iter().rev()).unzip();
            let mut r = score_pairs_with(&feats, &ids, d, &r1, &r2, Some(tiles)).unwrap();
            r.reverse();
            assert_eq!(bits(&r), bits(&direct), "{tiles:?} reversed");
        }
    }

    /// `Some(n_buckets)` when the keys of `tiles` are stored (packed in 32 bits).
    fn n_buckets_stored(tiles: Tiles, t: usize) -> Option<usize> {
        let n = tiles.buckets(t);
        ((n as u64) << (tiles.sa + tiles.sg) <= 1 << 32).then_some(n)
    }

    #[test]
    fn sorted_scoring_of_large_tasks_and_odd_dims() {
        // one bucket with more than MAX_TASK pairs (split in tasks); a dim with a tail
        let (t, d) = (50usize, 37usize);
        let feats = features(t, d, 1);
        let ids: Vec<i64> = (0..t as i64).collect();
        let n = MAX_TASK + 12_345;
        let p1: Vec<i64> = picks(n, t, 13, 5).into_iter().map(|r| r as i64).collect();
        let p2: Vec<i64> = picks(n, t, 29, 3).into_iter().map(|r| r as i64).collect();
        assert_eq!(Tiles::new(t, d).buckets(t), 1);
        let s = score_pairs(&feats, &ids, d, &p1, &p2).unwrap();
        assert_dots(&feats, d, &ids, &p1, &p2, &s);
    }

    #[test]
    fn tile_geometry() {
        // IJB-C: 23,124 templates x 512-d
        let t = Tiles::new(23_124, 512);
        assert_eq!(
            t,
            Tiles {
                sa: 10,
                sb: 7,
                sg: 10
            }
        );
        assert_eq!(n_buckets_stored(t, 23_124), Some(23 * 23));
        for (n, d) in [
            (1, 1),
            (10, 1),
            (1 << 20, 1),
            (1 << 20, 512),
            (1 << 26, 2),
            (3, 1 << 20),
        ] {
            let t = Tiles::new(n, d);
            assert!(
                t.sa + t.sg <= 32 && t.sb <= t.sg && t.sb <= t.sa,
                "{n} x {d}: {t:?}"
            );
        }
        assert!(Tiles::new(1 << 20, 512).buckets(1 << 20) <= MAX_BUCKETS);
    }

    #[test]
    fn sorted_scoring_names_the_first_unknown_id() {
        let (t, d) = (3000usize, 64usize);
        let feats = features(t, d, 0);
        let ids: Vec<i64> = (0..t as i64).map(|i| i * 3 + 1).collect();
        let p1: Vec<i64> = (0..50_000).map(|i| ids[(i * 37) % t]).collect();
        let p2: Vec<i64> = (0..50_000).map(|i| ids[(i * 101 + 7) % t]).collect();
        let s = score_pairs(&feats, &ids, d, &p1, &p2).unwrap();
        assert_dots(&feats, d, &ids, &p1, &p2, &s);
        let mut bad = p2.clone();
        bad[45_000] = 5;
        bad[40_000] = 2;
        let mut bad1 = p1.clone();
        bad1[40_001] = -1;
        for tiles in [
            Some(Tiles::new(t, d)),
            Some(Tiles {
                sa: 8,
                sb: 1,
                sg: 24,
            }),
            None,
        ] {
            let err = score_pairs_with(&feats, &ids, d, &p1, &bad, tiles).unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::UnknownTemplate {
                        pair: 40_000,
                        side: "p2",
                        template: 2
                    }
                ),
                "{err:?}"
            );
            assert!(
                err.to_string()
                    .contains("unknown template id 2 in p2 (pair 40000)"),
                "{err}"
            );
            let err = score_pairs_with(&feats, &ids, d, &bad1, &bad, tiles).unwrap_err();
            assert!(
                matches!(err, Error::UnknownTemplate { pair: 40_000, .. }),
                "{err:?}"
            );
            bad1[39_999] = 0;
            let err = score_pairs_with(&feats, &ids, d, &bad1, &bad, tiles).unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::UnknownTemplate {
                        pair: 39_999,
                        side: "p1",
                        template: 0
                    }
                ),
                "{err:?}"
            );
            bad1[39_999] = p1[39_999];
        }
    }

    #[test]
    fn simd_paths_equal_portable_bit_for_bit() {
        for n in [0usize, 1, 5, 31, 32, 33, 100, 512, 515] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin() * 3.1).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos() / 1.7).collect();
            let p = dot_portable(&a, &b);
            assert_eq!(dot(&a, &b).to_bits(), p.to_bits(), "n={n}");
            assert_eq!(
                dot(&b, &a).to_bits(),
                p.to_bits(),
                "n={n}, operands swapped"
            );
            #[cfg(target_arch = "x86_64")]
            assert_eq!(dot_sse(&a, &b).to_bits(), p.to_bits(), "n={n}");
        }
    }

    #[test]
    fn run_kernels_equal_portable_bit_for_bit() {
        // runs of every length up to 2 x 8 + 7 behind one first row, for every kernel
        for d in [1usize, 31, 32, 64, 100, 512, 515] {
            let rows = 40;
            let mut feats = features(rows, d, d);
            feats[3] = -0.0;
            let mut pairs = Vec::new();
            let mut runs = Vec::new();
            for len in 1..24 {
                for k in 0..len {
                    pairs.push([pairs.len() as u32, ((k * 7 + len) % rows) as u32]);
                }
                runs.push(((len % 5) as u32, pairs.len() as u32));
            }
            let mut simds = vec![Simd::Base];
            #[cfg(target_arch = "x86_64")]
            {
                if std::arch::is_x86_feature_detected!("avx") {
                    simds.push(Simd::Avx);
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    simds.push(Simd::Avx512);
                }
            }
            for simd in simds {
                let mut scores = vec![f32::NAN; pairs.len()];
                let r = Runs {
                    feats: &feats,
                    dim: d,
                    runs: &runs,
                    pairs: &pairs,
                };
                score_runs(simd, r, &mut scores);
                let mut start = 0;
                for (f, &(first, end)) in runs.iter().enumerate() {
                    let a = row(&feats, d, first as usize);
                    for k in start..end as usize {
                        let expected = dot_portable(a, row(&feats, d, pairs[k][1] as usize));
                        assert_eq!(
                            scores[k].to_bits(),
                            expected.to_bits(),
                            "{simd:?} d={d} run {f}"
                        );
                    }
                    start = end as usize;
                }
            }
        }
    }

    #[test]
    fn dot_matches_f64_on_long_vectors() {
        let a: Vec<f32> = (0..515).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..515).map(|i| (i as f32 * 0.11).cos()).collect();
        let exact: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
        assert!((dot(&a, &b) as f64 - exact).abs() < 1e-4);
    }
}
