//! All Python bindings: thin wrappers that borrow numpy buffers, release the GIL, call the plain
//! Rust kernels inside `catch_unwind`, and map errors onto Python exceptions.
//!
//! One binding per function: arguments that may be float32 or float64 arrive as `PyAny`, are
//! borrowed as one or the other by [`floats`] and dispatched to the generic kernels. Every
//! failure, the binding-level checks included, is an [`Error`] variant converted by
//! `From<Error> for PyErr`.
use std::panic::{catch_unwind, AssertUnwindSafe};

use numpy::ndarray::{Dimension, Ix1, Ix2};
use numpy::{
    IntoPyArray, PyArray, PyArray1, PyArray2, PyArrayDescrMethods, PyArrayMethods, PyReadonlyArray,
    PyReadonlyArray1, PyReadonlyArray2, PyUntypedArray, PyUntypedArrayMethods,
};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PySlice, PyTuple};

use crate::aggregate::{self, AggregateInput, Element};
use crate::error::Error;
use crate::roc::{self, FarRule, Score};
use crate::{pool, score, sweep};

// Bad input raises the package's own exceptions (vitfree.errors), which keep TypeError /
// ValueError as a second base: the command line catches vitfree.errors.VitfreeError alone,
// so only a real bug (RuntimeError here) shows a traceback.  The classes are imported from
// Python when the first error is raised.
pyo3::import_exception!(vitfree.errors, InputError);
pyo3::import_exception!(vitfree.errors, InputTypeError);

impl From<Error> for PyErr {
    fn from(err: Error) -> PyErr {
        let msg = err.to_string();
        if err.is_type_error() {
            InputTypeError::new_err(msg)
        } else if matches!(err, Error::Internal(_)) {
            PyRuntimeError::new_err(msg)
        } else {
            InputError::new_err(msg)
        }
    }
}

/// Run `f` without the GIL; a panic becomes [`Error::Internal`] (RuntimeError) instead of
/// crossing into Python.
fn run<T: Send>(py: Python<'_>, f: impl FnOnce() -> Result<T, Error> + Send) -> PyResult<T> {
    let outcome = py.detach(|| catch_unwind(AssertUnwindSafe(f)));
    match outcome {
        Ok(result) => result.map_err(PyErr::from),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            Err(Error::Internal(msg).into())
        }
    }
}

/// The caller's buffer in place, or [`Error::NotContiguous`]. (numpy's `as_slice` alone would
/// also accept a Fortran-ordered matrix, whose rows are not contiguous.)
fn slice<'a, T: numpy::Element, D: Dimension>(
    arr: &'a PyReadonlyArray<'_, T, D>,
    arg: &'static str,
) -> Result<&'a [T], Error> {
    if !arr.is_c_contiguous() {
        return Err(Error::NotContiguous { arg });
    }
    arr.as_slice().map_err(|_| Error::NotContiguous { arg })
}

/// A float array argument borrowed with its own dtype.
enum Floats<'py, D: Dimension> {
    F32(PyReadonlyArray<'py, f32, D>),
    F64(PyReadonlyArray<'py, f64, D>),
}

impl<D: Dimension> Floats<'_, D> {
    fn dtype_name(&self) -> &'static str {
        match self {
            Floats::F32(_) => "float32",
            Floats::F64(_) => "float64",
        }
    }
}

/// Borrow `obj` as a float32 or a float64 array of dimension `D`: TypeError
/// ([`Error::NotAnArray`], [`Error::BadDtype`]) or ValueError ([`Error::Ndim`]) otherwise.
fn floats<'py, D: Dimension>(
    obj: &Bound<'py, PyAny>,
    arg: &'static str,
) -> PyResult<Floats<'py, D>> {
    let py = obj.py();
    let arr = obj
        .cast::<PyUntypedArray>()
        .map_err(|_| Error::NotAnArray {
            arg,
            type_name: obj
                .get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_else(|_| "?".into()),
        })?;
    if let Some(expected) = D::NDIM {
        if arr.ndim() != expected {
            return Err(Error::Ndim {
                arg,
                expected,
                ndim: arr.ndim(),
            }
            .into());
        }
    }
    let dtype = arr.dtype();
    if dtype.is_equiv_to(&numpy::dtype::<f32>(py)) {
        Ok(Floats::F32(obj.cast::<PyArray<f32, D>>()?.try_readonly()?))
    } else if dtype.is_equiv_to(&numpy::dtype::<f64>(py)) {
        Ok(Floats::F64(obj.cast::<PyArray<f64, D>>()?.try_readonly()?))
    } else {
        Err(Error::BadDtype {
            arg,
            dtype: dtype.to_string(),
        }
        .into())
    }
}

