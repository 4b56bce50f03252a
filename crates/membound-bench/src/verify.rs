//! Output checks run before a case is timed: a kernel that computes the wrong answer is never
//! measured.

/// Worst relative error of `got` against `want`, each element's error scaled by
/// `max(|want|, floor)` where `floor` is `rel_floor` × the largest `|want|` (so near-zero
/// outputs of a long dot product are judged against the output's scale).
pub fn max_rel_error(got: &[f32], want: &[f32], rel_floor: f32) -> Result<f32, String> {
    if got.len() != want.len() {
        return Err(format!("length {} vs expected {}", got.len(), want.len()));
    }
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let floor = (scale * rel_floor).max(f32::MIN_POSITIVE);
    let mut worst = 0f32;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        if !g.is_finite() {
            return Err(format!("element {i} is {g} (expected {w})"));
        }
        worst = worst.max((g - w).abs() / w.abs().max(floor));
    }
    Ok(worst)
}

/// Checks `got` against `want` within `tol` relative error; the message names the case.
pub fn check_close(case: &str, got: &[f32], want: &[f32], tol: f32) -> Result<(), String> {
    let err = max_rel_error(got, want, 1e-3).map_err(|e| format!("{case}: {e}"))?;
    if err > tol {
        return Err(format!(
            "{case}: max relative error {err:.3e} exceeds {tol:.1e}"
        ));
    }
    Ok(())
}

/// Checks `got` against `want` by the largest error relative to the largest `|want|`
/// (`‖got − want‖∞ / ‖want‖∞ ≤ tol`): for peers whose arithmetic differs from ours (another
/// activation quantization, another summation order), judged at the output's scale.
pub fn check_close_scaled(case: &str, got: &[f32], want: &[f32], tol: f32) -> Result<(), String> {
    let err = max_rel_error(got, want, 1.0).map_err(|e| format!("{case}: {e}"))?;
    if err > tol {
        return Err(format!(
            "{case}: max error {err:.3e} of the output's scale exceeds {tol:.1e}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_errors_and_nans() {
        assert!(check_close("a", &[1.0, 2.0], &[1.0, 2.0], 1e-6).is_ok());
        assert!(
            check_close("b", &[1.0, 2.1], &[1.0, 2.0], 1e-3)
                .unwrap_err()
                .contains("b: max relative error")
        );
        assert!(
            check_close("c", &[f32::NAN], &[1.0], 1.0)
                .unwrap_err()
                .contains("NaN")
        );
        assert!(check_close("d", &[1.0], &[1.0, 2.0], 1.0).is_err());
        // A near-zero expected value is judged against the output's scale.
        assert!(check_close("e", &[1e-4, 100.0], &[0.0, 100.0], 2e-3).is_ok());
        assert!(check_close_scaled("f", &[0.5, 100.0], &[0.0, 100.0], 1e-2).is_ok());
        assert!(check_close_scaled("g", &[5.0, 100.0], &[0.0, 100.0], 1e-2).is_err());
    }
}
