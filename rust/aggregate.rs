//! IJB-B/C template aggregation (docs/protocols.md §3).
//!
//! Per image: `v = feats[i] (+ flip[i])`, optionally `v /= |v|`, optionally `v *= weights[i]`.
//! Per template: images of one media are averaged, media vectors summed, the sum L2-normalised.
//!
//! An image whose features (and flip features) are exactly all zeros, which is what
//! `--skip-bad` writes for an unreadable image, contributes the zero vector under
//! `normalize_images` too (instead of dividing by its zero norm): it adds nothing to its media's
//! sum but still counts in that media's mean, exactly as without normalisation. A template whose
//! images are all zero still fails with [`Error::ZeroTemplate`]; NaN/inf values stay an error.
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::pool;

/// A feature element type the kernels read (f32 or f64), widened to f64 for accumulation.
pub trait Element: Copy + Send + Sync + 'static {
    fn to_f64(self) -> f64;
}
impl Element for f32 {
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self as f64
    }
}
impl Element for f64 {
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self
    }
}

/// Borrowed inputs of [`aggregate_templates`]; `feats` and `flip` are row-major (n, dim).
pub struct AggregateInput<'a, T> {
    pub feats: &'a [T],
    pub flip: Option<&'a [T]>,
    pub weights: Option<&'a [f64]>,
    pub templates: &'a [i64],
    pub medias: &'a [i64],
    pub dim: usize,
    pub normalize_images: bool,
}

/// Template features (row-major (n_templates, dim), unit norm) and their sorted unique ids.
///
/// The matrix is `storage[start..start + n_templates * dim]`, starting on a 64-byte boundary
/// (a cache line), so that the pair-scoring kernels' 64-byte loads of its rows never straddle
/// two lines when `dim` is a multiple of 16 (512: they run ~1.3x faster on such rows).
#[derive(Debug, Clone)]
pub struct Templates {
    pub storage: Vec<f32>,
    pub start: usize,
    pub ids: Vec<i64>,
    pub dim: usize,
}

impl Templates {
    /// The row-major (n_templates, dim) matrix.
    pub fn feats(&self) -> &[f32] {
        &self.storage[self.start..self.start + self.ids.len() * self.dim]
    }
}

impl PartialEq for Templates {
    fn eq(&self, other: &Self) -> bool {
        self.feats() == other.feats() && self.ids == other.ids && self.dim == other.dim
    }
}

/// Images grouped by template: `order[offsets[t]..offsets[t+1]]` are the rows of template `t`,
/// sorted by (media id, row).
pub struct Grouping {
    pub ids: Vec<i64>,
    pub offsets: Vec<usize>,
    pub order: Vec<u32>,
}

/// Sorted unique ids and, for every entry of `values`, the index of its id (parallel lookup).
pub fn index_ids(values: &[i64]) -> (Vec<i64>, Vec<u32>) {
    if values.windows(2).all(|w| w[0] <= w[1]) {
        // already grouped in id order (as IJB metadata lists its images): one pass, no sort
        let mut ids = Vec::new();
        let index = values
            .iter()
            .map(|&v| {
                if ids.last() != Some(&v) {
                    ids.push(v);
                }
                (ids.len() - 1) as u32
            })
            .collect();
        return (ids, index);
    }
    let mut ids = values.to_vec();
    ids.par_sort_unstable();
    ids.dedup();
    let index = values
        .par_iter()
        .map(|v| ids.binary_search(v).map(|i| i as u32).unwrap_or(u32::MAX))
        .collect();
    (ids, index)
}

/// Group rows by template (counting sort, stable), then order each group by media id.
pub fn group_by_template(templates: &[i64], medias: &[i64]) -> Grouping {
    let (ids, tindex) = index_ids(templates);
    let mut offsets = vec![0usize; ids.len() + 1];
    for &t in &tindex {
        offsets[t as usize + 1] += 1;
    }
    for t in 0..ids.len() {
        offsets[t + 1] += offsets[t];
    }
    let mut cursor = offsets.clone();
    let mut order = vec![0u32; templates.len()];
    for (row, &t) in tindex.iter().enumerate() {
        order[cursor[t as usize]] = row as u32;
        cursor[t as usize] += 1;
    }
    // Rows within a template are already ascending; a stable sort by media keeps (media, row).
    let mut chunks: Vec<&mut [u32]> = Vec::with_capacity(ids.len());
    let mut rest: &mut [u32] = &mut order;
    for t in 0..ids.len() {
        let (head, tail) = rest.split_at_mut(offsets[t + 1] - offsets[t]);
        chunks.push(head);
        rest = tail;
    }
    chunks
        .into_par_iter()
        .for_each(|rows| rows.sort_by_key(|&r| medias[r as usize]));
    Grouping {
        ids,
        offsets,
        order,
    }
}

