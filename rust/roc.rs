//! ROC curves identical to `sklearn.metrics.roc_curve`, and TAR@FAR picks (docs/protocols.md §3).
//!
//! sklearn sorts all scores, takes one ROC point per distinct score (descending) with the
//! cumulative genuine (tps) and impostor (fps) counts, optionally drops points collinear with
//! their neighbours (`drop_intermediate`: the second difference of both fps and tps is zero),
//! then prepends (0, 0, +inf). We compute the same integer counts without sorting the pairs
//! jointly: impostor scores (the bulk) are scattered into 2048 buckets by the top bits of an
//! order-preserving integer key, each bucket is radix-sorted in cache, in parallel; genuine
//! scores are sorted apart; one walk over both emits sklearn's points, dropping intermediate
//! ones as they stream by.
use rayon::prelude::*;

use crate::error::{Error, Result, LABELS_GENUINE_IMPOSTOR};
use crate::pool::{self, SharedOut};

/// Scores are validated and bucketed in blocks of this many values, in parallel.
const BLOCK: usize = 1 << 20;
/// Bits of the key that choose the bucket (the most significant ones).
const TOP_BITS: u32 = 11;

/// A score type: maps to an unsigned key whose order is the float order.
pub trait Score: Copy + Send + Sync + PartialOrd + 'static {
    type Key: RadixKey;
    /// None for NaN. -0.0 and +0.0 map to the same key (they are one threshold for sklearn).
    fn key(self) -> Option<Self::Key>;
    fn from_key(key: Self::Key) -> Self;
    fn to_f64(self) -> f64;
    fn infinity() -> Self;
    fn finite(self) -> bool;
}

pub trait RadixKey: Copy + Send + Sync + Ord + Default + 'static {
    const BITS: u32;
    fn digit(self, shift: u32) -> usize;
    /// The bucket of the key: its [`TOP_BITS`] most significant bits.
    #[inline(always)]
    fn top(self) -> usize {
        self.digit(Self::BITS - TOP_BITS)
    }
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
    fn infinity() -> f32 {
        f32::INFINITY
    }
    #[inline(always)]
    fn finite(self) -> bool {
        self.is_finite()
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
    fn infinity() -> f64 {
        f64::INFINITY
    }
    #[inline(always)]
    fn finite(self) -> bool {
        self.is_finite()
    }
}

/// LSD radix sort with 11-bit digits; passes where every key shares the digit are skipped.
pub fn radix_sort<K: RadixKey>(keys: &mut [K]) {
    let mut buf = vec![K::default(); keys.len()];
    radix_sort_low(keys, &mut buf, K::BITS);
}

