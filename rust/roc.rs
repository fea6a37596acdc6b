//! ROC curves identical to `sklearn.metrics.roc_curve`, and TAR@FAR picks (docs/protocols.md §3).
//!
//! sklearn sorts all scores, takes one ROC point per distinct score (descending) with the
//! cumulative genuine (tps) and impostor (fps) counts, optionally drops points collinear with
//! their neighbours (`drop_intermediate`: the second difference of both fps and tps is zero),
//! then prepends (0, 0, +inf). We compute the same integer counts without sorting the pairs
//! jointly: impostor scores (the bulk) are counted in buckets by the top bits of an
//! order-preserving integer key (2^11 buckets, 2^16 from 2^20 scores on), scattered into groups
//! of consecutive buckets of at most ~32k keys each, and each group is radix-sorted in cache, in
//! parallel; genuine scores are sorted apart; one walk per group over both emits sklearn's
//! points, dropping intermediate ones as they stream by (the two ends of each group are decided
//! against the neighbouring groups'). A ROC prefix (TAR@FAR) only sorts the groups of the
//! highest scores.
use rayon::prelude::*;

use crate::error::{Error, Result, LABELS_GENUINE_IMPOSTOR};
use crate::pool::{self, SharedOut};

/// Scores are validated and bucketed in blocks of this many values, in parallel.
const BLOCK: usize = 1 << 20;
/// Bits of the key that choose its bucket (the most significant ones): fine buckets for large
/// inputs, so that the highest scores (all a ROC prefix needs) are spread over many of them.
const TOP_BITS: u32 = 11;
const FINE_BITS: u32 = 16;
/// Inputs from this size on are bucketed by [`FINE_BITS`].
const FINE_FROM: usize = 1 << 20;
/// Impostor keys per group of consecutive buckets (one bucket may hold more): a group is sorted
/// in cache and walked as one part, in parallel with the others.
const GROUP_KEYS: usize = 1 << 15;

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
    /// The bucket of the key: its `bits` most significant bits.
    fn high(self, bits: u32) -> usize;
}

impl RadixKey for u32 {
    const BITS: u32 = 32;
    #[inline(always)]
    fn digit(self, shift: u32) -> usize {
        ((self >> shift) & 0x7ff) as usize
    }
    #[inline(always)]
    fn high(self, bits: u32) -> usize {
        (self >> (32 - bits)) as usize
    }
}
impl RadixKey for u64 {
    const BITS: u32 = 64;
    #[inline(always)]
    fn digit(self, shift: u32) -> usize {
        ((self >> shift) & 0x7ff) as usize
    }
    #[inline(always)]
    fn high(self, bits: u32) -> usize {
        (self >> (64 - bits)) as usize
    }
}