fn check_lengths<T>(input: &AggregateInput<'_, T>) -> Result<usize> {
    let n = input.templates.len();
    if input.dim == 0 {
        return Err(Error::ZeroDimension { arg: "feats" });
    }
    if n == 0 {
        return Err(Error::NoImages { arg: "feats" });
    }
    if input.feats.len() != n * input.dim {
        return Err(Error::RowCountMismatch {
            arg: "feats",
            rows: input.feats.len() / input.dim,
            dim: input.dim,
            other: "templates",
            other_len: n,
        });
    }
    if input.medias.len() != n {
        return Err(Error::LengthMismatch {
            arg: "medias",
            len: input.medias.len(),
            unit: "entries",
            other: "templates",
            other_len: n,
        });
    }
    if let Some(flip) = input.flip {
        if flip.len() != input.feats.len() {
            return Err(Error::LengthMismatch {
                arg: "flip_feats",
                len: flip.len(),
                unit: "elements",
                other: "feats",
                other_len: input.feats.len(),
            });
        }
    }
    if let Some(w) = input.weights {
        if w.len() != n {
            return Err(Error::LengthMismatch {
                arg: "weights",
                len: w.len(),
                unit: "entries",
                other: "templates",
                other_len: n,
            });
        }
    }
    if n > u32::MAX as usize {
        return Err(Error::TooMany {
            what: "images",
            count: n,
        });
    }
    Ok(n)
}

/// Image `row` after flip-sum, optional normalisation and weighting, added times `scale` to `acc`.
/// Returns false when normalisation meets a NaN or infinite norm, or a zero norm of an image that
/// is not all zeros. An all-zero image (features and flip exactly 0, a finite weight) adds nothing
/// and returns true, as it does without normalisation. (NaN/inf values otherwise propagate into
/// the template sum, which [`aggregate_one`] checks once.)
#[inline(always)]
fn add_image<T: Element>(
    input: &AggregateInput<'_, T>,
    row: usize,
    scale: f64,
    acc: &mut [f64],
) -> bool {
    let d = input.dim;
    let a = &input.feats[row * d..(row + 1) * d];
    let b = input.flip.map(|f| &f[row * d..(row + 1) * d]);
    let mut factor = scale;
    if let Some(w) = input.weights {
        factor *= w[row];
    }
    if input.normalize_images {
        let norm = match b {
            Some(b) => a
                .iter()
                .zip(b)
                .map(|(&x, &y)| {
                    let v = x.to_f64() + y.to_f64();
                    v * v
                })
                .sum::<f64>(),
            None => a.iter().map(|&x| x.to_f64() * x.to_f64()).sum::<f64>(),
        }
        .sqrt();
        if norm == 0.0 && is_zero_image(input, row) {
            // a skipped image (`--skip-bad` writes zero rows): the zero vector, as without
            // normalisation, unless its weight is NaN/inf (0 * inf is NaN there too)
            return input.weights.is_none_or(|w| w[row].is_finite());
        }
        if norm == 0.0 || !norm.is_finite() {
            return false;
        }
        factor /= norm;
    }
    match b {
        Some(b) => {
            for ((s, &x), &y) in acc.iter_mut().zip(a).zip(b) {
                *s += (x.to_f64() + y.to_f64()) * factor;
            }
        }
        None => {
            for (s, &x) in acc.iter_mut().zip(a) {
                *s += x.to_f64() * factor;
            }
        }
    }
    true
}

