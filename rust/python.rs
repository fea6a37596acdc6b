//! All Python bindings: thin wrappers that borrow numpy buffers, release the GIL, call the plain
//! Rust kernels inside `catch_unwind`, and map errors onto Python exceptions.
use std::panic::{catch_unwind, AssertUnwindSafe};

use numpy::ndarray::Array2;
use numpy::{
    IntoPyArray, PyArray1, PyArray2, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;

use crate::aggregate::{self, AggregateInput, Element};
use crate::error::Error;
use crate::roc::{self, FarRule, Score};
use crate::{pool, score, sweep};

impl From<Error> for PyErr {
    fn from(err: Error) -> PyErr {
        match err {
            Error::Value(msg) => PyValueError::new_err(msg),
        }
    }
}

/// Run `f` without the GIL; a panic becomes a RuntimeError instead of crossing into Python.
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
            Err(PyRuntimeError::new_err(format!(
                "internal error in vitfree's Rust core (please report): {msg}"
            )))
        }
    }
}

fn slice<'a, T: numpy::Element>(arr: &'a PyReadonlyArray1<'_, T>, name: &str) -> PyResult<&'a [T]> {
    arr.as_slice()
        .map_err(|_| PyValueError::new_err(format!("{name} must be C-contiguous")))
}

fn slice2<'a, T: numpy::Element>(
    arr: &'a PyReadonlyArray2<'_, T>,
    name: &str,
) -> PyResult<&'a [T]> {
    arr.as_slice()
        .map_err(|_| PyValueError::new_err(format!("{name} must be C-contiguous")))
}

type TemplatesOut<'py> = (Bound<'py, PyArray2<f32>>, Bound<'py, PyArray1<i64>>);

#[allow(clippy::too_many_arguments)]
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
            return Err(PyValueError::new_err(format!(
                "flip_feats has shape {:?} but feats has {:?}",
                f.shape(),
                feats.shape()
            )));
        }
    }
    let input = AggregateInput {
        feats: slice2(&feats, "feats")?,
        flip: flip.as_ref().map(|f| slice2(f, "flip_feats")).transpose()?,
        weights: weights.as_ref().map(|w| slice(w, "weights")).transpose()?,
        templates: slice(&templates, "templates")?,
        medias: slice(&medias, "medias")?,
        dim,
        normalize_images,
    };
    let out = run(py, || aggregate::aggregate_templates(&input))?;
    let n = out.ids.len();
    let feats = Array2::from_shape_vec((n, dim), out.feats)
        .map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
    Ok((feats.into_pyarray(py), out.ids.into_pyarray(py)))
}

#[pyfunction]
#[pyo3(signature = (feats, templates, medias, weights=None, flip=None, normalize_images=false))]
fn aggregate_templates_f32<'py>(
    py: Python<'py>,
    feats: PyReadonlyArray2<'py, f32>,
    templates: PyReadonlyArray1<'py, i64>,
    medias: PyReadonlyArray1<'py, i64>,
    weights: Option<PyReadonlyArray1<'py, f64>>,
    flip: Option<PyReadonlyArray2<'py, f32>>,
    normalize_images: bool,
) -> PyResult<TemplatesOut<'py>> {
    aggregate_generic(
        py,
        feats,
        templates,
        medias,
        weights,
        flip,
        normalize_images,
    )
}

#[pyfunction]
#[pyo3(signature = (feats, templates, medias, weights=None, flip=None, normalize_images=false))]
fn aggregate_templates_f64<'py>(
    py: Python<'py>,
    feats: PyReadonlyArray2<'py, f64>,
    templates: PyReadonlyArray1<'py, i64>,
    medias: PyReadonlyArray1<'py, i64>,
    weights: Option<PyReadonlyArray1<'py, f64>>,
    flip: Option<PyReadonlyArray2<'py, f64>>,
    normalize_images: bool,
) -> PyResult<TemplatesOut<'py>> {
    aggregate_generic(
        py,
        feats,
        templates,
        medias,
        weights,
        flip,
        normalize_images,
    )
}

