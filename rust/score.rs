//! Cosine scores of template pairs (docs/protocols.md §3): the dot product of unit template vectors.
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::pool::{self, SharedOut};

/// Pairs scored per task; small enough to balance, large enough to amortise scheduling.
const CHUNK: usize = 1 << 14;

/// Maps template ids to rows: a dense table when the ids are compact, binary search otherwise.
pub enum IdIndex<'a> {
    Dense { min: i64, rows: Vec<u32> },
    Sorted(&'a [i64]),
}

impl<'a> IdIndex<'a> {
    /// `ids` must be sorted ascending and unique.
    pub fn new(ids: &'a [i64]) -> Self {
        if let (Some(&min), Some(&max)) = (ids.first(), ids.last()) {
            let span = (max as i128 - min as i128 + 1) as u128;
            // A table of up to 16 slots per template (and 64M at most) beats binary search.
            if span <= (16 * ids.len() as u128).max(1 << 16) && span <= 1 << 26 {
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
            IdIndex::Dense { min, rows } => {
                let off = id.checked_sub(*min)?;
                if off < 0 {
                    return None;
                }
                match rows.get(off as usize) {
                    Some(&r) if r != u32::MAX => Some(r as usize),
                    _ => None,
                }
            }
            IdIndex::Sorted(ids) => ids.binary_search(&id).ok(),
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

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn dot2_avx(a: &[f32], b: &[f32], c: &[f32]) -> (f32, f32) {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len()).min(c.len());
    let m = n - n % LANES;
    let (pa, pb, pc) = (a.as_ptr(), b.as_ptr(), c.as_ptr());
    let mut s = [_mm256_setzero_ps(); 4];
    let mut t = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i < m {
        for r in 0..4 {
            let x = _mm256_loadu_ps(pa.add(i + 8 * r));
            let y = _mm256_loadu_ps(pb.add(i + 8 * r));
            let z = _mm256_loadu_ps(pc.add(i + 8 * r));
            s[r] = _mm256_add_ps(s[r], _mm256_mul_ps(x, y));
            t[r] = _mm256_add_ps(t[r], _mm256_mul_ps(x, z));
        }
        i += LANES;
    }
    let mut acc = [0f32; LANES];
    let mut acc2 = [0f32; LANES];
    for r in 0..4 {
        _mm256_storeu_ps(acc.as_mut_ptr().add(8 * r), s[r]);
        _mm256_storeu_ps(acc2.as_mut_ptr().add(8 * r), t[r]);
    }
    (
        finish(acc, &a[..n], &b[..n], m),
        finish(acc2, &a[..n], &c[..n], m),
    )
}

/// `(dot(a, b), dot(a, c))`, bit-identical to two [`dot`] calls, reading `a` once.
#[inline]
pub fn dot2(a: &[f32], b: &[f32], c: &[f32]) -> (f32, f32) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx") && b.len() == c.len() {
            // SAFETY: AVX is available (checked above).
            return unsafe { dot2_avx(a, b, c) };
        }
    }
    (dot(a, b), dot(a, c))
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

/// Template features above this size are scored tile by tile (they would not stay in cache).
const CACHE_BYTES: usize = 8 << 20;
/// Bytes of template features per tile side: two sides per core stay in the shared L3.
const BLOCK_BYTES: usize = 2 << 20;

/// Rows per tile side for `dim`-d features (a power of two), or None to score in file order.
fn block_rows(n_templates: usize, dim: usize) -> Option<u32> {
    let bytes = n_templates * dim * 4;
    if bytes <= CACHE_BYTES {
        return None;
    }
    let rows = (BLOCK_BYTES / (dim * 4)).max(16);
    Some(rows.next_power_of_two().trailing_zeros())
}

/// Cosine score of each pair `(p1[i], p2[i])` of template ids; `feats` is row-major
/// (ids.len(), dim) with unit rows and `ids` sorted ascending and unique.
///
/// Every template row must be finite (a NaN/inf row would give NaN scores that a ROC cannot
/// rank): the first that is not is named by [`Error::NonFiniteTemplate`]. The check is one
/// parallel scan of the features, a few milliseconds at IJB-C size.
///
/// When the template features do not fit in cache, pairs are grouped into tiles by the blocks
/// of their two rows (a counting sort of pair indices, stable, so file order is kept within a
/// tile) and scored tile by tile; each score is still computed by the same [`dot`], so the
/// result does not depend on the tiling or the thread count.
pub fn score_pairs(
    feats: &[f32],
    ids: &[i64],
    dim: usize,
    p1: &[i64],
    p2: &[i64],
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
    if p1.len() > u32::MAX as usize {
        return Err(Error::TooMany {
            what: "pairs",
            count: p1.len(),
        });
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
        let mut out = vec![0f32; p1.len()];
        match block_rows(ids.len(), dim) {
            None => {
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
                if let Some(&i) = failures.iter().min() {
                    return Err(unknown(i));
                }
            }
            Some(shift) => {
                score_tiled(feats, dim, &index, p1, p2, shift, &mut out).map_err(unknown)?;
            }
        }
        Ok(out)
    })
}