/// Whether image `row`'s features and flip features (when given) are all exactly zero (either sign).
fn is_zero_image<T: Element>(input: &AggregateInput<'_, T>, row: usize) -> bool {
    let d = input.dim;
    input.feats[row * d..(row + 1) * d]
        .iter()
        .all(|x| x.to_f64() == 0.0)
        && input
            .flip
            .is_none_or(|f| f[row * d..(row + 1) * d].iter().all(|x| x.to_f64() == 0.0))
}

/// Whether image `row`'s features, flip or weight hold NaN or inf.
fn is_non_finite<T: Element>(input: &AggregateInput<'_, T>, r: usize) -> bool {
    let d = input.dim;
    input.feats[r * d..(r + 1) * d]
        .iter()
        .any(|x| !x.to_f64().is_finite())
        || input.flip.is_some_and(|f| {
            f[r * d..(r + 1) * d]
                .iter()
                .any(|x| !x.to_f64().is_finite())
        })
        || input.weights.is_some_and(|w| !w[r].is_finite())
}

/// The first row of `rows` whose features, flip or weight hold NaN or inf.
fn first_non_finite<T: Element>(input: &AggregateInput<'_, T>, rows: &[u32]) -> usize {
    rows.iter()
        .map(|&r| r as usize)
        .find(|&r| is_non_finite(input, r))
        .unwrap_or(rows[0] as usize)
}

/// Why one template could not be aggregated.
enum Bad {
    /// image row whose vector is NaN/inf (or, when normalising, of zero norm but not all zeros)
    Image(usize),
    /// the template's vector sums to zero
    Zero,
}

/// [`aggregate_one_impl`] compiled for AVX2 when the CPU has it (wider vectors, same rounded
/// operations: no fused multiply-add, so the result is identical to the baseline build).
fn aggregate_one<T: Element>(
    input: &AggregateInput<'_, T>,
    rows: &[u32],
    out: &mut [f32],
) -> Option<Bad> {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2")]
        unsafe fn avx2<T: Element>(
            input: &AggregateInput<'_, T>,
            rows: &[u32],
            out: &mut [f32],
        ) -> Option<Bad> {
            aggregate_one_impl(input, rows, out)
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 is available (checked above).
            return unsafe { avx2(input, rows, out) };
        }
    }
    aggregate_one_impl(input, rows, out)
}

#[inline(always)]
fn aggregate_one_impl<T: Element>(
    input: &AggregateInput<'_, T>,
    rows: &[u32],
    out: &mut [f32],
) -> Option<Bad> {
    let d = input.dim;
    // the media runs of `rows` (sorted by media, then row): `ends[m]` ends media m
    let mut ends = Vec::new();
    for k in 1..rows.len() {
        if input.medias[rows[k] as usize] != input.medias[rows[k - 1] as usize] {
            ends.push(k);
        }
    }
    ends.push(rows.len());
    // Each media's images are added in ascending row order, as in (media, row) order, but the
    // images of the whole template are read in row order, into one sum per media: the rows
    // of a template are usually near one another, and reading them in memory order lets the
    // CPU prefetch them (media order jumps back and forth).
    let mut sums = vec![0f64; ends.len() * d];
    if ends.len() == 1 {
        for &r in rows {
            if !add_image(input, r as usize, 1.0, &mut sums) {
                return Some(Bad::Image(r as usize));
            }
        }
    } else {
        let mut by_row = Vec::with_capacity(rows.len());
        let mut start = 0;
        for (m, &end) in ends.iter().enumerate() {
            by_row.extend(rows[start..end].iter().map(|&r| (r, m)));
            start = end;
        }
        by_row.sort_unstable_by_key(|&(r, _)| r);
        for &(r, m) in &by_row {
            if !add_image(input, r as usize, 1.0, &mut sums[m * d..(m + 1) * d]) {
                // the image that media order meets first, as the error names it
                return Some(Bad::Image(first_bad_image(input, rows)));
            }
        }
    }
    let mut acc = vec![0f64; d];
    let mut start = 0;
    for (m, &end) in ends.iter().enumerate() {
        let count = (end - start) as f64;
        for (s, x) in acc.iter_mut().zip(&sums[m * d..(m + 1) * d]) {
            *s += x / count;
        }
        start = end;
    }
    let norm = acc.iter().map(|x| x * x).sum::<f64>().sqrt();
    if !norm.is_finite() {
        return Some(Bad::Image(first_non_finite(input, rows)));
    }
    if norm == 0.0 {
        return Some(Bad::Zero);
    }
    for (o, s) in out.iter_mut().zip(&acc) {
        *o = (s / norm) as f32;
    }
    None
}