#[pyfunction]
fn score_pairs<'py>(
    py: Python<'py>,
    template_feats: PyReadonlyArray2<'py, f32>,
    template_ids: PyReadonlyArray1<'py, i64>,
    p1: PyReadonlyArray1<'py, i64>,
    p2: PyReadonlyArray1<'py, i64>,
) -> PyResult<Bound<'py, PyArray1<f32>>> {
    let dim = template_feats.shape()[1];
    let feats = slice2(&template_feats, "template_feats")?;
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
    labels: PyReadonlyArray1<'py, u8>,
    scores: PyReadonlyArray1<'py, S>,
    drop_intermediate: bool,
    max_far: Option<f64>,
) -> PyResult<RocOut<'py, S>> {
    let l = slice(&labels, "labels")?;
    let s = slice(&scores, "scores")?;
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

#[pyfunction]
#[pyo3(signature = (labels, scores, drop_intermediate=true))]
fn roc_curve_f32<'py>(
    py: Python<'py>,
    labels: PyReadonlyArray1<'py, u8>,
    scores: PyReadonlyArray1<'py, f32>,
    drop_intermediate: bool,
) -> PyResult<RocOut<'py, f32>> {
    roc_generic(py, labels, scores, drop_intermediate, None)
}

#[pyfunction]
#[pyo3(signature = (labels, scores, drop_intermediate=true))]
fn roc_curve_f64<'py>(
    py: Python<'py>,
    labels: PyReadonlyArray1<'py, u8>,
    scores: PyReadonlyArray1<'py, f64>,
    drop_intermediate: bool,
) -> PyResult<RocOut<'py, f64>> {
    roc_generic(py, labels, scores, drop_intermediate, None)
}

#[pyfunction]
fn roc_prefix_f32<'py>(
    py: Python<'py>,
    labels: PyReadonlyArray1<'py, u8>,
    scores: PyReadonlyArray1<'py, f32>,
    max_far: f64,
) -> PyResult<RocOut<'py, f32>> {
    roc_generic(py, labels, scores, true, Some(max_far))
}

#[pyfunction]
fn roc_prefix_f64<'py>(
    py: Python<'py>,
    labels: PyReadonlyArray1<'py, u8>,
    scores: PyReadonlyArray1<'py, f64>,
    max_far: f64,
) -> PyResult<RocOut<'py, f64>> {
    roc_generic(py, labels, scores, true, Some(max_far))
}

#[pyfunction]
fn pick_far<'py>(
    py: Python<'py>,
    fpr: PyReadonlyArray1<'py, f64>,
    fars: PyReadonlyArray1<'py, f64>,
    rule: &str,
) -> PyResult<Bound<'py, PyArray1<i64>>> {
    let rule = match rule {
        "nearest" => FarRule::Nearest,
        "at_most" => FarRule::AtMost,
        other => {
            return Err(PyValueError::new_err(format!(
                "rule must be 'nearest' or 'at_most', got {other:?}"
            )))
        }
    };
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

type CountsOut<'py> = (Bound<'py, PyArray1<u64>>, Bound<'py, PyArray1<u64>>);

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

#[pyfunction]
fn set_num_threads(n: usize) {
    pool::set_num_threads(n);
}

#[pyfunction]
fn get_num_threads() -> usize {
    pool::num_threads()
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(aggregate_templates_f32, m)?)?;
    m.add_function(wrap_pyfunction!(aggregate_templates_f64, m)?)?;
    m.add_function(wrap_pyfunction!(score_pairs, m)?)?;
    m.add_function(wrap_pyfunction!(roc_curve_f32, m)?)?;
    m.add_function(wrap_pyfunction!(roc_curve_f64, m)?)?;
    m.add_function(wrap_pyfunction!(roc_prefix_f32, m)?)?;
    m.add_function(wrap_pyfunction!(roc_prefix_f64, m)?)?;
    m.add_function(wrap_pyfunction!(pick_far, m)?)?;
    m.add_function(wrap_pyfunction!(count_below, m)?)?;
    m.add_function(wrap_pyfunction!(set_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(get_num_threads, m)?)?;
    Ok(())
}
