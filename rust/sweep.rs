//! Threshold sweeps for the LFW-style k-fold protocol (PROTOCOLS §5).
use crate::error::{Error, Result};

/// For each threshold `t`, the number of genuine (label 1) and impostor (label 0) pairs whose
/// distance is strictly below `t` (the protocol predicts "same" when `dist < t`).
pub fn count_below(
    dist: &[f64],
    labels: &[u8],
    thresholds: &[f64],
) -> Result<(Vec<u64>, Vec<u64>)> {
    if dist.len() != labels.len() {
        return Err(Error::Value(format!(
            "dist has {} entries but labels has {}",
            dist.len(),
            labels.len()
        )));
    }
    let mut pos = Vec::new();
    let mut neg = Vec::new();
    for (i, (&d, &l)) in dist.iter().zip(labels).enumerate() {
        if !d.is_finite() {
            return Err(Error::Value(format!("dist[{i}] is not finite ({d})")));
        }
        match l {
            0 => neg.push(d),
            1 => pos.push(d),
            other => {
                return Err(Error::Value(format!(
                    "labels[{i}] is {other}; labels must be 0 or 1"
                )))
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
        assert!(count_below(&[f64::NAN], &[1], &[1.0]).is_err());
        assert!(count_below(&[1.0], &[3], &[1.0]).is_err());
        assert!(count_below(&[1.0], &[], &[1.0]).is_err());
    }
}
