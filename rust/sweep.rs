//! Threshold sweeps for the LFW-style k-fold protocol (docs/protocols.md §5).
use crate::error::{Error, Result, LABELS_ZERO_ONE};

/// For each threshold `t`, the number of genuine (label 1) and impostor (label 0) pairs whose
/// distance is strictly below `t` (the protocol predicts "same" when `dist < t`).
pub fn count_below(
    dist: &[f64],
    labels: &[u8],
    thresholds: &[f64],
) -> Result<(Vec<u64>, Vec<u64>)> {
    if dist.len() != labels.len() {
        return Err(Error::LengthMismatch {
            arg: "dist",
            len: dist.len(),
            unit: "entries",
            other: "labels",
            other_len: labels.len(),
        });
    }
    let mut pos = Vec::new();
    let mut neg = Vec::new();
    for (i, (&d, &l)) in dist.iter().zip(labels).enumerate() {
        if !d.is_finite() {
            return Err(Error::NonFiniteDistance {
                arg: "dist",
                index: i,
                value: d,
            });
        }
        match l {
            0 => neg.push(d),
            1 => pos.push(d),
            other => {
                return Err(Error::BadLabel {
                    arg: "labels",
                    index: i,
                    value: other,
                    expected: LABELS_ZERO_ONE,
                })
            }
        }
    }
    pos.sort_unstable_by(f64::total_cmp);
    neg.sort_unstable_by(f64::total_cmp);
    let below = |v: &[f64], t: f64| v.partition_point(|&d| d < t) as u64;
    Ok((
        thresholds.iter().map(|&t| below(&pos, t)).collect(),
        thresholds.iter().map(|&t| below(&neg, t)).collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strictly_below() {
        let dist = [0.5, 1.0, 1.5, 2.0];
        let labels = [1u8, 0, 1, 0];
        let (p, n) = count_below(&dist, &labels, &[0.0, 1.0, 1.5, 4.0]).unwrap();
        assert_eq!(p, vec![0, 1, 1, 2]);
        assert_eq!(n, vec![0, 0, 1, 2]);
    }

    #[test]
    fn bad_input() {
        let err = count_below(&[1.0, f64::NAN], &[1, 0], &[1.0]).unwrap_err();
        assert!(
            matches!(err, Error::NonFiniteDistance { index: 1, value, .. } if value.is_nan()),
            "{err:?}"
        );
        assert_eq!(err.to_string(), "dist[1] is not finite (NaN)");
        let err = count_below(&[1.0], &[3], &[1.0]).unwrap_err();
        assert!(
            matches!(
                err,
                Error::BadLabel {
                    index: 0,
                    value: 3,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(err.to_string(), "labels[0] is 3; labels must be 0 or 1");
        assert!(matches!(
            count_below(&[1.0], &[], &[1.0]),
            Err(Error::LengthMismatch {
                arg: "dist",
                len: 1,
                other_len: 0,
                ..
            })
        ));
    }
}
