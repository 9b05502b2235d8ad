//! Exact tolerance checks for numeric questions.
//!
//! `|answer − value| ≤ tolerance` computed in binary floating point is wrong at exactly the
//! boundaries authors write: `1.1 − 1.0` is `0.10000000000000009` in f64, so "1.0 ± 0.1" would
//! refuse `1.1`. Every f64 here came from a decimal in JSON or a spreadsheet, so the check is
//! made on the shortest decimal that reads back as the same f64 (what Rust's `{:e}` prints:
//! `1.1`, not `1.100000000000000088…`), in exact integer arithmetic. A decimal with at most 15
//! significant digits survives the trip through f64 unchanged, so for those the check is the
//! one the author and candidate wrote; longer ones were rounded to the nearest f64 first.

use std::cmp::Ordering;

/// `|answer − value| ≤ tolerance`, exactly, on the shortest decimal forms. Callers pass finite
/// numbers and `tolerance >= 0`; anything else is outside every tolerance.
pub(crate) fn within_tolerance(answer: f64, value: f64, tolerance: f64) -> bool {
    if !(answer.is_finite() && value.is_finite() && tolerance.is_finite()) || tolerance < 0.0 {
        return false;
    }
    let (Some(a), Some(v), Some(t)) = (decimal(answer), decimal(value), decimal(tolerance)) else {
        // `{:e}` always prints `digits[.digits]e[-]digits` for finite numbers, so this is not
        // reached; the binary comparison is the honest fallback if it ever were.
        return (answer - value).abs() <= tolerance;
    };
    let common = a.exponent.min(v.exponent).min(t.exponent);
    let scaled = |d: &Decimal| scale(d.mantissa, (d.exponent - common).unsigned_abs());
    let (a_big, v_big, t_big) = (scaled(&a), scaled(&v), scaled(&t));
    let difference = if a.negative == v.negative {
        match compare(&a_big, &v_big) {
            Ordering::Less => subtract(&v_big, &a_big),
            _ => subtract(&a_big, &v_big),
        }
    } else {
        add(&a_big, &v_big)
    };
    compare(&difference, &t_big) != Ordering::Greater
}

/// `|x| = mantissa × 10^exponent`; `negative` is irrelevant when the mantissa is zero.
struct Decimal {
    negative: bool,
    mantissa: u64,
    exponent: i32,
}

fn decimal(x: f64) -> Option<Decimal> {
    let text = format!("{:e}", x.abs());
    let (digits, exponent) = text.split_once('e')?;
    let exponent: i32 = exponent.parse().ok()?;
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    // At most 17 significant digits: fits in u64.
    let mantissa: u64 = format!("{whole}{fraction}").parse().ok()?;
    let exponent = exponent.checked_sub(i32::try_from(fraction.len()).ok()?)?;
    Some(Decimal {
        negative: x.is_sign_negative(),
        mantissa,
        exponent,
    })
}

/// Little-endian base-2^32 limbs, no trailing zero limbs.
type Big = Vec<u32>;

fn scale(mantissa: u64, power_of_ten: u32) -> Big {
    // Truncations split the u64 into its two 32-bit halves.
    let mut big = vec![mantissa as u32, (mantissa >> 32) as u32];
    let mut remaining = power_of_ten;
    while remaining >= 9 {
        multiply_small(&mut big, 1_000_000_000);
        remaining -= 9;
    }
    multiply_small(&mut big, 10u32.pow(remaining));
    trim(&mut big);
    big
}

fn multiply_small(big: &mut Big, factor: u32) {
    let mut carry = 0u64;
    for limb in big.iter_mut() {
        let product = u64::from(*limb) * u64::from(factor) + carry;
        *limb = product as u32;
        carry = product >> 32;
    }
    if carry > 0 {
        big.push(carry as u32);
    }
}

fn trim(big: &mut Big) {
    while big.last() == Some(&0) {
        big.pop();
    }
}

fn compare(a: &Big, b: &Big) -> Ordering {
    a.len()
        .cmp(&b.len())
        .then_with(|| a.iter().rev().cmp(b.iter().rev()))
}