type TemplatesOut<'py> = (Bound<'py, PyArray2<f32>>, Bound<'py, PyArray1<i64>>);

fn aggregate_generic<'py, T: Element + numpy::Element>(
    py: Python<'py>,
    feats: PyReadonlyArray2<'py, T>,
    templates: PyReadonlyArray1<'py, i64>,
    medias: PyReadonlyArray1<'py, i64>,
    weights: Option<PyReadonlyArray1<'py, f64>>,
    flip: Option<PyReadonlyArray2<'py, T>>,
    normalize_images: bool,
) -> PyResult<TemplatesOut<'py>> {
    let dim = feats.shape()[1];
    if let Some(f) = &flip {
        if f.shape() != feats.shape() {
            return Err(Error::ShapeMismatch {
                arg: "flip_feats",
                shape: f.shape().to_vec(),
                other: "feats",
                other_shape: feats.shape().to_vec(),
            }
            .into());
        }
    }
    let input = AggregateInput {
        feats: slice(&feats, "feats")?,
        flip: flip.as_ref().map(|f| slice(f, "flip_feats")).transpose()?,
        weights: weights.as_ref().map(|w| slice(w, "weights")).transpose()?,
        templates: slice(&templates, "templates")?,
        medias: slice(&medias, "medias")?,
        dim,
        normalize_images,
    };
    let out = run(py, || aggregate::aggregate_templates(&input))?;
    let (n, start) = (out.ids.len(), out.start);
    // the (n, dim) view of the storage at its cache-line-aligned start, which owns it
    let storage = out.storage.into_pyarray(py);
    let window = PySlice::new(py, start as isize, (start + n * dim) as isize, 1);
    let feats = storage
        .get_item(window)?
        .call_method1("reshape", ((n, dim),))?
        .cast_into::<PyArray2<f32>>()?;
    Ok((feats, out.ids.into_pyarray(py)))
}

/// Aggregate IJB-B/C image features into L2-normalised template features.
///
/// Each image vector is its features plus its flip features (when given), L2-normalised if
/// normalize_images, times its weight (when given). Per template, the image vectors of each
/// media are averaged, the media means summed and the sum L2-normalised; sums run in float64.
/// An image whose features (and flip) are exactly all zeros, as --skip-bad writes for an
/// unreadable image, adds nothing under normalize_images (no division by its zero norm) but
/// still counts in its media's mean, as without normalisation.
///
/// Args:
///     feats: (N, D) float32 or float64, C-contiguous image features.
///     templates: (N,) int64 template id of each image.
///     medias: (N,) int64 media id of each image.
///     weights: (N,) float64 per-image weights, or None.
///     flip: (N, D) features of the flipped images, same dtype as feats, or None.
///     normalize_images: L2-normalise each image vector before weighting.
///
/// Returns:
///     ((T, D) float32 unit template features, (T,) int64 template ids sorted ascending).
///
/// Raises:
///     TypeError: feats or flip not a float32/float64 array, or flip's dtype differs from feats'.
///     ValueError: wrong ndim, shape or length mismatch, non-contiguous input, empty input, an
///         image with NaN/inf values (or, under normalize_images, a zero norm though not all
///         zeros), or a template summing to zero (named in the message).
#[pyfunction]
#[pyo3(signature = (feats, templates, medias, weights=None, flip=None, normalize_images=false))]
fn aggregate_templates<'py>(
    py: Python<'py>,
    feats: &Bound<'py, PyAny>,
    templates: PyReadonlyArray1<'py, i64>,
    medias: PyReadonlyArray1<'py, i64>,
    weights: Option<PyReadonlyArray1<'py, f64>>,
    flip: Option<&Bound<'py, PyAny>>,
    normalize_images: bool,
) -> PyResult<TemplatesOut<'py>> {
    let feats = floats::<Ix2>(feats, "feats")?;
    let flip = flip.map(|f| floats::<Ix2>(f, "flip_feats")).transpose()?;
    let (t, m, w, norm) = (templates, medias, weights, normalize_images);
    match (feats, flip) {
        (Floats::F32(f), None) => aggregate_generic(py, f, t, m, w, None, norm),
        (Floats::F64(f), None) => aggregate_generic(py, f, t, m, w, None, norm),
        (Floats::F32(f), Some(Floats::F32(fl))) => {
            aggregate_generic(py, f, t, m, w, Some(fl), norm)
        }
        (Floats::F64(f), Some(Floats::F64(fl))) => {
            aggregate_generic(py, f, t, m, w, Some(fl), norm)
        }
        (f, Some(fl)) => Err(Error::DtypeMismatch {
            arg: "flip_feats",
            dtype: fl.dtype_name().into(),
            other: "feats",
            other_dtype: f.dtype_name().into(),
        }
        .into()),
    }
}

