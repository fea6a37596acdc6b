//! Cosine scores of template pairs (PROTOCOLS §3): the dot product of unit template vectors.
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::pool;

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

/// Dot product with 16 independent partial sums (vectorised; fixed order, so deterministic).
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let mut ca = a.chunks_exact(16);
    let mut cb = b.chunks_exact(16);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for k in 0..16 {
            acc[k] += x[k] * y[k];
        }
    }
    for (k, (x, y)) in ca.remainder().iter().zip(cb.remainder()).enumerate() {
        acc[k] += x * y;
    }
    // Pairwise tree over the lanes.
    let mut width = 8;
    while width > 0 {
        for k in 0..width {
            acc[k] += acc[k + width];
        }
        width /= 2;
    }
    acc[0]
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn score_chunk_avx2(
    feats: &[f32],
    dim: usize,
    index: &IdIndex<'_>,
    p1: &[i64],
    p2: &[i64],
    out: &mut [f32],
) -> std::result::Result<(), usize> {
    score_chunk_generic(feats, dim, index, p1, p2, out)
}

#[inline(always)]
fn score_chunk_generic(
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

fn score_chunk(
    feats: &[f32],
    dim: usize,
    index: &IdIndex<'_>,
    p1: &[i64],
    p2: &[i64],
    out: &mut [f32],
) -> std::result::Result<(), usize> {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked above). Without FMA the lanes compute the
            // same rounded operations as the generic path, so results are identical.
            return unsafe { score_chunk_avx2(feats, dim, index, p1, p2, out) };
        }
    }
    score_chunk_generic(feats, dim, index, p1, p2, out)
}

/// Cosine score of each pair `(p1[i], p2[i])` of template ids; `feats` is row-major
/// (ids.len(), dim) with unit rows and `ids` sorted ascending and unique.
pub fn score_pairs(
    feats: &[f32],
    ids: &[i64],
    dim: usize,
    p1: &[i64],
    p2: &[i64],
) -> Result<Vec<f32>> {
    if dim == 0 || feats.len() != ids.len() * dim {
        return Err(Error::Value(format!(
            "template_feats has {} elements, expected {} templates x dim {}",
            feats.len(),
            ids.len(),
            dim
        )));
    }
    if let Some(w) = ids.windows(2).position(|w| w[0] >= w[1]) {
        return Err(Error::Value(format!(
            "template_ids must be sorted ascending and unique (position {} holds {} then {})",
            w,
            ids[w],
            ids[w + 1]
        )));
    }
    if p1.len() != p2.len() {
        return Err(Error::Value(format!(
            "p1 has {} pairs but p2 has {}",
            p1.len(),
            p2.len()
        )));
    }
    pool::install(|| {
        let index = IdIndex::new(ids);
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
        if let Some(&i) = failures.iter().min() {
            let (name, id) = if index.row(p1[i]).is_none() {
                ("p1", p1[i])
            } else {
                ("p2", p2[i])
            };
            return Err(Error::Value(format!(
                "unknown template id {id} in {name} (pair {i}): it has no template features"
            )));
        }
        Ok(out)
    })
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
        assert!(score_pairs(&feats, &ids, 2, &[7], &[-5]).is_err());
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
    fn dot_matches_f64_on_long_vectors() {
        let a: Vec<f32> = (0..515).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..515).map(|i| (i as f32 * 0.11).cos()).collect();
        let exact: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
        assert!((dot(&a, &b) as f64 - exact).abs() < 1e-4);
    }
}
