//! ROC curves identical to `sklearn.metrics.roc_curve`, and TAR@FAR picks (PROTOCOLS §3).
//!
//! sklearn sorts all scores, takes one ROC point per distinct score (descending) with the
//! cumulative genuine (tps) and impostor (fps) counts, optionally drops points collinear with
//! their neighbours (`drop_intermediate`: the second difference of both fps and tps is zero),
//! then prepends (0, 0, +inf). We compute the same integer counts without sorting the pairs
//! jointly: genuine and impostor scores are radix-sorted separately (in parallel chunks) and
//! merged by a k-way walk over distinct values, dropping intermediate points as they stream by.
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::pool;

/// Scores are radix-sorted in chunks of this many values, in parallel, then merged.
const SORT_CHUNK: usize = 1 << 22;

/// A score type: maps to an unsigned key whose order is the float order.
pub trait Score: Copy + Send + Sync + PartialOrd + 'static {
    type Key: RadixKey;
    /// None for NaN. -0.0 and +0.0 map to the same key (they are one threshold for sklearn).
    fn key(self) -> Option<Self::Key>;
    fn from_key(key: Self::Key) -> Self;
    fn to_f64(self) -> f64;
}

pub trait RadixKey: Copy + Send + Sync + Ord + Default + 'static {
    const BITS: u32;
    fn digit(self, shift: u32) -> usize;
}

impl RadixKey for u32 {
    const BITS: u32 = 32;
    #[inline(always)]
    fn digit(self, shift: u32) -> usize {
        ((self >> shift) & 0x7ff) as usize
    }
}
impl RadixKey for u64 {
    const BITS: u32 = 64;
    #[inline(always)]
    fn digit(self, shift: u32) -> usize {
        ((self >> shift) & 0x7ff) as usize
    }
}