/// Tiled scoring; on an unknown id returns the smallest pair index that has one.
fn score_tiled(
    feats: &[f32],
    dim: usize,
    index: &IdIndex<'_>,
    p1: &[i64],
    p2: &[i64],
    shift: u32,
    out: &mut [f32],
) -> std::result::Result<(), usize> {
    let n_templates = feats.len() / dim;
    let nb = (n_templates >> shift) + 1;
    let n_tiles = nb * nb;
    let tile_of = |i: usize| -> Option<usize> {
        let a = index.row(p1[i])?;
        let b = index.row(p2[i])?;
        Some((a >> shift) * nb + (b >> shift))
    };
    // pass 1: per-chunk tile histograms (and id validation)
    let n = p1.len();
    let n_chunks = n.div_ceil(CHUNK);
    let hists: Vec<std::result::Result<Vec<u32>, usize>> = (0..n_chunks)
        .into_par_iter()
        .map(|c| {
            let mut h = vec![0u32; n_tiles];
            for i in c * CHUNK..((c + 1) * CHUNK).min(n) {
                h[tile_of(i).ok_or(i)?] += 1;
            }
            Ok(h)
        })
        .collect();
    let mut hists = hists
        .into_iter()
        .collect::<std::result::Result<Vec<_>, usize>>()?;
    // tile-major, then chunk order: the stable position where each chunk starts in each tile
    let mut tile_start = vec![0usize; n_tiles + 1];
    let mut pos = 0usize;
    for t in 0..n_tiles {
        tile_start[t] = pos;
        for h in hists.iter_mut() {
            let count = h[t] as usize;
            h[t] = pos as u32;
            pos += count;
        }
    }
    tile_start[n_tiles] = pos;
    // pass 2: scatter (pair index, row 1, row 2) into tile order, so that pass 3 reads
    // sequentially instead of gathering ids and looking them up again
    let mut order = vec![[0u32; 3]; n];
    let order_ptr = SharedOut(order.as_mut_ptr());
    hists
        .into_par_iter()
        .enumerate()
        .for_each(|(c, mut cursor)| {
            for i in c * CHUNK..((c + 1) * CHUNK).min(n) {
                // ids were validated in pass 1
                let a = index.row(p1[i]).unwrap_or(0);
                let b = index.row(p2[i]).unwrap_or(0);
                let t = (a >> shift) * nb + (b >> shift);
                // SAFETY: the cursors of (chunk, tile) cover disjoint ranges of `order`, built from
                // exact counts, so every slot is written by exactly one task, within bounds.
                unsafe {
                    *order_ptr.get().add(cursor[t] as usize) = [i as u32, a as u32, b as u32]
                };
                cursor[t] += 1;
            }
        });
    // pass 3: score tile by tile (long tiles split for balance)
    let mut jobs = Vec::new();
    for t in 0..n_tiles {
        let mut s = tile_start[t];
        while s < tile_start[t + 1] {
            let e = (s + CHUNK).min(tile_start[t + 1]);
            jobs.push((s, e));
            s = e;
        }
    }
    let out_ptr = SharedOut(out.as_mut_ptr());
    jobs.into_par_iter().for_each(|(s, e)| {
        let entries = &order[s..e];
        let row = |r: u32| &feats[r as usize * dim..(r as usize + 1) * dim];
        let mut k = 0;
        while k < entries.len() {
            let [i, a, b] = entries[k];
            // consecutive pairs that share their first template (the pair file is sorted by it)
            // are scored together, reading that row once
            if let Some(&[j, a2, c]) = entries.get(k + 1) {
                if a2 == a {
                    let (v, w) = dot2(row(a), row(b), row(c));
                    // SAFETY: `order` holds each pair index once, so each slot is written once.
                    unsafe {
                        *out_ptr.get().add(i as usize) = v;
                        *out_ptr.get().add(j as usize) = w;
                    }
                    k += 2;
                    continue;
                }
            }
            // SAFETY: as above.
            unsafe { *out_ptr.get().add(i as usize) = dot(row(a), row(b)) };
            k += 1;
        }
    });
    Ok(())
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
        assert!(matches!(index, IdIndex::Dense { .. }));
        assert_eq!(index.row(9), Some(2));
        assert_eq!(index.row(5), None);
        assert_eq!(index.row(2), None);
        assert_eq!(index.row(i64::MIN), None);
        assert_eq!(index.row(100), None);
    }

    #[test]
    fn tiled_equals_direct() {
        // 3000 templates x 1024-d = 12 MB > cache budget -> tiled path
        let (t, d) = (3000usize, 1024usize);
        assert!(block_rows(t, d).is_some());
        let feats: Vec<f32> = (0..t * d)
            .map(|i| (((i * 7919) % 1009) as f32 / 1009.0) - 0.5)
            .collect();
        let ids: Vec<i64> = (0..t as i64).map(|i| i * 3 + 1).collect();
        let p1: Vec<i64> = (0..50_000).map(|i| ids[(i * 37) % t]).collect();
        let p2: Vec<i64> = (0..50_000).map(|i| ids[(i * 101 + 7) % t]).collect();
        let tiled = score_pairs(&feats, &ids, d, &p1, &p2).unwrap();
        let index = IdIndex::new(&ids);
        for i in 0..p1.len() {
            let a = index.row(p1[i]).unwrap();
            let b = index.row(p2[i]).unwrap();
            assert_eq!(
                tiled[i],
                dot(&feats[a * d..(a + 1) * d], &feats[b * d..(b + 1) * d])
            );
        }
        let mut bad = p2.clone();
        bad[40_000] = 2;
        bad[45_000] = 5;
        let err = score_pairs(&feats, &ids, d, &p1, &bad).unwrap_err();
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
    }

    #[test]
    fn simd_paths_equal_portable_bit_for_bit() {
        for n in [0usize, 1, 5, 31, 32, 33, 100, 512, 515] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin() * 3.1).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos() / 1.7).collect();
            let p = dot_portable(&a, &b);
            assert_eq!(dot(&a, &b).to_bits(), p.to_bits(), "n={n}");
            #[cfg(target_arch = "x86_64")]
            assert_eq!(dot_sse(&a, &b).to_bits(), p.to_bits(), "n={n}");
            let c: Vec<f32> = b.iter().map(|x| x * 0.7 - 0.1).collect();
            let (v, w) = dot2(&a, &b, &c);
            assert_eq!(
                (v.to_bits(), w.to_bits()),
                (p.to_bits(), dot_portable(&a, &c).to_bits())
            );
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