fn add(a: &Big, b: &Big) -> Big {
    let mut sum = Vec::with_capacity(a.len().max(b.len()) + 1);
    let mut carry = 0u64;
    for i in 0..a.len().max(b.len()) {
        let s = u64::from(a.get(i).copied().unwrap_or(0))
            + u64::from(b.get(i).copied().unwrap_or(0))
            + carry;
        sum.push(s as u32);
        carry = s >> 32;
    }
    if carry > 0 {
        sum.push(carry as u32);
    }
    sum
}

/// `a − b` for `a >= b`.
fn subtract(a: &Big, b: &Big) -> Big {
    let mut difference = Vec::with_capacity(a.len());
    let mut borrow = 0i64;
    for (i, limb) in a.iter().enumerate() {
        let mut d = i64::from(*limb) - i64::from(b.get(i).copied().unwrap_or(0)) - borrow;
        borrow = 0;
        if d < 0 {
            d += 1 << 32;
            borrow = 1;
        }
        difference.push(d as u32);
    }
    trim(&mut difference);
    difference
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decimal_boundaries_hold_where_binary_subtraction_would_fail() {
        assert!(
            (1.1f64 - 1.0).abs() > 0.1,
            "the binary trap this module avoids"
        );
        assert!(within_tolerance(1.1, 1.0, 0.1));
        assert!(within_tolerance(0.9, 1.0, 0.1));
        // The next f64 above 1.1 is a different decimal, and outside.
        assert!(!within_tolerance(
            f64::from_bits(1.1f64.to_bits() + 1),
            1.0,
            0.1
        ));
        assert!(!within_tolerance(1.11, 1.0, 0.1));
        assert!(within_tolerance(7.255, 7.25, 0.005));
        assert!(within_tolerance(7.245, 7.25, 0.005));
        assert!(!within_tolerance(7.2551, 7.25, 0.005));
        assert!(within_tolerance(0.3, 0.3, 0.0));
        assert!(!within_tolerance(0.1 + 0.2, 0.3, 0.0));
        assert!(within_tolerance(-0.0, 0.0, 0.0));
        assert!(within_tolerance(-2.5, 2.5, 5.0));
        assert!(!within_tolerance(-2.5, 2.5, 4.99));
    }

    #[test]
    fn extreme_magnitudes_are_exact_too() {
        assert!(!within_tolerance(f64::MAX, -f64::MAX, f64::MAX));
        assert!(within_tolerance(f64::MAX, 0.0, f64::MAX));
        assert!(within_tolerance(5e-324, 0.0, 5e-324));
        assert!(!within_tolerance(1e-323, 0.0, 5e-324));
        assert!(within_tolerance(1e300, 1e300, 0.0));
        assert!(!within_tolerance(
            1e300,
            1e300 * (1.0 + f64::EPSILON),
            1e-300
        ));
        assert!(!within_tolerance(f64::NAN, 0.0, 1.0));
        assert!(!within_tolerance(1.0, 1.0, -1.0));
    }

    proptest! {
        #[test]
        fn hundredths_compare_like_the_integers_they_are(
            a in -1_000_000i64..1_000_000,
            v in -1_000_000i64..1_000_000,
            t in 0i64..1_000_000,
        ) {
            let expected = (a - v).abs() <= t;
            prop_assert_eq!(
                within_tolerance(a as f64 / 100.0, v as f64 / 100.0, t as f64 / 100.0),
                expected
            );
        }

        #[test]
        fn integers_compare_exactly(a in any::<i32>(), v in any::<i32>(), t in 0..=i32::MAX) {
            let expected = (i64::from(a) - i64::from(v)).abs() <= i64::from(t);
            prop_assert_eq!(within_tolerance(f64::from(a), f64::from(v), f64::from(t)), expected);
        }

        #[test]
        fn a_number_is_always_within_zero_of_itself(x in any::<f64>().prop_filter("finite", |x| x.is_finite())) {
            prop_assert!(within_tolerance(x, x, 0.0));
        }
    }
}