/// Cosine score (dot product of unit rows) of each template pair, addressed by template id.
///
/// Args:
///     template_feats: (T, D) float32, C-contiguous template features.
///     template_ids: (T,) int64 ids of the rows, sorted ascending and unique.
///     p1, p2: (P,) int64 template ids of the two sides of each pair.
///
/// Returns:
///     (P,) float32 scores.
///
/// Raises:
///     TypeError: an argument of another dtype.
///     ValueError: a template row with NaN/inf values (its row and id named), an id of p1/p2
///         without a row (named with its pair index), unsorted template_ids, length
///         mismatches, non-contiguous input.
#[pyfunction]
fn score_pairs<'py>(
    py: Python<'py>,
    template_feats: PyReadonlyArray2<'py, f32>,
    template_ids: PyReadonlyArray1<'py, i64>,
    p1: PyReadonlyArray1<'py, i64>,
    p2: PyReadonlyArray1<'py, i64>,
) -> PyResult<Bound<'py, PyArray1<f32>>> {
    let dim = template_feats.shape()[1];
    let feats = slice(&template_feats, "template_feats")?;
    let ids = slice(&template_ids, "template_ids")?;
    let (a, b) = (slice(&p1, "p1")?, slice(&p2, "p2")?);
    let out = run(py, || score::score_pairs(feats, ids, dim, a, b))?;
    Ok(out.into_pyarray(py))
}

type RocOut<'py, S> = (
    Bound<'py, PyArray1<f64>>,
    Bound<'py, PyArray1<f64>>,
    Bound<'py, PyArray1<S>>,
    Bound<'py, PyArray1<u64>>,
    Bound<'py, PyArray1<u64>>,
);

/// `max_far`: None = the whole curve; Some(f) = its exact beginning up to past FPR f.
fn roc_generic<'py, S: Score + numpy::Element>(
    py: Python<'py>,
    labels: &PyReadonlyArray1<'py, u8>,
    scores: &PyReadonlyArray1<'py, S>,
    drop_intermediate: bool,
    max_far: Option<f64>,
) -> PyResult<RocOut<'py, S>> {
    let l = slice(labels, "labels")?;
    let s = slice(scores, "scores")?;
    let roc = run(py, || match max_far {
        None => roc::roc_curve(l, s, drop_intermediate),
        Some(f) => roc::roc_prefix(l, s, f),
    })?;
    let (fpr, tpr) = (roc.fpr(), roc.tpr());
    Ok((
        fpr.into_pyarray(py),
        tpr.into_pyarray(py),
        roc.thresholds.into_pyarray(py),
        roc.fps.into_pyarray(py),
        roc.tps.into_pyarray(py),
    ))
}

/// The ROC for float32 or float64 `scores`, as a Python tuple (thresholds keep the dtype).
fn roc_any<'py>(
    py: Python<'py>,
    labels: PyReadonlyArray1<'py, u8>,
    scores: &Bound<'py, PyAny>,
    drop_intermediate: bool,
    max_far: Option<f64>,
) -> PyResult<Bound<'py, PyTuple>> {
    match floats::<Ix1>(scores, "scores")? {
        Floats::F32(s) => {
            roc_generic(py, &labels, &s, drop_intermediate, max_far)?.into_pyobject(py)
        }
        Floats::F64(s) => {
            roc_generic(py, &labels, &s, drop_intermediate, max_far)?.into_pyobject(py)
        }
    }
}