/// The first of `rows` (in their order) that [`add_image`] refuses.
fn first_bad_image<T: Element>(input: &AggregateInput<'_, T>, rows: &[u32]) -> usize {
    let mut scratch = vec![0f64; input.dim];
    rows.iter()
        .map(|&r| r as usize)
        .find(|&r| !add_image(input, r, 1.0, &mut scratch))
        .unwrap_or(rows[0] as usize)
}

/// Images of the next template whose loads are started before a template is aggregated.
const AHEAD: usize = 2;

/// Asks the CPU to start loading image `row`'s features (and flip features) into cache. The
/// images of a template are read in memory order, which the CPU's own prefetchers follow, but
/// they stop during a template's closing arithmetic (its norm is a sequential sum of 512
/// squares), so the next template's first images would start with cache misses.
#[inline(always)]
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
fn prefetch_image<T: Element>(input: &AggregateInput<'_, T>, row: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let d = input.dim;
        for part in [Some(input.feats), input.flip].into_iter().flatten() {
            let part = &part[row * d..(row + 1) * d];
            let p = part.as_ptr() as *const i8;
            for offset in (0..std::mem::size_of_val(part)).step_by(64) {
                // SAFETY: a prefetch has no effect but on caches; the address is inside `part`.
                unsafe { _mm_prefetch::<_MM_HINT_T0>(p.add(offset)) };
            }
        }
    }
}