impl Score for f32 {
    type Key = u32;
    #[inline(always)]
    fn key(self) -> Option<u32> {
        if self.is_nan() {
            return None;
        }
        let bits = (self + 0.0).to_bits();
        Some(if bits >> 31 == 1 {
            !bits
        } else {
            bits | (1 << 31)
        })
    }
    fn from_key(key: u32) -> f32 {
        f32::from_bits(if key >> 31 == 1 {
            key & !(1 << 31)
        } else {
            !key
        })
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
}
impl Score for f64 {
    type Key = u64;
    #[inline(always)]
    fn key(self) -> Option<u64> {
        if self.is_nan() {
            return None;
        }
        let bits = (self + 0.0).to_bits();
        Some(if bits >> 63 == 1 {
            !bits
        } else {
            bits | (1 << 63)
        })
    }
    fn from_key(key: u64) -> f64 {
        f64::from_bits(if key >> 63 == 1 {
            key & !(1 << 63)
        } else {
            !key
        })
    }
    fn to_f64(self) -> f64 {
        self
    }
}

/// LSD radix sort with 11-bit digits; passes where every key shares the digit are skipped.
pub fn radix_sort<K: RadixKey>(keys: &mut Vec<K>) {
    let n = keys.len();
    if n < 256 {
        keys.sort_unstable();
        return;
    }
    let mut buf = vec![K::default(); n];
    let mut shift = 0;
    while shift < K::BITS {
        let mut counts = vec![0usize; 2048];
        for &k in keys.iter() {
            counts[k.digit(shift)] += 1;
        }
        if counts.contains(&n) {
            shift += 11;
            continue;
        }
        let mut sum = 0;
        for c in counts.iter_mut() {
            let here = *c;
            *c = sum;
            sum += here;
        }
        for &k in keys.iter() {
            let d = k.digit(shift);
            buf[counts[d]] = k;
            counts[d] += 1;
        }
        std::mem::swap(keys, &mut buf);
        shift += 11;
    }
}

/// Sorted runs of keys (ascending), one per chunk of the input.
fn sorted_runs<K: RadixKey>(keys: Vec<K>) -> Vec<Vec<K>> {
    let mut runs: Vec<Vec<K>> = keys.chunks(SORT_CHUNK).map(|c| c.to_vec()).collect();
    runs.par_iter_mut().for_each(radix_sort);
    runs
}

/// The ROC in sklearn's representation: counts and thresholds, first point (0, 0, +inf).
#[derive(Debug, Clone, PartialEq)]
pub struct Roc<S> {
    pub fps: Vec<u64>,
    pub tps: Vec<u64>,
    /// thresholds[0] is None (sklearn's +inf)
    pub thresholds: Vec<Option<S>>,
    pub n_pos: u64,
    pub n_neg: u64,
}

impl<S: Score> Roc<S> {
    pub fn fpr(&self) -> Vec<f64> {
        self.fps
            .iter()
            .map(|&f| f as f64 / self.n_neg as f64)
            .collect()
    }
    pub fn tpr(&self) -> Vec<f64> {
        self.tps
            .iter()
            .map(|&t| t as f64 / self.n_pos as f64)
            .collect()
    }
}

/// Streams raw ROC points and keeps those sklearn keeps.
struct Emitter<K> {
    drop_intermediate: bool,
    fps: Vec<u64>,
    tps: Vec<u64>,
    keys: Vec<K>,
    /// raw points seen so far
    seen: usize,
    /// the last raw point, not yet decided
    pending: Option<(u64, u64, K)>,
    /// the raw point before `pending`
    before: (u64, u64),
}

impl<K: Copy> Emitter<K> {
    fn push(&mut self, fp: u64, tp: u64, key: K) {
        if let Some((pf, pt, pk)) = self.pending {
            // `pending` is raw point seen-1; it is interior iff seen-1 >= 1.
            let interior = self.seen >= 2;
            let keep = !self.drop_intermediate
                || !interior
                || (self.before.0 as i128 - 2 * pf as i128 + fp as i128) != 0
                || (self.before.1 as i128 - 2 * pt as i128 + tp as i128) != 0;
            if keep {
                self.fps.push(pf);
                self.tps.push(pt);
                self.keys.push(pk);
            }
            self.before = (pf, pt);
        }
        self.pending = Some((fp, tp, key));
        self.seen += 1;
    }
    fn finish(&mut self) {
        if let Some((pf, pt, pk)) = self.pending.take() {
            self.fps.push(pf);
            self.tps.push(pt);
            self.keys.push(pk);
        }
    }
}

/// Pops every key equal to the maximum remaining key of `runs` (ends mark the unconsumed part).
#[inline]
fn max_head<K: RadixKey>(runs: &[Vec<K>], ends: &[usize]) -> Option<K> {
    let mut best: Option<K> = None;
    for (run, &end) in runs.iter().zip(ends) {
        if end > 0 {
            let k = run[end - 1];
            if best.is_none_or(|b| k > b) {
                best = Some(k);
            }
        }
    }
    best
}

#[inline]
fn pop_equal<K: RadixKey>(runs: &[Vec<K>], ends: &mut [usize], key: K) -> u64 {
    let mut count = 0;
    for (run, end) in runs.iter().zip(ends.iter_mut()) {
        while *end > 0 && run[*end - 1] == key {
            *end -= 1;
            count += 1;
        }
    }
    count
}

fn validate<S: Score>(labels: &[u8], scores: &[S]) -> Result<()> {
    if labels.len() != scores.len() {
        return Err(Error::Value(format!(
            "labels has {} entries but scores has {}",
            labels.len(),
            scores.len()
        )));
    }
    if labels.is_empty() {
        return Err(Error::Value("labels and scores are empty".into()));
    }
    Ok(())
}

/// Split scores into genuine and impostor keys, rejecting NaN scores and labels other than 0/1.
/// Genuine keys, impostor keys.
type SplitKeys<K> = (Vec<K>, Vec<K>);

fn split_keys<S: Score>(labels: &[u8], scores: &[S]) -> Result<SplitKeys<S::Key>> {
    const BLOCK: usize = 1 << 20;
    let parts: Vec<Result<SplitKeys<S::Key>>> = labels
        .par_chunks(BLOCK)
        .zip(scores.par_chunks(BLOCK))
        .enumerate()
        .map(|(b, (ls, ss))| {
            let mut pos = Vec::new();
            let mut neg = Vec::with_capacity(ls.len());
            for (i, (&l, &s)) in ls.iter().zip(ss).enumerate() {
                let key = s
                    .key()
                    .ok_or_else(|| Error::Value(format!("scores[{}] is NaN", b * BLOCK + i)))?;
                match l {
                    0 => neg.push(key),
                    1 => pos.push(key),
                    other => {
                        return Err(Error::Value(format!(
                            "labels[{}] is {other}; labels must be 0 (impostor) or 1 (genuine)",
                            b * BLOCK + i
                        )))
                    }
                }
            }
            Ok((pos, neg))
        })
        .collect();
    let mut pos = Vec::new();
    let mut neg = Vec::with_capacity(labels.len());
    for part in parts {
        let (p, n) = part?;
        pos.extend_from_slice(&p);
        neg.extend_from_slice(&n);
    }
    Ok((pos, neg))
}

/// `sklearn.metrics.roc_curve(labels, scores, drop_intermediate=...)` for 0/1 labels.
pub fn roc_curve<S: Score>(labels: &[u8], scores: &[S], drop_intermediate: bool) -> Result<Roc<S>> {
    validate(labels, scores)?;
    pool::install(|| {
        let (pos, neg) = split_keys(labels, scores)?;
        let (n_pos, n_neg) = (pos.len() as u64, neg.len() as u64);
        if n_pos == 0 || n_neg == 0 {
            return Err(Error::Value(format!(
                "the ROC needs both classes, but labels has {n_pos} genuine (1) and {n_neg} impostor (0) entries"
            )));
        }
        let (pos_runs, neg_runs) = rayon::join(|| sorted_runs(pos), || sorted_runs(neg));
        let mut pos_ends: Vec<usize> = pos_runs.iter().map(Vec::len).collect();
        let mut neg_ends: Vec<usize> = neg_runs.iter().map(Vec::len).collect();
        let mut emit = Emitter {
            drop_intermediate,
            fps: Vec::new(),
            tps: Vec::new(),
            keys: Vec::new(),
            seen: 0,
            pending: None,
            before: (0, 0),
        };
        let (mut tp, mut fp) = (0u64, 0u64);
        loop {
            let key = match (
                max_head(&pos_runs, &pos_ends),
                max_head(&neg_runs, &neg_ends),
            ) {
                (None, None) => break,
                (Some(a), None) | (None, Some(a)) => a,
                (Some(a), Some(b)) => a.max(b),
            };
            tp += pop_equal(&pos_runs, &mut pos_ends, key);
            fp += pop_equal(&neg_runs, &mut neg_ends, key);
            emit.push(fp, tp, key);
        }
        emit.finish();
        // (sklearn drops points only when there are more than two: with two, none is interior.)
        let mut fps = Vec::with_capacity(emit.fps.len() + 1);
        let mut tps = Vec::with_capacity(emit.fps.len() + 1);
        let mut thresholds = Vec::with_capacity(emit.fps.len() + 1);
        fps.push(0);
        tps.push(0);
        thresholds.push(None);
        fps.extend_from_slice(&emit.fps);
        tps.extend_from_slice(&emit.tps);
        thresholds.extend(emit.keys.iter().map(|&k| Some(S::from_key(k))));
        Ok(Roc {
            fps,
            tps,
            thresholds,
            n_pos,
            n_neg,
        })
    })
}

/// How a TAR@FAR point is picked from the ROC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FarRule {
    /// The community pick: the point whose FPR is nearest the target; ties to the larger TPR.
    Nearest,
    /// The largest TPR whose FPR does not exceed the target.
    AtMost,
}