/// The ROC exactly as sklearn.metrics.roc_curve(labels, scores, drop_intermediate=...).
///
/// Args:
///     labels: (N,) uint8, 0 (impostor) or 1 (genuine).
///     scores: (N,) float32 or float64 finite scores, higher = more similar.
///     drop_intermediate: drop collinear points, as sklearn does by default.
///
/// Returns:
///     (fpr, tpr, thresholds, fps, tps): float64, float64, scores' dtype with +inf first,
///     uint64 false-positive and true-positive counts; all (K,).
///
/// Raises:
///     TypeError: labels not uint8, scores not a float32/float64 array.
///     ValueError: NaN/inf scores, labels other than 0/1, a single class, empty or
///         mismatched inputs, wrong ndim, non-contiguous input.
#[pyfunction]
#[pyo3(signature = (labels, scores, drop_intermediate=true))]
fn roc_curve<'py>(
    py: Python<'py>,
    labels: PyReadonlyArray1<'py, u8>,
    scores: &Bound<'py, PyAny>,
    drop_intermediate: bool,
) -> PyResult<Bound<'py, PyTuple>> {
    roc_any(py, labels, scores, drop_intermediate, None)
}

/// The exact first points of the drop_intermediate ROC, up to and including the first two
/// distinct FPR values above max_far: all that TAR@FAR picks at targets <= max_far look at.
/// Only the highest impostor scores are sorted.
///
/// Args:
///     labels: (N,) uint8, 0 (impostor) or 1 (genuine).
///     scores: (N,) float32 or float64 finite scores, higher = more similar.
///     max_far: the largest FAR target that will be picked.
///
/// Returns:
///     (fpr, tpr, thresholds, fps, tps) as roc_curve, truncated.
///
/// Raises:
///     TypeError and ValueError as roc_curve.
#[pyfunction]
fn roc_prefix<'py>(
    py: Python<'py>,
    labels: PyReadonlyArray1<'py, u8>,
    scores: &Bound<'py, PyAny>,
    max_far: f64,
) -> PyResult<Bound<'py, PyTuple>> {
    roc_any(py, labels, scores, true, Some(max_far))
}

/// The pick rule named `rule` ('nearest' or 'at_most').
fn far_rule(rule: &str) -> Result<FarRule, Error> {
    match rule {
        "nearest" => Ok(FarRule::Nearest),
        "at_most" => Ok(FarRule::AtMost),
        other => Err(Error::BadRule { rule: other.into() }),
    }
}

/// Index of the ROC point picked for each FAR target.
///
/// Args:
///     fpr: (K,) float64 non-decreasing false-positive rates, fpr[0] == 0.
///     fars: (F,) float64 targets, each in (0, 1).
///     rule: 'nearest' (the point whose FPR is nearest the target, ties to the larger TPR) or
///         'at_most' (the last point whose FPR does not exceed the target).
///
/// Returns:
///     (F,) int64 indices into fpr.
///
/// Raises:
///     TypeError: arrays of another dtype.
///     ValueError: an unknown rule, a target outside (0, 1), an empty fpr, non-contiguous input.
#[pyfunction]
fn pick_far<'py>(
    py: Python<'py>,
    fpr: PyReadonlyArray1<'py, f64>,
    fars: PyReadonlyArray1<'py, f64>,
    rule: &str,
) -> PyResult<Bound<'py, PyArray1<i64>>> {
    let rule = far_rule(rule)?;
    let f = slice(&fpr, "fpr")?;
    let targets = slice(&fars, "fars")?;
    let out = run(py, || {
        targets
            .iter()
            .map(|&t| roc::pick_far(f, t, rule).map(|i| i as i64))
            .collect::<Result<Vec<_>, _>>()
    })?;
    Ok(out.into_pyarray(py))
}

type PicksOut<'py> = (
    Bound<'py, PyArray1<i64>>,
    Bound<'py, PyArray1<f64>>,
    Bound<'py, PyArray1<f64>>,
    Bound<'py, PyArray1<f64>>,
);

