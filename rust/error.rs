//! The one error type of the crate: one variant per kind of bad input, carrying the offending
//! argument names, sizes, indices and values as fields, so tests match kinds
//! (`matches!(err, Error::UnknownTemplate { .. })`) rather than message text.
//!
//! `Display` is the message Python users see; `python.rs` maps every variant onto ValueError,
//! except [`Error::is_type_error`] kinds (TypeError) and [`Error::Internal`] (RuntimeError).
use thiserror::Error;

/// `labels` values that [`Error::BadLabel`] explains, as the message wording.
pub const LABELS_GENUINE_IMPOSTOR: &str = "0 (impostor) or 1 (genuine)";
/// `labels` values that [`Error::BadLabel`] explains, short wording.
pub const LABELS_ZERO_ONE: &str = "0 or 1";

#[derive(Debug, Error, Clone, PartialEq)]
pub enum Error {
    // ---- shapes and lengths -------------------------------------------------------------
    /// Two arrays that must have the same shape do not.
    #[error("{arg} has shape {shape:?} but {other} has {other_shape:?}")]
    ShapeMismatch {
        arg: &'static str,
        shape: Vec<usize>,
        other: &'static str,
        other_shape: Vec<usize>,
    },
    /// Two arguments that must have the same number of entries (`unit`: "entries", "pairs",
    /// "elements") do not.
    #[error("{arg} has {len} {unit} but {other} has {other_len}")]
    LengthMismatch {
        arg: &'static str,
        len: usize,
        unit: &'static str,
        other: &'static str,
        other_len: usize,
    },
    /// A feature matrix has a different number of rows than a per-row argument has entries.
    #[error("{arg} has {rows} rows of dim {dim} but {other} has {other_len} entries")]
    RowCountMismatch {
        arg: &'static str,
        rows: usize,
        dim: usize,
        other: &'static str,
        other_len: usize,
    },
    /// A feature matrix has not `templates x dim` elements (or `dim` is 0).
    #[error("{arg} has {len} elements, expected {templates} templates x dim {dim}")]
    FeatureSize {
        arg: &'static str,
        len: usize,
        templates: usize,
        dim: usize,
    },
    /// An array has the wrong number of dimensions.
    #[error("{arg} must be a {expected}-D array, got {ndim}-D")]
    Ndim {
        arg: &'static str,
        expected: usize,
        ndim: usize,
    },
    /// A feature matrix has zero columns.
    #[error("{arg}: feature dimension is 0")]
    ZeroDimension { arg: &'static str },
    /// No images to aggregate.
    #[error("{arg}: no images (empty input)")]
    NoImages { arg: &'static str },
    /// No scores to build a ROC from.
    #[error("labels and scores are empty")]
    NoScores,
    /// A TAR@FAR pick from an ROC without points.
    #[error("empty ROC")]
    EmptyRoc,
    /// More rows than the kernels index with 32 bits (`what`: "images", "pairs").
    #[error("too many {what}: {count}")]
    TooMany { what: &'static str, count: usize },
    /// A numpy array argument is not C-contiguous.
    #[error("{arg} must be C-contiguous")]
    NotContiguous { arg: &'static str },

    // ---- dtypes and types (TypeError) ---------------------------------------------------
    /// An argument that must be a numpy array is not one.
    #[error("{arg} must be a numpy array, got {type_name}")]
    NotAnArray {
        arg: &'static str,
        type_name: String,
    },
    /// A float array argument is neither float32 nor float64.
    #[error("{arg} must be float32 or float64, got dtype {dtype}")]
    BadDtype { arg: &'static str, dtype: String },
    /// Two float arrays that must share a dtype do not.
    #[error("{arg} has dtype {dtype} but {other} has {other_dtype}")]
    DtypeMismatch {
        arg: &'static str,
        dtype: String,
        other: &'static str,
        other_dtype: String,
    },

    // ---- values -------------------------------------------------------------------------
    /// A score is NaN or infinite (`value` is the offending value).
    #[error("{arg}[{index}] is {}; {arg} must be finite", float_name(*.value))]
    NonFinite {
        arg: &'static str,
        index: usize,
        value: f64,
    },
    /// A distance of the threshold sweep is NaN or infinite.
    #[error("{arg}[{index}] is not finite ({value})")]
    NonFiniteDistance {
        arg: &'static str,
        index: usize,
        value: f64,
    },
    /// An image whose features or weight hold NaN or infinity.
    #[error("image row {row} (template {template}) has NaN or infinite values in its features or weight")]
    NonFiniteImage { row: usize, template: i64 },
    /// An image whose finite vector cannot be L2-normalised (`normalize_images`): its norm is
    /// zero (or underflows to zero) although not all its values are exactly zero, e.g. flip
    /// features that cancel the features. (An all-zero image is no error: it adds nothing.)
    #[error(
        "image row {row} (template {template}) has a feature vector of zero norm that is not all zeros, \
         so it cannot be L2-normalised (normalize_images); all-zero rows are allowed and add nothing"
    )]
    ZeroImage { row: usize, template: i64 },
    /// A template feature row (`arg` row `row`, template id `template`) holds NaN or infinity.
    #[error("{arg} row {row} (template {template}) has NaN or infinite values; template features must be finite")]
    NonFiniteTemplate {
        arg: &'static str,
        row: usize,
        template: i64,
    },
    /// A template whose images sum to the zero vector; `count` such templates in all, the
    /// first few others (in id order) in `others`.
    #[error(
        "template {template} sums to a zero vector and cannot be normalised{}; check its features and detector scores",
        more_templates(*.count, .others)
    )]
    ZeroTemplate {
        template: i64,
        count: usize,
        others: Vec<i64>,
    },
    /// Template ids that are not strictly ascending.
    #[error("{arg} must be sorted ascending and unique (position {position} holds {first} then {second})")]
    UnsortedIds {
        arg: &'static str,
        position: usize,
        first: i64,
        second: i64,
    },
    /// A pair side (`side`: "p1" or "p2") names a template id that has no features.
    #[error("unknown template id {template} in {side} (pair {pair}): it has no template features")]
    UnknownTemplate {
        pair: usize,
        side: &'static str,
        template: i64,
    },
    /// A label other than 0 or 1; `expected` words the allowed values.
    #[error("{arg}[{index}] is {value}; {arg} must be {expected}")]
    BadLabel {
        arg: &'static str,
        index: usize,
        value: u8,
        expected: &'static str,
    },
    /// A ROC needs at least one genuine and one impostor pair.
    #[error("the ROC needs both classes, but labels has {n_pos} genuine (1) and {n_neg} impostor (0) entries")]
    SingleClass { n_pos: usize, n_neg: usize },
    /// A TAR@FAR target outside the open interval (0, 1).
    #[error("FAR target {target} is outside (0, 1)")]
    FarOutOfRange { target: f64 },
    /// An unknown TAR@FAR pick rule.
    #[error("rule must be 'nearest' or 'at_most', got {rule:?}")]
    BadRule { rule: String },

    // ---- not the caller's fault (RuntimeError) ------------------------------------------
    /// A bug: a panic caught at the binding boundary, or a broken internal invariant.
    #[error("internal error in vitfree's Rust core (please report): {0}")]
    Internal(String),
}

impl Error {
    /// Kinds that are a wrong type or dtype rather than a wrong value (Python's TypeError).
    pub fn is_type_error(&self) -> bool {
        matches!(
            self,
            Error::NotAnArray { .. } | Error::BadDtype { .. } | Error::DtypeMismatch { .. }
        )
    }
}

/// "nan", "inf" or "-inf" (the spelling numpy prints); finite values as Rust prints them.
fn float_name(v: f64) -> String {
    if v.is_nan() {
        "nan".into()
    } else if v == f64::INFINITY {
        "inf".into()
    } else if v == f64::NEG_INFINITY {
        "-inf".into()
    } else {
        v.to_string()
    }
}

/// " (N templates in all, e.g. a, b)" when more than one template is zero, else "".
fn more_templates(count: usize, others: &[i64]) -> String {
    if count <= 1 {
        return String::new();
    }
    let ids: Vec<String> = others.iter().map(i64::to_string).collect();
    format!(" ({count} templates in all, e.g. {})", ids.join(", "))
}

pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages() {
        let e = Error::NonFinite {
            arg: "scores",
            index: 3,
            value: f64::NEG_INFINITY,
        };
        assert_eq!(e.to_string(), "scores[3] is -inf; scores must be finite");
        let e = Error::ZeroTemplate {
            template: 4,
            count: 3,
            others: vec![7, 9],
        };
        assert_eq!(
            e.to_string(),
            "template 4 sums to a zero vector and cannot be normalised (3 templates in all, e.g. 7, 9); check its features and detector scores"
        );
        let e = Error::ZeroTemplate {
            template: 4,
            count: 1,
            others: vec![],
        };
        assert!(e.to_string().contains("normalised; check"), "{e}");
        let e = Error::ShapeMismatch {
            arg: "flip_feats",
            shape: vec![2, 4],
            other: "feats",
            other_shape: vec![2, 3],
        };
        assert_eq!(
            e.to_string(),
            "flip_feats has shape [2, 4] but feats has [2, 3]"
        );
        assert!(Error::BadDtype {
            arg: "scores",
            dtype: "int32".into()
        }
        .is_type_error());
        assert!(!Error::EmptyRoc.is_type_error());
    }
}