impl Score for f32 {
    type Key = u32;
    #[inline(always)]
    fn key(self) -> Option<u32> {
        if self.is_nan() {
            return None;
        }
        // negative: all bits flipped; positive: the sign bit set (branch-free: the sign of
        // scores around zero is unpredictable)
        let bits = (self + 0.0).to_bits();
        Some(bits ^ (((bits as i32 >> 31) as u32) | (1 << 31)))
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
        Some(bits ^ (((bits as i64 >> 63) as u64) | (1 << 63)))
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
/// The kept points of a ROC, in curve order, in one vector per key range.
type Kept<K> = Vec<Vec<Point<K>>>;

/// Raw points of one key range, walking down from its largest key, handed to `emit` in
/// order; `fp`/`tp` are the counts of all keys above the range. `pos` and `neg` are sorted
/// ascending.
#[inline(always)]
fn walk<K: RadixKey>(
    pos: &[K],
    neg: &[K],
    mut fp: u64,
    mut tp: u64,
    mut emit: impl FnMut(Point<K>),
) {
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
            emit((fp, tp, k));
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
        emit((fp, tp, key));
    }
    while i > 0 {
        let k = pos[i - 1];
        while i > 0 && pos[i - 1] == k {
            i -= 1;
            tp += 1;
        }
        emit((fp, tp, k));
    }
}

/// Whether sklearn's `drop_intermediate` keeps raw point `b` between its neighbours `a` and
/// `c`: where the slope changes (second difference of fps or tps non-zero); the first and the
/// last point of the whole curve (a missing neighbour) are kept.
#[inline(always)]
fn keeps<K>(a: Option<Point<K>>, b: Point<K>, c: Option<Point<K>>) -> bool {
    match (a, c) {
        (Some(a), Some(c)) => a.0 + c.0 != 2 * b.0 || a.1 + c.1 != 2 * b.1,
        _ => true,
    }
}

/// The points of one key range (see [`walk`]) after `drop_intermediate`, decided as they
/// stream by for every raw point whose two neighbours are in the range; the range's first and
/// last raw points wait for the neighbouring ranges ([`resolve_ends`]).
struct Part<K> {
    /// kept points among the raw points 1..m-1 (all raw points without dropping)
    inner: Vec<Point<K>>,
    /// raw points 0 and 1, and m-2 and m-1 (m raw points; None where m is too small)
    head: [Option<Point<K>>; 2],
    tail: [Option<Point<K>>; 2],
}

fn walk_part<K: RadixKey>(pos: &[K], neg: &[K], fp: u64, tp: u64, drop: bool) -> Part<K> {
    let mut part = Part {
        inner: Vec::new(),
        head: [None; 2],
        tail: [None; 2],
    };
    let mut m = 0usize;
    walk(pos, neg, fp, tp, |c| {
        if !drop {
            part.inner.push(c);
            return;
        }
        if m < 2 {
            part.head[m] = Some(c);
        }
        // decide raw point m-1 (the newest before c) now that both its neighbours are known
        if m >= 2 {
            let (a, b) = (part.tail[0], part.tail[1].expect("two raw points seen"));
            if keeps(a, b, Some(c)) {
                part.inner.push(b);
            }
        }
        part.tail = [part.tail[1], Some(c)];
        m += 1;
    });
    part
}

/// The kept points of each range in order: the inner points of a range with its first and
/// last raw points decided against the neighbouring ranges' (empty ranges are skipped).
fn resolve_ends<K: RadixKey>(parts: Vec<Part<K>>, drop: bool) -> Kept<K> {
    if !drop {
        return parts.into_iter().map(|p| p.inner).collect();
    }
    let parts: Vec<Part<K>> = parts.into_iter().filter(|p| p.head[0].is_some()).collect();
    let n = parts.len();
    let mut out = Vec::with_capacity(n);
    for p in 0..n {
        let part = &parts[p];
        let before = if p > 0 { parts[p - 1].tail[1] } else { None };
        let after = if p + 1 < n {
            parts[p + 1].head[0]
        } else {
            None
        };
        let first = part.head[0].expect("non-empty");
        let mut kept = Vec::with_capacity(part.inner.len() + 2);
        match part.head[1] {
            None => {
                // one raw point: both neighbours are in other ranges
                if keeps(before, first, after) {
                    kept.push(first);
                }
            }
            Some(second) => {
                if keeps(before, first, Some(second)) {
                    kept.push(first);
                }
                kept.extend_from_slice(&part.inner);
                let last = part.tail[1].expect("non-empty");
                if keeps(part.tail[0], last, after) {
                    kept.push(last);
                }
            }
        }
        out.push(kept);
    }
    out
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
/// scores, the histogram of impostor keys over the buckets (`1 << bits` of them).
struct Histogram<K> {
    pos: Vec<K>,
    block_hists: Vec<Vec<u32>>,
    /// impostor count per bucket
    totals: Vec<usize>,
    /// key bits that choose a bucket
    bits: u32,
}

impl<K: RadixKey> Histogram<K> {
    fn buckets(&self) -> usize {
        self.totals.len()
    }
}

/// The key of a finite score, or None for NaN/inf (and a label other than 0/1 is flagged in
/// `bad` too): the checks of the histogram pass, without a branch per score.
#[inline(always)]
fn checked_key<S: Score>(score: S, label: u8, bad: &mut bool) -> S::Key {
    *bad |= !score.finite() | (label > 1);
    score.key().unwrap_or_default()
}

/// The first entry of `range` with a non-finite score or a label other than 0/1, as its error.
fn first_bad<S: Score>(labels: &[u8], scores: &[S], range: std::ops::Range<usize>) -> Error {
    for i in range {
        if !scores[i].finite() {
            return Error::NonFinite {
                arg: "scores",
                index: i,
                value: scores[i].to_f64(),
            };
        }
        if labels[i] > 1 {
            return Error::BadLabel {
                arg: "labels",
                index: i,
                value: labels[i],
                expected: LABELS_GENUINE_IMPOSTOR,
            };
        }
    }
    Error::Internal("a bad score or label was flagged but not found".into())
}

fn histogram<S: Score>(labels: &[u8], scores: &[S]) -> Result<Histogram<S::Key>> {
    let n = labels.len();
    let n_blocks = n.div_ceil(BLOCK);
    let bits = if n >= FINE_FROM { FINE_BITS } else { TOP_BITS };
    // per block: validation, genuine keys, impostor bucket histogram
    type BlockOut<K> = Result<(Vec<K>, Vec<u32>)>;
    let blocks: Vec<BlockOut<S::Key>> = (0..n_blocks)
        .into_par_iter()
        .map(|b| {
            let range = b * BLOCK..((b + 1) * BLOCK).min(n);
            let mut pos = Vec::new();
            let mut hist = vec![0u32; 1 << bits];
            let mut bad = false;
            for (&score, &label) in scores[range.clone()].iter().zip(&labels[range.clone()]) {
                let key = checked_key(score, label, &mut bad);
                if label == 1 {
                    pos.push(key);
                } else {
                    hist[key.high(bits)] += 1;
                }
            }
            if bad {
                return Err(first_bad(labels, scores, range));
            }
            Ok((pos, hist))
        })
        .collect();
    let mut pos = Vec::new();
    let mut block_hists = Vec::with_capacity(n_blocks);
    for block in blocks {
        let (p, h) = block?;
        pos.extend_from_slice(&p);
        block_hists.push(h);
    }
    let mut totals = vec![0usize; 1 << bits];
    for h in &block_hists {
        for (t, &c) in totals.iter_mut().zip(h) {
            *t += c as usize;
        }
    }
    pos.par_sort_unstable();
    Ok(Histogram {
        pos,
        block_hists,
        totals,
        bits,
    })
}

/// Groups of consecutive buckets from `cut` up, as boundaries: group `g` is the buckets
/// `bounds[g]..bounds[g + 1]`, with at most [`GROUP_KEYS`] impostors unless it is one bucket.
fn group_buckets(totals: &[usize], cut: usize) -> Vec<usize> {
    let mut bounds = vec![cut];
    let mut count = 0usize;
    for (b, &t) in totals.iter().enumerate().skip(cut) {
        if count + t > GROUP_KEYS && b > *bounds.last().expect("starts with cut") {
            bounds.push(b);
            count = 0;
        }
        count += t;
    }
    bounds.push(totals.len());
    bounds
}

/// Impostor keys of the buckets `bounds[0]..`, sorted ascending, and the start of each group
/// of buckets (`bounds`) in them.
fn bucket_sort<S: Score>(
    labels: &[u8],
    scores: &[S],
    h: &Histogram<S::Key>,
    bounds: &[usize],
) -> (Vec<S::Key>, Vec<usize>) {
    let n = labels.len();
    let (cut, bits) = (bounds[0], h.bits);
    let n_groups = bounds.len() - 1;
    let mut group_of = vec![u32::MAX; h.buckets()];
    for g in 0..n_groups {
        group_of[bounds[g]..bounds[g + 1]].fill(g as u32);
    }
    // group-major, then block order: where each block starts writing in each group
    let mut cursors: Vec<Vec<usize>> = h
        .block_hists
        .iter()
        .map(|hist| {
            (0..n_groups)
                .map(|g| {
                    hist[bounds[g]..bounds[g + 1]]
                        .iter()
                        .map(|&c| c as usize)
                        .sum()
                })
                .collect()
        })
        .collect();
    let mut group_start = vec![0usize; n_groups + 1];
    let mut at = 0usize;
    for (g, start) in group_start.iter_mut().take(n_groups).enumerate() {
        *start = at;
        for c in cursors.iter_mut() {
            let count = c[g];
            c[g] = at;
            at += count;
        }
    }
    group_start[n_groups] = at;
    // pass 2: scatter impostor keys into their groups
    let mut neg = pool::zeroed_vec::<S::Key>(at);
    let out = SharedOut(neg.as_mut_ptr());
    cursors
        .into_par_iter()
        .enumerate()
        .for_each(|(b, mut cursor)| {
            let range = b * BLOCK..((b + 1) * BLOCK).min(n);
            for (&score, &label) in scores[range.clone()].iter().zip(&labels[range]) {
                if label == 0 {
                    // all finite: checked by pass 1
                    let key = score.key().unwrap_or_default();
                    let t = key.high(bits);
                    if t >= cut {
                        let g = group_of[t] as usize;
                        // SAFETY: the (block, group) cursors cover disjoint ranges of `neg`
                        // sized by exact counts from pass 1: each slot is written once.
                        unsafe { *out.get().add(cursor[g]) = key };
                        cursor[g] += 1;
                    }
                }
            }
        });
    // pass 3: sort each group, in cache, in parallel
    let mut slices: Vec<&mut [S::Key]> = Vec::with_capacity(n_groups);
    let mut rest: &mut [S::Key] = &mut neg;
    for g in 0..n_groups {
        let (head, tail) = rest.split_at_mut(group_start[g + 1] - group_start[g]);
        if !head.is_empty() {
            slices.push(head);
        }
        rest = tail;
    }
    slices.sort_by_key(|s| std::cmp::Reverse(s.len())); // big groups first balance better
    slices.into_par_iter().for_each(|group| {
        let mut buf = vec![S::Key::default(); group.len()];
        // keys of one bucket share their top bits: radix_sort skips those digits
        radix_sort_low(group, &mut buf, S::Key::BITS);
    });
    (neg, group_start)
}

/// The kept points (sklearn's, without the leading (0, 0, +inf)) of the ROC restricted to the
/// score buckets `cut..` (all of it when `cut == 0`), one vector per key range in curve order.
/// With `cut > 0` the last raw point is left out: whether sklearn keeps it depends on the next
/// one.
fn kept_points<S: Score>(
    labels: &[u8],
    scores: &[S],
    h: &Histogram<S::Key>,
    cut: usize,
    drop_intermediate: bool,
) -> Kept<S::Key> {
    let bounds = group_buckets(&h.totals, cut);
    let n_groups = bounds.len() - 1;
    let (neg, group_start) = bucket_sort(labels, scores, h, &bounds);
    let pos = &h.pos;
    // Walk the groups from the top key range down, in parallel: each starts from the counts
    // above it. Genuine keys go with the group of their bucket.
    let pos_start: Vec<usize> = bounds
        .iter()
        .map(|&b| pos.partition_point(|k| k.high(h.bits) < b))
        .collect();
    let mut above = vec![(0u64, 0u64); n_groups + 1]; // (fp, tp) above group g
    for g in (0..n_groups).rev() {
        let (fp, tp) = above[g + 1];
        above[g] = (
            fp + (group_start[g + 1] - group_start[g]) as u64,
            tp + (pos_start[g + 1] - pos_start[g]) as u64,
        );
    }
    let parts: Vec<Part<S::Key>> = (0..n_groups)
        .into_par_iter()
        .rev()
        .map(|g| {
            let (fp, tp) = above[g + 1];
            walk_part(
                &pos[pos_start[g]..pos_start[g + 1]],
                &neg[group_start[g]..group_start[g + 1]],
                fp,
                tp,
                drop_intermediate,
            )
        })
        .collect();
    drop(neg);
    let mut kept = resolve_ends(parts, drop_intermediate);
    if cut > 0 {
        if let Some(last) = kept.iter_mut().rev().find(|p| !p.is_empty()) {
            last.pop();
        }
    }
    kept
}

/// [`kept_points`] as a [`Roc`], with the leading (0, 0, +inf).
fn build_roc<S: Score>(h: &Histogram<S::Key>, kept: &[Vec<Point<S::Key>>]) -> Roc<S> {
    let total = kept.iter().map(Vec::len).sum::<usize>() + 1;
    let mut fps = Vec::with_capacity(total);
    let mut tps = Vec::with_capacity(total);
    let mut thresholds = Vec::with_capacity(total);
    fps.push(0);
    tps.push(0);
    thresholds.push(S::infinity());
    for part in kept {
        fps.extend(part.iter().map(|p| p.0));
        tps.extend(part.iter().map(|p| p.1));
        thresholds.extend(part.iter().map(|p| S::from_key(p.2)));
    }
    Roc {
        fps,
        tps,
        thresholds,
        n_pos: h.pos.len() as u64,
        n_neg: h.totals.iter().sum::<usize>() as u64,
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
        let kept = kept_points(labels, scores, &h, 0, drop_intermediate);
        Ok(build_roc(&h, &kept))
    })
}

/// The kept points of the beginning of sklearn's ROC and the histogram they came from.
struct Prefix<K> {
    h: Histogram<K>,
    kept: Kept<K>,
}

/// The kept points of the beginning of sklearn's ROC (`drop_intermediate=True`) that
/// [`roc_prefix`] returns, with the histogram they came from.
fn prefix_points<S: Score>(labels: &[u8], scores: &[S], max_far: f64) -> Result<Prefix<S::Key>> {
    validate(labels, scores)?;
    let h = histogram(labels, scores)?;
    check_classes(&h)?;
    let n_neg: usize = h.totals.iter().sum();
    let min_fps = (max_far.clamp(0.0, 1.0) * n_neg as f64).floor() as u64 + 1;
    let mut wanted = min_fps as usize + (min_fps as usize / 8).max(1024);
    loop {
        // the highest buckets holding more than `wanted` impostors
        let mut cut = h.buckets();
        let mut count = 0usize;
        while cut > 0 && count <= wanted {
            cut -= 1;
            count += h.totals[cut];
        }
        let kept = kept_points(labels, scores, &h, cut, true);
        // complete enough: a point beyond min_fps and a later one with a larger fps
        let mut fps = kept.iter().flatten().map(|p| p.0);
        let enough = fps
            .find(|&f| f >= min_fps)
            .is_some_and(|first| fps.any(|f| f > first));
        if enough || cut == 0 {
            return Ok(Prefix { h, kept });
        }
        wanted = wanted.saturating_mul(4);
    }
}

/// The beginning of sklearn's ROC (`drop_intermediate=True`): exactly its first points, up to
/// and including the first two distinct FPR values above `max_far`, which is all that TAR@FAR
/// picks for targets <= `max_far` look at. Only the highest impostor scores are sorted.
pub fn roc_prefix<S: Score>(labels: &[u8], scores: &[S], max_far: f64) -> Result<Roc<S>> {
    pool::install(|| {
        let Prefix { h, kept } = prefix_points(labels, scores, max_far)?;
        Ok(build_roc(&h, &kept))
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

/// A ROC point picked for a FAR target: its index in the ROC arrays, FPR, TPR and threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FarPick<S> {
    pub index: usize,
    pub fpr: f64,
    pub tpr: f64,
    pub threshold: S,
}

/// The points [`pick_far`] picks for each of `fars` on the ROC of `labels` and `scores`,
/// computed on [`roc_prefix`] (exactly the beginning of the full curve, so the indices are
/// those of the full curve) without handing the curve back: TAR@FAR at IJB-C size does not
/// pay for converting the hundreds of thousands of points of the prefix.
pub fn tar_at_far_points<S: Score>(
    labels: &[u8],
    scores: &[S],
    fars: &[f64],
    rule: FarRule,
) -> Result<Vec<FarPick<S>>> {
    if let Some(&target) = fars.iter().find(|&&f| !(f > 0.0 && f < 1.0)) {
        return Err(Error::FarOutOfRange { target });
    }
    let Some(max_far) = fars.iter().copied().reduce(f64::max) else {
        return Ok(Vec::new());
    };
    pool::install(|| {
        let Prefix { h, kept } = prefix_points(labels, scores, max_far)?;
        let (n_pos, n_neg) = (h.pos.len() as u64, h.totals.iter().sum::<usize>() as u64);
        // the FPR of each point as Roc::fpr computes it, the leading (0, 0, +inf) first
        let mut fpr = Vec::with_capacity(kept.iter().map(Vec::len).sum::<usize>() + 1);
        fpr.push(0.0);
        fpr.extend(kept.iter().flatten().map(|p| p.0 as f64 / n_neg as f64));
        // point `index` (>= 1) is point `index - 1 - starts[p]` of the part `p` it falls in
        let starts: Vec<usize> = kept
            .iter()
            .scan(0, |at, part| {
                let start = *at;
                *at += part.len();
                Some(start)
            })
            .collect();
        let point = |index: usize| {
            let k = index - 1;
            let p = starts.partition_point(|&s| s <= k) - 1;
            kept[p].get(k - starts[p]).copied()
        };
        fars.iter()
            .map(|&target| {
                let index = pick_far(&fpr, target, rule)?;
                let (tps, threshold) = match index {
                    0 => (0, S::infinity()),
                    i => {
                        let p = point(i).ok_or_else(|| {
                            Error::Internal(format!("ROC point {i} beyond the prefix"))
                        })?;
                        (p.1, S::from_key(p.2))
                    }
                };
                Ok(FarPick {
                    index,
                    fpr: fpr[index],
                    tpr: tps as f64 / n_pos as f64,
                    threshold,
                })
            })
            .collect()
    })
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

    /// sklearn's procedure written out: sort descending, one raw point per distinct score,
    /// drop_intermediate by the second differences, prepend (0, 0, +inf).
    fn reference_roc(labels: &[u8], scores: &[f32], drop: bool) -> (Vec<u64>, Vec<u64>, Vec<f32>) {
        let mut order: Vec<usize> = (0..scores.len()).collect();
        order.sort_by(|&a, &b| scores[b].partial_cmp(&scores[a]).unwrap());
        let (mut fps, mut tps, mut thr) = (Vec::new(), Vec::new(), Vec::new());
        let (mut fp, mut tp) = (0u64, 0u64);
        for (k, &i) in order.iter().enumerate() {
            fp += (labels[i] == 0) as u64;
            tp += (labels[i] == 1) as u64;
            // -0.0 == 0.0: one threshold, as in sklearn
            if k + 1 == order.len() || scores[order[k + 1]] != scores[i] {
                fps.push(fp);
                tps.push(tp);
                thr.push(scores[i] + 0.0);
            }
        }
        if drop && fps.len() > 2 {
            let keep: Vec<usize> = (0..fps.len())
                .filter(|&i| {
                    i == 0
                        || i + 1 == fps.len()
                        || fps[i - 1] + fps[i + 1] != 2 * fps[i]
                        || tps[i - 1] + tps[i + 1] != 2 * tps[i]
                })
                .collect();
            fps = keep.iter().map(|&i| fps[i]).collect();
            tps = keep.iter().map(|&i| tps[i]).collect();
            thr = keep.iter().map(|&i| thr[i]).collect();
        }
        fps.insert(0, 0);
        tps.insert(0, 0);
        thr.insert(0, f32::INFINITY);
        (fps, tps, thr)
    }

    #[test]
    fn fine_buckets_and_groups_match_the_reference() {
        // above FINE_FROM scores: 2^16 buckets, groups of buckets, the ends of each group
        // decided against its neighbours; many ties, both signs, a few huge buckets
        let n = FINE_FROM + 70_001;
        let mut x = 0x9E3779B97F4A7C15u64;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let labels: Vec<u8> = (0..n).map(|_| (rnd() % 7 == 0) as u8).collect();
        let scores: Vec<f32> = labels
            .iter()
            .map(|&l| match rnd() % 4 {
                // a coarse grid (ties), a fine one (few ties), one heavy value, a signed zero
                0 => (rnd() % 3000) as f32 / 1000.0 - 1.5 + l as f32 * 0.5,
                1 => ((rnd() % (1 << 24)) as f32 / (1 << 24) as f32 - 0.5) * 0.6,
                2 => 0.25,
                _ => -0.0,
            })
            .collect();
        for drop in [true, false] {
            let roc = roc_curve(&labels, &scores, drop).unwrap();
            let (fps, tps, thr) = reference_roc(&labels, &scores, drop);
            assert_eq!(roc.fps, fps, "drop {drop}");
            assert_eq!(roc.tps, tps, "drop {drop}");
            assert_eq!(roc.thresholds, thr, "drop {drop}");
        }
        let full = roc_curve(&labels, &scores, true).unwrap();
        let fpr = full.fpr();
        let fars = [1e-6, 1e-4, 0.01, 0.1, 0.3, 0.6];
        for rule in [FarRule::Nearest, FarRule::AtMost] {
            let picks = tar_at_far_points(&labels, &scores, &fars, rule).unwrap();
            for (pick, &far) in picks.iter().zip(&fars) {
                let i = pick_far(&fpr, far, rule).unwrap();
                assert_eq!(pick.index, i, "{rule:?} {far}");
                assert_eq!(pick.fpr, fpr[i]);
                assert_eq!(pick.tpr, full.tpr()[i]);
                assert_eq!(pick.threshold, full.thresholds[i]);
            }
        }
        // groups: consecutive, from the cut, at most GROUP_KEYS keys unless one bucket
        let h = histogram(&labels, &scores).unwrap();
        assert_eq!(h.bits, FINE_BITS);
        let bounds = group_buckets(&h.totals, 100);
        assert_eq!((bounds[0], *bounds.last().unwrap()), (100, h.buckets()));
        for w in bounds.windows(2) {
            let keys: usize = h.totals[w[0]..w[1]].iter().sum();
            assert!(
                w[1] > w[0] && (keys <= GROUP_KEYS || w[1] == w[0] + 1),
                "{w:?}"
            );
        }
    }

    #[test]
    fn bad_scores_and_labels_named_in_large_inputs() {
        let n = FINE_FROM + 5;
        let mut labels = vec![0u8; n];
        labels[7] = 1;
        let mut scores = vec![0.5f32; n];
        labels[FINE_FROM + 2] = 3;
        scores[FINE_FROM + 3] = f32::INFINITY;
        let err = roc_curve(&labels, &scores, true).unwrap_err();
        assert!(
            matches!(err, Error::BadLabel { index, value: 3, .. } if index == FINE_FROM + 2),
            "{err:?}"
        );
        labels[FINE_FROM + 2] = 0;
        scores[FINE_FROM + 1] = f32::NAN;
        let err = tar_at_far_points(&labels, &scores, &[0.1], FarRule::Nearest).unwrap_err();
        assert!(
            matches!(err, Error::NonFinite { index, .. } if index == FINE_FROM + 1),
            "{err:?}"
        );
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