/// LSD radix sort of `keys` by their `bits` least significant bits (the others being equal),
/// using `buf` (same length) as scratch; the result ends in `keys`.
fn radix_sort_low<K: RadixKey>(keys: &mut [K], buf: &mut [K], bits: u32) {
    let n = keys.len();
    if n < 256 {
        keys.sort_unstable();
        return;
    }
    let mut in_keys = true; // where the current data lives
    let mut shift = 0;
    while shift < bits {
        let (src, dst): (&mut [K], &mut [K]) = if in_keys {
            (&mut *keys, &mut *buf)
        } else {
            (&mut *buf, &mut *keys)
        };
        let mut counts = vec![0usize; 2048];
        for &k in src.iter() {
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
        for &k in src.iter() {
            let d = k.digit(shift);
            dst[counts[d]] = k;
            counts[d] += 1;
        }
        in_keys = !in_keys;
        shift += 11;
    }
    if !in_keys {
        keys.copy_from_slice(buf);
    }
}

/// The ROC in sklearn's representation: counts and thresholds, first point (0, 0, +inf).
#[derive(Debug, Clone, PartialEq)]
pub struct Roc<S> {
    pub fps: Vec<u64>,
    pub tps: Vec<u64>,
    /// decreasing; thresholds[0] is +inf
    pub thresholds: Vec<S>,
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

/// A raw ROC point: cumulative impostor and genuine counts at a distinct score key.
type Point<K> = (u64, u64, K);

/// Raw points of one key range, walking down from its largest key; `fp`/`tp` are the counts
/// of all keys above the range. `pos` and `neg` are sorted ascending.
fn walk<K: RadixKey>(pos: &[K], neg: &[K], mut fp: u64, mut tp: u64) -> Vec<Point<K>> {
    let mut out = Vec::with_capacity(neg.len() / 2 + pos.len());
    let (mut i, mut j) = (pos.len(), neg.len());
    while j > 0 {
        let key = neg[j - 1];
        // genuine keys above this impostor key, one point per distinct key
        while i > 0 && pos[i - 1] > key {
            let k = pos[i - 1];
            while i > 0 && pos[i - 1] == k {
                i -= 1;
                tp += 1;
            }
            out.push((fp, tp, k));
        }
        let mut run = 1;
        while run < j && neg[j - 1 - run] == key {
            run += 1;
        }
        j -= run;
        fp += run as u64;
        while i > 0 && pos[i - 1] == key {
            i -= 1;
            tp += 1;
        }
        out.push((fp, tp, key));
    }
    while i > 0 {
        let k = pos[i - 1];
        while i > 0 && pos[i - 1] == k {
            i -= 1;
            tp += 1;
        }
        out.push((fp, tp, k));
    }
    out
}

/// sklearn's `drop_intermediate` over the concatenation of `parts` (without concatenating):
/// keep the first and last points and every point where the slope changes (second difference
/// of fps or tps non-zero). With two points or fewer, all are ends.
fn drop_intermediate_parts<K: RadixKey>(parts: &[Vec<Point<K>>]) -> Vec<Vec<Point<K>>> {
    let parts: Vec<&Vec<Point<K>>> = parts.iter().filter(|p| !p.is_empty()).collect();
    let n = parts.len();
    (0..n)
        .into_par_iter()
        .map(|p| {
            let part = parts[p];
            let before = if p > 0 {
                parts[p - 1].last().copied()
            } else {
                None
            };
            let after = if p + 1 < n {
                parts[p + 1].first().copied()
            } else {
                None
            };
            let m = part.len();
            let mut kept = Vec::with_capacity(m / 2 + 2);
            for i in 0..m {
                let prev = if i > 0 { Some(part[i - 1]) } else { before };
                let next = if i + 1 < m { Some(part[i + 1]) } else { after };
                let keep = match (prev, next) {
                    (Some(a), Some(c)) => {
                        let b = part[i];
                        a.0 + c.0 != 2 * b.0 || a.1 + c.1 != 2 * b.1
                    }
                    _ => true, // the first or the last point of the whole curve
                };
                if keep {
                    kept.push(part[i]);
                }
            }
            kept
        })
        .collect()
}

fn validate<S: Score>(labels: &[u8], scores: &[S]) -> Result<()> {
    if labels.len() != scores.len() {
        return Err(Error::LengthMismatch {
            arg: "labels",
            len: labels.len(),
            unit: "entries",
            other: "scores",
            other_len: scores.len(),
        });
    }
    if labels.is_empty() {
        return Err(Error::NoScores);
    }
    Ok(())
}

/// Pass 1 over the scores: validation, the genuine keys (sorted) and, per block of [`BLOCK`]
/// scores, the histogram of impostor keys over the 2048 buckets.
struct Histogram<K> {
    pos: Vec<K>,
    block_hists: Vec<Vec<usize>>,
    /// impostor count per bucket
    totals: Vec<usize>,
}

const BUCKETS: usize = 1 << TOP_BITS;

fn histogram<S: Score>(labels: &[u8], scores: &[S]) -> Result<Histogram<S::Key>> {
    let n = labels.len();
    let n_blocks = n.div_ceil(BLOCK);
    // pass 1: validate; genuine keys per block; impostor bucket histogram per block
    // per block: genuine keys, impostor bucket histogram
    type BlockOut<K> = Result<(Vec<K>, Vec<usize>)>;
    let blocks: Vec<BlockOut<S::Key>> = (0..n_blocks)
        .into_par_iter()
        .map(|b| {
            let range = b * BLOCK..((b + 1) * BLOCK).min(n);
            let mut pos = Vec::new();
            let mut hist = vec![0usize; BUCKETS];
            for i in range {
                let score = scores[i];
                if !score.finite() {
                    return Err(Error::NonFinite {
                        arg: "scores",
                        index: i,
                        value: score.to_f64(),
                    });
                }
                let key = score.key().unwrap_or_default();
                match labels[i] {
                    0 => hist[key.top()] += 1,
                    1 => pos.push(key),
                    other => {
                        return Err(Error::BadLabel {
                            arg: "labels",
                            index: i,
                            value: other,
                            expected: LABELS_GENUINE_IMPOSTOR,
                        })
                    }
                }
            }
            Ok((pos, hist))
        })
        .collect();
    let mut pos = Vec::new();
    let mut cursors = Vec::with_capacity(n_blocks);
    for block in blocks {
        let (p, h) = block?;
        pos.extend_from_slice(&p);
        cursors.push(h);
    }
    let mut totals = vec![0usize; BUCKETS];
    for h in &cursors {
        for (t, c) in totals.iter_mut().zip(h) {
            *t += c;
        }
    }
    pos.par_sort_unstable();
    Ok(Histogram {
        pos,
        block_hists: cursors,
        totals,
    })
}

/// Impostor keys of the buckets `cut..`, sorted ascending, and the start of each bucket in them
/// (`BUCKETS + 1` offsets; buckets below `cut` are empty).
fn bucket_sort<S: Score>(
    labels: &[u8],
    scores: &[S],
    h: &Histogram<S::Key>,
    cut: usize,
) -> (Vec<S::Key>, Vec<usize>) {
    let n = labels.len();
    // bucket-major, then block order: where each block starts writing in each bucket
    let mut cursors: Vec<Vec<usize>> = h.block_hists.clone();
    let mut bucket_start = vec![0usize; BUCKETS + 1];
    let mut at = 0usize;
    for (t, start) in bucket_start.iter_mut().take(BUCKETS).enumerate() {
        *start = at;
        if t < cut {
            continue;
        }
        for c in cursors.iter_mut() {
            let count = c[t];
            c[t] = at;
            at += count;
        }
    }
    bucket_start[BUCKETS] = at;
    // pass 2: scatter impostor keys into their buckets
    let mut neg = vec![S::Key::default(); at];
    let out = SharedOut(neg.as_mut_ptr());
    cursors
        .into_par_iter()
        .enumerate()
        .for_each(|(b, mut cursor)| {
            for i in b * BLOCK..((b + 1) * BLOCK).min(n) {
                if labels[i] == 0 {
                    if let Some(key) = scores[i].key() {
                        let t = key.top();
                        if t >= cut {
                            // SAFETY: the (block, bucket) cursors cover disjoint ranges of `neg`
                            // sized by exact counts from pass 1: each slot is written once.
                            unsafe { *out.get().add(cursor[t]) = key };
                            cursor[t] += 1;
                        }
                    }
                }
            }
        });
    // pass 3: sort each bucket on the remaining bits, in cache, in parallel
    let mut slices: Vec<&mut [S::Key]> = Vec::with_capacity(BUCKETS);
    let mut rest: &mut [S::Key] = &mut neg;
    for t in 0..BUCKETS {
        let (head, tail) = rest.split_at_mut(bucket_start[t + 1] - bucket_start[t]);
        if !head.is_empty() {
            slices.push(head);
        }
        rest = tail;
    }
    slices.sort_by_key(|s| std::cmp::Reverse(s.len())); // big buckets first balance better
    slices.into_par_iter().for_each(|bucket| {
        let mut buf = vec![S::Key::default(); bucket.len()];
        radix_sort_low(bucket, &mut buf, S::Key::BITS - TOP_BITS);
    });
    (neg, bucket_start)
}

/// The exact ROC restricted to the score buckets `cut..` (all of it when `cut == 0`). With
/// `cut > 0` the last raw point is left out: whether sklearn keeps it depends on the next one.
fn build_roc<S: Score>(
    labels: &[u8],
    scores: &[S],
    h: &Histogram<S::Key>,
    cut: usize,
    drop_intermediate: bool,
) -> Roc<S> {
    let (neg, bucket_start) = bucket_sort(labels, scores, h, cut);
    let pos = &h.pos;
    let n_pos = pos.len() as u64;
    let n_neg = h.totals.iter().sum::<usize>() as u64;
    // Walk the buckets from the top key range down, in parallel: each starts from the counts
    // above it. Genuine keys go with the bucket of their top bits.
    let pos_start: Vec<usize> = (0..=BUCKETS)
        .map(|t| pos.partition_point(|k| k.top() < t))
        .collect();
    let mut above = vec![(0u64, 0u64); BUCKETS + 1]; // (fp, tp) above bucket t
    for t in (cut..BUCKETS).rev() {
        let (fp, tp) = above[t + 1];
        above[t] = (
            fp + h.totals[t] as u64,
            tp + (pos_start[t + 1] - pos_start[t]) as u64,
        );
    }
    let parts: Vec<Vec<Point<S::Key>>> = (cut..BUCKETS)
        .into_par_iter()
        .rev()
        .map(|t| {
            let (fp, tp) = above[t + 1];
            walk(
                &pos[pos_start[t]..pos_start[t + 1]],
                &neg[bucket_start[t]..bucket_start[t + 1]],
                fp,
                tp,
            )
        })
        .collect();
    drop(neg);
    let mut kept = if drop_intermediate {
        drop_intermediate_parts(&parts)
    } else {
        parts
    };
    if cut > 0 {
        if let Some(last) = kept.iter_mut().rev().find(|p| !p.is_empty()) {
            last.pop();
        }
    }
    let total = kept.iter().map(Vec::len).sum::<usize>() + 1;
    let mut fps = Vec::with_capacity(total);
    let mut tps = Vec::with_capacity(total);
    let mut thresholds = Vec::with_capacity(total);
    fps.push(0);
    tps.push(0);
    thresholds.push(S::infinity());
    for part in &kept {
        fps.extend(part.iter().map(|p| p.0));
        tps.extend(part.iter().map(|p| p.1));
        thresholds.extend(part.iter().map(|p| S::from_key(p.2)));
    }
    Roc {
        fps,
        tps,
        thresholds,
        n_pos,
        n_neg,
    }
}

fn check_classes<K>(h: &Histogram<K>) -> Result<()> {
    let (n_pos, n_neg) = (h.pos.len(), h.totals.iter().sum::<usize>());
    if n_pos == 0 || n_neg == 0 {
        return Err(Error::SingleClass { n_pos, n_neg });
    }
    Ok(())
}

/// `sklearn.metrics.roc_curve(labels, scores, drop_intermediate=...)` for 0/1 labels.
pub fn roc_curve<S: Score>(labels: &[u8], scores: &[S], drop_intermediate: bool) -> Result<Roc<S>> {
    validate(labels, scores)?;
    pool::install(|| {
        let h = histogram(labels, scores)?;
        check_classes(&h)?;
        Ok(build_roc(labels, scores, &h, 0, drop_intermediate))
    })
}

/// The beginning of sklearn's ROC (`drop_intermediate=True`): exactly its first points, up to
/// and including the first two distinct FPR values above `max_far`, which is all that TAR@FAR
/// picks for targets <= `max_far` look at. Only the highest impostor scores are sorted.
pub fn roc_prefix<S: Score>(labels: &[u8], scores: &[S], max_far: f64) -> Result<Roc<S>> {
    validate(labels, scores)?;
    pool::install(|| {
        let h = histogram(labels, scores)?;
        check_classes(&h)?;
        let n_neg: usize = h.totals.iter().sum();
        let min_fps = (max_far.clamp(0.0, 1.0) * n_neg as f64).floor() as u64 + 1;
        let mut wanted = min_fps as usize + (min_fps as usize / 8).max(1024);
        loop {
            // the highest buckets holding more than `wanted` impostors
            let mut cut = BUCKETS;
            let mut count = 0usize;
            while cut > 0 && count <= wanted {
                cut -= 1;
                count += h.totals[cut];
            }
            let roc = build_roc(labels, scores, &h, cut, true);
            // complete enough: a point beyond min_fps and a later one with a larger fps
            let first = roc.fps.iter().position(|&f| f >= min_fps);
            let enough = first.is_some_and(|a| roc.fps[a..].iter().any(|&f| f > roc.fps[a]));
            if enough || cut == 0 {
                return Ok(roc);
            }
            wanted = wanted.saturating_mul(4);
        }
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
        return Err(Error::EmptyRoc);
    }
    if !(target > 0.0 && target < 1.0) {
        return Err(Error::FarOutOfRange { target });
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
        let thr = vec![f32::INFINITY, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4];
        assert_eq!(roc.thresholds, thr);
        // drop_intermediate: 0.7 lies between 0.8 and 0.6 on a vertical run, 0.5 on a horizontal one
        let roc = roc_curve(&labels, &scores, true).unwrap();
        assert_eq!(roc.tps, vec![0, 1, 1, 3, 3]);
        assert_eq!(roc.fps, vec![0, 0, 1, 1, 3]);
    }

    #[test]
    fn prefix_is_the_start_of_the_full_curve() {
        let n = 300_000usize;
        let mut x = 0x2545F4914F6CDD1Du64;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let labels: Vec<u8> = (0..n).map(|_| (rnd() % 50 == 0) as u8).collect();
        let scores: Vec<f32> = labels
            .iter()
            .map(|&l| ((rnd() % 20_000) as f32 / 10_000.0 - 1.0) * 0.4 + l as f32 * 0.3)
            .collect();
        let full = roc_curve(&labels, &scores, true).unwrap();
        for max_far in [1e-5, 1e-3, 0.05, 0.3, 0.99] {
            let pre = roc_prefix(&labels, &scores, max_far).unwrap();
            let m = pre.fps.len();
            assert!(m <= full.fps.len());
            assert_eq!(pre.fps[..], full.fps[..m]);
            assert_eq!(pre.tps[..], full.tps[..m]);
            assert_eq!(pre.thresholds[..], full.thresholds[..m]);
            let min_fps = (max_far * pre.n_neg as f64).floor() as u64 + 1;
            let a = pre.fps.iter().position(|&f| f >= min_fps).unwrap();
            assert!(pre.fps[a..].iter().any(|&f| f > pre.fps[a]) || m == full.fps.len());
        }
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
        let err = roc_curve(&[1u8, 1], &[0.1f32, 0.2], true).unwrap_err();
        assert_eq!(err, Error::SingleClass { n_pos: 2, n_neg: 0 });
        assert!(err.to_string().contains("both classes"), "{err}");
        let err = roc_curve(&[1u8, 2], &[0.1f32, 0.2], true).unwrap_err();
        assert!(
            matches!(
                err,
                Error::BadLabel {
                    index: 1,
                    value: 2,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("labels[1] is 2"), "{err}");
        let err = roc_prefix(&[1u8, 0], &[0.1f32, f32::NAN], 0.1).unwrap_err();
        assert!(
            matches!(err, Error::NonFinite { arg: "scores", index: 1, value } if value.is_nan()),
            "{err:?}"
        );
        assert!(err.to_string().contains("scores[1] is nan"), "{err}");
        let err = roc_curve(&[1u8, 0], &[0.1f64, f64::NEG_INFINITY], true).unwrap_err();
        assert!(err.to_string().contains("scores[1] is -inf"), "{err}");
        assert_eq!(
            roc_curve::<f32>(&[], &[], true).unwrap_err(),
            Error::NoScores
        );
        assert!(matches!(
            roc_curve(&[1u8], &[0.1f64, 0.2], true),
            Err(Error::LengthMismatch {
                len: 1,
                other_len: 2,
                ..
            })
        ));
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
        for target in [0.0, 1.0, f64::NAN] {
            assert!(matches!(
                pick_far(&fpr, target, FarRule::Nearest),
                Err(Error::FarOutOfRange { .. })
            ));
        }
        assert_eq!(pick_far(&[], 0.1, FarRule::AtMost), Err(Error::EmptyRoc));
    }
}