fn picks_generic<'py, S: Score + numpy::Element>(
    py: Python<'py>,
    labels: &PyReadonlyArray1<'py, u8>,
    scores: &PyReadonlyArray1<'py, S>,
    targets: &[f64],
    rule: FarRule,
) -> PyResult<PicksOut<'py>> {
    let l = slice(labels, "labels")?;
    let s = slice(scores, "scores")?;
    let picks = run(py, || roc::tar_at_far_points(l, s, targets, rule))?;
    let column = |f: &dyn Fn(&roc::FarPick<S>) -> f64| {
        picks.iter().map(f).collect::<Vec<f64>>().into_pyarray(py)
    };
    let index: Vec<i64> = picks.iter().map(|p| p.index as i64).collect();
    Ok((
        index.into_pyarray(py),
        column(&|p| p.fpr),
        column(&|p| p.tpr),
        column(&|p| p.threshold.to_f64()),
    ))
}

/// The ROC points picked for each FAR target, computed on the exact beginning of the ROC
/// (as roc_prefix, then pick_far) without returning the curve.
///
/// Args:
///     labels: (N,) uint8, 0 (impostor) or 1 (genuine).
///     scores: (N,) float32 or float64 finite scores, higher = more similar.
///     fars: (F,) float64 targets, each in (0, 1).
///     rule: 'nearest' or 'at_most' (as pick_far).
///
/// Returns:
///     (index, fpr, tpr, thresholds): (F,) int64 indices into the full ROC's arrays, and the
///     float64 FPR, TPR and threshold of each pick.
///
/// Raises:
///     TypeError and ValueError as roc_curve and pick_far.
#[pyfunction]
fn tar_at_far_points<'py>(
    py: Python<'py>,
    labels: PyReadonlyArray1<'py, u8>,
    scores: &Bound<'py, PyAny>,
    fars: PyReadonlyArray1<'py, f64>,
    rule: &str,
) -> PyResult<Bound<'py, PyTuple>> {
    let rule = far_rule(rule)?;
    let targets = slice(&fars, "fars")?;
    match floats::<Ix1>(scores, "scores")? {
        Floats::F32(s) => picks_generic(py, &labels, &s, targets, rule)?.into_pyobject(py),
        Floats::F64(s) => picks_generic(py, &labels, &s, targets, rule)?.into_pyobject(py),
    }
}

type CountsOut<'py> = (Bound<'py, PyArray1<u64>>, Bound<'py, PyArray1<u64>>);

/// For each threshold t: the number of genuine and of impostor pairs with dist < t.
///
/// Args:
///     dist: (N,) float64 finite distances.
///     labels: (N,) uint8, 0 (impostor) or 1 (genuine).
///     thresholds: (M,) float64.
///
/// Returns:
///     ((M,) uint64 genuine counts, (M,) uint64 impostor counts).
///
/// Raises:
///     TypeError: arrays of another dtype.
///     ValueError: NaN/inf distances, labels other than 0/1, a length mismatch,
///         non-contiguous input.
#[pyfunction]
fn count_below<'py>(
    py: Python<'py>,
    dist: PyReadonlyArray1<'py, f64>,
    labels: PyReadonlyArray1<'py, u8>,
    thresholds: PyReadonlyArray1<'py, f64>,
) -> PyResult<CountsOut<'py>> {
    let (d, l, t) = (
        slice(&dist, "dist")?,
        slice(&labels, "labels")?,
        slice(&thresholds, "thresholds")?,
    );
    let (pos, neg) = run(py, || sweep::count_below(d, l, t))?;
    Ok((pos.into_pyarray(py), neg.into_pyarray(py)))
}

/// Set the threads the kernels use: n > 0, or 0 for the default (VITFREE_NUM_THREADS, else all
/// cores). Raises OverflowError (a TypeError for non-integers) for a negative n.
#[pyfunction]
fn set_num_threads(n: usize) {
    pool::set_num_threads(n);
}

/// The number of threads the kernels use now.
#[pyfunction]
fn get_num_threads() -> usize {
    pool::num_threads()
}

/// vitfree's verification core in Rust (private: use vitfree.ijb and vitfree.metrics).
#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(aggregate_templates, m)?)?;
    m.add_function(wrap_pyfunction!(score_pairs, m)?)?;
    m.add_function(wrap_pyfunction!(roc_curve, m)?)?;
    m.add_function(wrap_pyfunction!(roc_prefix, m)?)?;
    m.add_function(wrap_pyfunction!(pick_far, m)?)?;
    m.add_function(wrap_pyfunction!(tar_at_far_points, m)?)?;
    m.add_function(wrap_pyfunction!(count_below, m)?)?;
    m.add_function(wrap_pyfunction!(set_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(get_num_threads, m)?)?;
    Ok(())
}