/// Index of the ROC point picked for `target`; `fpr` and `tpr` non-decreasing, fpr[0] == 0.
pub fn pick_far(fpr: &[f64], target: f64, rule: FarRule) -> Result<usize> {
    if fpr.is_empty() {
        return Err(Error::Value("empty ROC".into()));
    }
    if !(target > 0.0 && target < 1.0) {
        return Err(Error::Value(format!(
            "FAR target {target} is outside (0, 1)"
        )));
    }
    // first index whose fpr exceeds the target; the point before it is the last with fpr <= target
    let above = fpr.partition_point(|&f| f <= target);
    let below = above.saturating_sub(1);
    if rule == FarRule::AtMost || above == fpr.len() {
        return Ok(below);
    }
    // the last point of the run of equal FPR starting at `above` has the largest TPR there
    let value = fpr[above];
    let run_end = above + fpr[above..].partition_point(|&f| f == value) - 1;
    let d_below = (fpr[below] - target).abs();
    let d_above = (value - target).abs();
    Ok(if d_above <= d_below { run_end } else { below })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn six_score_roc_by_hand() {
        // scores 0.9(1) 0.8(0) 0.7(1) 0.6(1) 0.5(0) 0.4(0)
        let scores = [0.5f32, 0.9, 0.4, 0.7, 0.8, 0.6];
        let labels = [0u8, 1, 0, 1, 0, 1];
        let roc = roc_curve(&labels, &scores, false).unwrap();
        assert_eq!(roc.tps, vec![0, 1, 1, 2, 3, 3, 3]);
        assert_eq!(roc.fps, vec![0, 0, 1, 1, 1, 2, 3]);
        let thr: Vec<Option<f32>> = vec![
            None,
            Some(0.9),
            Some(0.8),
            Some(0.7),
            Some(0.6),
            Some(0.5),
            Some(0.4),
        ];
        assert_eq!(roc.thresholds, thr);
        // drop_intermediate: 0.7 lies between 0.8 and 0.6 on a vertical run, 0.5 on a horizontal one
        let roc = roc_curve(&labels, &scores, true).unwrap();
        assert_eq!(roc.tps, vec![0, 1, 1, 3, 3]);
        assert_eq!(roc.fps, vec![0, 0, 1, 1, 3]);
    }

    #[test]
    fn ties_collapse_and_signed_zero_is_one_threshold() {
        let scores = [0.0f32, -0.0, 1.0, 1.0];
        let labels = [1u8, 0, 0, 1];
        let roc = roc_curve(&labels, &scores, false).unwrap();
        assert_eq!(roc.tps, vec![0, 1, 2]);
        assert_eq!(roc.fps, vec![0, 1, 2]);
    }

    #[test]
    fn errors() {
        assert!(roc_curve(&[1u8, 1], &[0.1f32, 0.2], true)
            .unwrap_err()
            .to_string()
            .contains("both classes"));
        assert!(roc_curve(&[1u8, 2], &[0.1f32, 0.2], true)
            .unwrap_err()
            .to_string()
            .contains("labels[1] is 2"));
        assert!(roc_curve(&[1u8, 0], &[0.1f32, f32::NAN], true)
            .unwrap_err()
            .to_string()
            .contains("scores[1] is NaN"));
        assert!(roc_curve::<f32>(&[], &[], true).is_err());
        assert!(roc_curve(&[1u8], &[0.1f64, 0.2], true).is_err());
    }

    #[test]
    fn keys_preserve_order() {
        let values = [-f32::INFINITY, -3.5, -1e-30, 0.0, 1e-30, 2.0, f32::INFINITY];
        let keys: Vec<u32> = values.iter().map(|v| v.key().unwrap()).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        for v in values {
            assert_eq!(f32::from_key(v.key().unwrap()), v);
        }
        let values = [-1e300f64, -1.0, 0.0, 1e-300, 5.0];
        let keys: Vec<u64> = values.iter().map(|v| v.key().unwrap()).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn radix_matches_std_sort() {
        let mut keys: Vec<u32> = (0..100_000u64)
            .map(|i| ((i * 2654435761) % 4294967291) as u32)
            .collect();
        let mut expected = keys.clone();
        expected.sort_unstable();
        radix_sort(&mut keys);
        assert_eq!(keys, expected);
        let mut keys: Vec<u64> = (0..5000u64)
            .map(|i| i.wrapping_mul(0x9E3779B97F4A7C15))
            .collect();
        let mut expected = keys.clone();
        expected.sort_unstable();
        radix_sort(&mut keys);
        assert_eq!(keys, expected);
    }

    #[test]
    fn nearest_and_at_most_picks() {
        let fpr = [0.0, 0.0, 0.1, 0.1, 0.3, 1.0];
        // target 0.2: equidistant from 0.1 and 0.3 -> the larger TPR, at 0.3
        assert_eq!(pick_far(&fpr, 0.2, FarRule::Nearest).unwrap(), 4);
        assert_eq!(pick_far(&fpr, 0.2, FarRule::AtMost).unwrap(), 3);
        // target 0.11: nearest is the run at 0.1, its last point
        assert_eq!(pick_far(&fpr, 0.11, FarRule::Nearest).unwrap(), 3);
        // target 0.05: 0.0 and 0.1 are equidistant -> the larger TPR (last of the 0.1 run)
        assert_eq!(pick_far(&fpr, 0.05, FarRule::Nearest).unwrap(), 3);
        assert_eq!(pick_far(&fpr, 0.05, FarRule::AtMost).unwrap(), 1);
        assert_eq!(pick_far(&fpr, 0.999, FarRule::Nearest).unwrap(), 5);
        assert!(pick_far(&fpr, 0.0, FarRule::Nearest).is_err());
        assert!(pick_far(&fpr, 1.0, FarRule::Nearest).is_err());
    }
}