/// Aggregate image features into L2-normalised template features (docs/protocols.md §3).
///
/// Errors name the first offending template (in id order) or image row.
pub fn aggregate_templates<T: Element>(input: &AggregateInput<'_, T>) -> Result<Templates> {
    check_lengths(input)?;
    let d = input.dim;
    pool::install(|| {
        let grouping = group_by_template(input.templates, input.medias);
        let n_templates = grouping.ids.len();
        let len = n_templates * d;
        // 15 floats of slack: an f32 allocation is 4-aligned, 64-byte alignment is <= 15 away
        let mut storage = pool::zeroed_vec::<f32>(len + 15);
        let start = (storage.as_ptr() as usize).next_multiple_of(64) - storage.as_ptr() as usize;
        let start = start / std::mem::size_of::<f32>();
        let bad: Vec<(usize, Bad)> = storage[start..start + len]
            .par_chunks_mut(d)
            .enumerate()
            .filter_map(|(t, out)| {
                let rows = &grouping.order[grouping.offsets[t]..grouping.offsets[t + 1]];
                let next = &grouping.order[grouping.offsets[t + 1]..];
                for &r in next.iter().take(AHEAD) {
                    prefetch_image(input, r as usize);
                }
                aggregate_one(input, rows, out).map(|b| (t, b))
            })
            .collect();
        if let Some((t, why)) = bad.first() {
            let id = grouping.ids[*t];
            return Err(match *why {
                Bad::Image(row) if input.normalize_images && !is_non_finite(input, row) => {
                    Error::ZeroImage { row, template: id }
                }
                Bad::Image(row) => Error::NonFiniteImage { row, template: id },
                Bad::Zero => Error::ZeroTemplate {
                    template: id,
                    count: bad.len(),
                    others: bad
                        .iter()
                        .skip(1)
                        .take(4)
                        .map(|(t, _)| grouping.ids[*t])
                        .collect(),
                },
            });
        }
        Ok(Templates {
            storage,
            start,
            ids: grouping.ids,
            dim: d,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input<'a>(
        feats: &'a [f32],
        templates: &'a [i64],
        medias: &'a [i64],
        dim: usize,
    ) -> AggregateInput<'a, f32> {
        AggregateInput {
            feats,
            flip: None,
            weights: None,
            templates,
            medias,
            dim,
            normalize_images: false,
        }
    }

    #[test]
    fn media_mean_then_template_sum() {
        // Template 7: media 1 has images (2,0) and (0,0) -> mean (1,0); media 2 has (0,3).
        // Sum (1,3) -> normalised (1,3)/sqrt(10). Template 3: one image (0,-2) -> (0,-1).
        let feats = [2.0, 0.0, 0.0, -2.0, 0.0, 0.0, 0.0, 3.0];
        let templates = [7, 3, 7, 7];
        let medias = [1, 5, 1, 2];
        let out = aggregate_templates(&input(&feats, &templates, &medias, 2)).unwrap();
        assert_eq!(out.ids, vec![3, 7]);
        let s = 10f64.sqrt();
        let expected = [0.0, -1.0, (1.0 / s) as f32, (3.0 / s) as f32];
        for (a, b) in out.feats().iter().zip(expected) {
            assert!((a - b).abs() < 1e-7, "{a} vs {b}");
        }
    }

    #[test]
    fn flip_weights_and_normalisation() {
        let feats = [3.0f32, 4.0, 1.0, 0.0];
        let flip = [0.0f32, 0.0, 1.0, 0.0];
        let weights = [2.0, 0.5];
        let templates = [1, 1];
        let medias = [1, 2];
        let mut inp = input(&feats, &templates, &medias, 2);
        inp.flip = Some(&flip);
        inp.weights = Some(&weights);
        inp.normalize_images = true;
        // normalised images (0.6,0.8) and (1,0), weighted by 2 and 0.5: (1.2,1.6)+(0.5,0) = (1.7,1.6)
        let out = aggregate_templates(&inp).unwrap();
        let n = (1.7f64 * 1.7 + 1.6 * 1.6).sqrt();
        assert!((out.feats()[0] as f64 - 1.7 / n).abs() < 1e-7);
        assert!((out.feats()[1] as f64 - 1.6 / n).abs() < 1e-7);
    }

    #[test]
    fn zero_template_is_named() {
        let feats = [1.0f32, 0.0, -1.0, 0.0, 0.0, 1.0];
        let templates = [4, 4, 9];
        let medias = [1, 2, 3];
        let err = aggregate_templates(&input(&feats, &templates, &medias, 2)).unwrap_err();
        assert!(
            matches!(
                err,
                Error::ZeroTemplate {
                    template: 4,
                    count: 1,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("template 4"), "{err}");
    }

    #[test]
    fn nan_row_is_named() {
        let feats = [1.0f32, 0.0, f32::NAN, 0.0];
        let err = aggregate_templates(&input(&feats, &[1, 2], &[1, 2], 2)).unwrap_err();
        assert_eq!(
            err,
            Error::NonFiniteImage {
                row: 1,
                template: 2
            }
        );
        assert!(err.to_string().contains("image row 1"), "{err}");
    }

    #[test]
    fn zero_rows_add_nothing_under_normalisation() {
        // Template 1: media 1 has (3,4) and a zero row -> mean (0.3,0.4); media 2 has (0,2) ->
        // (0,1). Sum (0.3,1.4). Template 2: only zero rows -> ZeroTemplate, as without
        // normalisation.
        let feats = [3.0f32, 4.0, 0.0, 0.0, 0.0, 2.0, 0.0, -0.0];
        let mut inp = input(&feats, &[1, 1, 1, 2], &[1, 1, 2, 3], 2);
        inp.normalize_images = true;
        let err = aggregate_templates(&inp).unwrap_err();
        assert!(
            matches!(err, Error::ZeroTemplate { template: 2, .. }),
            "{err:?}"
        );
        let inp = AggregateInput {
            templates: &[1, 1, 1, 1],
            ..inp
        };
        let out = aggregate_templates(&inp).unwrap();
        let n = (0.3f64 * 0.3 + 1.4 * 1.4).sqrt();
        assert!((out.feats()[0] as f64 - 0.3 / n).abs() < 1e-7);
        assert!((out.feats()[1] as f64 - 1.4 / n).abs() < 1e-7);
        // the same as without normalisation when the other images have unit norm
        let unit = [0.6f32, 0.8, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0];
        let plain = aggregate_templates(&input(&unit, &[1, 1, 1, 1], &[1, 1, 2, 3], 2)).unwrap();
        for (a, b) in plain.feats().iter().zip(out.feats()) {
            assert!((a - b).abs() < 1e-7, "{a} vs {b}");
        }
        // with flip features and weights: zero in both, any finite weight
        let flip = [0.0f32, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        let weights = [1.0, 5.0, 2.0, 0.0];
        let mut inp2 = AggregateInput {
            flip: Some(&flip),
            weights: Some(&weights),
            ..inp
        };
        // (3,5)/|(3,5)| in media 1 with a zero row, (0,1)*2 in media 2, zero in media 3
        let out = aggregate_templates(&inp2).unwrap();
        let (a, b) = (3.0 / 34f64.sqrt() / 2.0, 5.0 / 34f64.sqrt() / 2.0 + 2.0);
        let n = (a * a + b * b).sqrt();
        assert!((out.feats()[0] as f64 - a / n).abs() < 1e-7);
        assert!((out.feats()[1] as f64 - b / n).abs() < 1e-7);
        // a NaN weight on a zero row stays an error, as without normalisation
        let bad_w = [1.0, f64::NAN, 2.0, 0.0];
        inp2.weights = Some(&bad_w);
        assert_eq!(
            aggregate_templates(&inp2).unwrap_err(),
            Error::NonFiniteImage {
                row: 1,
                template: 1
            }
        );
    }

    #[test]
    fn normalisation_errors() {
        // flip cancelling the features: zero norm but not all zeros
        let feats = [1.0f32, 2.0, 1.0, 0.0];
        let flip = [-1.0f32, -2.0, 0.0, 0.0];
        let mut inp = input(&feats, &[1, 1], &[1, 2], 2);
        inp.flip = Some(&flip);
        inp.normalize_images = true;
        let err = aggregate_templates(&inp).unwrap_err();
        assert_eq!(
            err,
            Error::ZeroImage {
                row: 0,
                template: 1
            }
        );
        assert!(err.to_string().contains("not all zeros"), "{err}");
        // NaN under normalisation is named as NaN
        let feats = [1.0f32, 0.0, 0.0, f32::NAN];
        let mut inp = input(&feats, &[1, 1], &[1, 2], 2);
        inp.normalize_images = true;
        assert_eq!(
            aggregate_templates(&inp).unwrap_err(),
            Error::NonFiniteImage {
                row: 1,
                template: 1
            }
        );
    }

    #[test]
    fn length_mismatch() {
        let feats = [1.0f32, 0.0, 1.0, 0.0];
        assert!(matches!(
            aggregate_templates(&input(&feats, &[1, 2], &[1], 2)),
            Err(Error::LengthMismatch {
                arg: "medias",
                len: 1,
                other_len: 2,
                ..
            })
        ));
        assert!(matches!(
            aggregate_templates(&input(&feats, &[1], &[1], 2)),
            Err(Error::RowCountMismatch {
                rows: 2,
                dim: 2,
                other_len: 1,
                ..
            })
        ));
        assert!(matches!(
            aggregate_templates(&input(&feats, &[], &[], 2)),
            Err(Error::NoImages { .. })
        ));
        assert!(matches!(
            aggregate_templates(&input(&feats, &[1], &[1], 0)),
            Err(Error::ZeroDimension { .. })
        ));
    }

    #[test]
    fn independent_of_thread_count() {
        let n = 5000;
        let d = 17;
        let feats: Vec<f64> = (0..n * d)
            .map(|i| ((i * 7919) % 1000) as f64 / 997.0 - 0.4)
            .collect();
        let templates: Vec<i64> = (0..n).map(|i| ((i * 31) % 97) as i64 * 3).collect();
        let medias: Vec<i64> = (0..n).map(|i| (i % 13) as i64).collect();
        let inp = AggregateInput {
            feats: &feats,
            flip: None,
            weights: None,
            templates: &templates,
            medias: &medias,
            dim: d,
            normalize_images: false,
        };
        crate::pool::set_num_threads(1);
        let a = aggregate_templates(&inp).unwrap();
        crate::pool::set_num_threads(3);
        let b = aggregate_templates(&inp).unwrap();
        crate::pool::set_num_threads(0);
        assert_eq!(a, b);
    }
}
