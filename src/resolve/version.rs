//! Debian version numbers: parsing and ordering.
//!
//! Consumes version strings as they appear in `Version:` fields and relations and
//! produces an [`Ordering`], following Debian Policy 5.6.12 (`[epoch:]upstream[-revision]`)
//! and dpkg's `verrevcmp` rules: letters sort before non-letters, `~` sorts before
//! everything including the end of the string, digit runs compare numerically.

use std::cmp::Ordering;

/// Compares two Debian version strings (Debian Policy 5.6.12).
///
/// Never fails: a malformed epoch is compared as 0 and the rest as text, which is
/// what dpkg does for the ordering of well-formed parts.
pub fn compare(a: &str, b: &str) -> Ordering {
    let (ea, ua, ra) = split(a);
    let (eb, ub, rb) = split(b);
    ea.cmp(&eb)
        .then_with(|| verrevcmp(ua.as_bytes(), ub.as_bytes()))
        .then_with(|| verrevcmp(ra.as_bytes(), rb.as_bytes()))
}

/// Splits `[epoch:]upstream[-revision]`; a missing revision is the empty string,
/// which compares equal to `0` (Policy: "absence is equivalent to 0").
fn split(v: &str) -> (u64, &str, &str) {
    let (epoch, rest) = match v.split_once(':') {
        Some((e, rest)) if !e.is_empty() && e.bytes().all(|c| c.is_ascii_digit()) => {
            (e.parse().unwrap_or(u64::MAX), rest)
        }
        _ => (0, v),
    };
    match rest.rfind('-') {
        Some(i) => (epoch, &rest[..i], &rest[i + 1..]),
        None => (epoch, rest, ""),
    }
}

/// Sort weight of one non-digit character (dpkg's `order()`): `~` lowest, then the end
/// of the string, then letters, then everything else.
fn weight(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(b'~') => -1,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(c) => i32::from(c) + 256,
    }
}

fn verrevcmp(a: &[u8], b: &[u8]) -> Ordering {
    let (mut i, mut j) = (0usize, 0usize);
    while i < a.len() || j < b.len() {
        // Non-digit prefix, character by character.
        while (i < a.len() && !a[i].is_ascii_digit()) || (j < b.len() && !b[j].is_ascii_digit()) {
            let wa = weight(a.get(i).copied());
            let wb = weight(b.get(j).copied());
            if wa != wb {
                return wa.cmp(&wb);
            }
            i += 1;
            j += 1;
        }
        // Digit run, numerically: skip leading zeros, then longer run wins, then first
        // differing digit.
        while i < a.len() && a[i] == b'0' {
            i += 1;
        }
        while j < b.len() && b[j] == b'0' {
            j += 1;
        }
        let si = i;
        let sj = j;
        while i < a.len() && a[i].is_ascii_digit() {
            i += 1;
        }
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        let (da, db) = (&a[si..i], &b[sj..j]);
        if da.len() != db.len() {
            return da.len().cmp(&db.len());
        }
        match da.cmp(db) {
            Ordering::Equal => {}
            other => return other,
        }
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn lt(a: &str, b: &str) {
        assert_eq!(compare(a, b), Ordering::Less, "{a} < {b}");
        assert_eq!(compare(b, a), Ordering::Greater, "{b} > {a}");
    }

    #[test]
    fn policy_examples() {
        lt("1.0~rc1", "1.0");
        lt("1.0~~", "1.0~");
        lt("1.0~", "1.0");
        lt("1.0", "1.0a");
        lt("1.0a", "1.0+");
        lt("1.0-1", "1.0-1+b1");
        lt("1.0-1", "1.0-2");
        lt("1.0-9", "1.0-10");
        lt("9.9", "1:0.1");
        lt("1:1.0", "2:0.1");
        lt("1.2.3", "1.2.10");
        lt("2.36-9+deb12u13", "2.36-9+deb12u14");
        lt("1.3.dfsg+really1.3.1-1", "1:1.3.dfsg+really1.3.1-1+deb13u1");
        lt("3.0.22-1~deb12u1", "3.0.22-1");
        assert_eq!(compare("1.0", "1.0-0"), Ordering::Equal);
        assert_eq!(compare("0:1.0", "1.0"), Ordering::Equal);
        assert_eq!(compare("1.01", "1.1"), Ordering::Equal);
        // Hyphens in the upstream part: the revision starts at the last one.
        lt("1.0-beta-1", "1.0-beta-2");
    }

    fn version() -> impl Strategy<Value = String> {
        "([0-9]{1,2}:)?[0-9][0-9a-z.+~]{0,6}(-[0-9a-z.+~]{1,4})?"
    }

    proptest! {
        #[test]
        fn total_order(a in version(), b in version(), c in version()) {
            prop_assert_eq!(compare(&a, &a), Ordering::Equal);
            prop_assert_eq!(compare(&a, &b), compare(&b, &a).reverse());
            if compare(&a, &b) != Ordering::Greater && compare(&b, &c) != Ordering::Greater {
                prop_assert_ne!(compare(&a, &c), Ordering::Greater);
            }
        }
    }
}
