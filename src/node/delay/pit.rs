//! The delayed replica's choices about time (pure): which records are due,
//! which a point-in-time promotion applies and which it discards, and the
//! RFC 3339 times the operator reads and writes.
//!
//! Every time here is this node's own clock, in milliseconds since the
//! Unix epoch: a record carries the time this node received it, and the
//! delay is measured from then. The Primary's clock is never consulted.

/// A record is due once it was received `delay_ms` ago or longer.
pub fn due(received_ms: u64, delay_ms: u64, now_ms: u64) -> bool {
    received_ms.saturating_add(delay_ms) <= now_ms
}

/// Milliseconds until a record received at `received_ms` is due (0: now).
pub fn wait_ms(received_ms: u64, delay_ms: u64, now_ms: u64) -> u64 {
    received_ms.saturating_add(delay_ms).saturating_sub(now_ms)
}

/// Why a point in time cannot be chosen.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PitError {
    #[error("{target} is in the future (this node's clock says {now})")]
    Future { target: String, now: String },
    #[error("{target} is before the earliest point this replica can go back to, {floor} (everything received up to then is applied already)")]
    BeforeFloor { target: String, floor: String },
}

/// What a promotion to `target_ms` does with the pending records (their
/// receive times in journal order): the first `apply` are applied, the
/// rest discarded. The records applied are the longest prefix received at
/// or before the target: journal order is the order the Primary's writes
/// arrived in, so a record is never applied without those before it (a
/// clock that stepped back cannot reorder them).
pub fn choose(pending: &[u64], floor_ms: u64, now_ms: u64, target_ms: u64) -> Result<usize, PitError> {
    if target_ms > now_ms {
        return Err(PitError::Future { target: rfc3339(target_ms), now: rfc3339(now_ms) });
    }
    if target_ms < floor_ms {
        return Err(PitError::BeforeFloor { target: rfc3339(target_ms), floor: rfc3339(floor_ms) });
    }
    Ok(pending.iter().take_while(|&&t| t <= target_ms).count())
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `ms` since the epoch as RFC 3339 in UTC, to the millisecond.
pub fn rfc3339(ms: u64) -> String {
    let secs = i64::try_from(ms / 1000).unwrap_or(i64::MAX);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z", rem / 3600, rem % 3600 / 60, rem % 60, ms % 1000)
}

/// Parses an RFC 3339 time (`2026-12-06T23:10:00Z`, `...T23:10:00.250+01:00`;
/// a space for the `T` is accepted) into ms since the epoch.
pub fn parse_rfc3339(s: &str) -> Result<u64, String> {
    let bad = |why: &str| format!("`{s}` is not an RFC 3339 time ({why}; e.g. 2026-12-06T23:10:00Z)");
    let b = s.trim().as_bytes();
    let num = |r: std::ops::Range<usize>| -> Result<i64, String> {
        let part = b.get(r).ok_or_else(|| bad("too short"))?;
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return Err(bad("digits expected"));
        }
        std::str::from_utf8(part).map_err(|_| bad("digits expected"))?.parse::<i64>().map_err(|_| bad("digits expected"))
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') || b[13] != b':' || b[16] != b':' {
        return Err(bad("expected YYYY-MM-DDTHH:MM:SS and a zone"));
    }
    let (y, mo, d, h, mi, se) = (num(0..4)?, num(5..7)?, num(8..10)?, num(11..13)?, num(14..16)?, num(17..19)?);
    let month_days = [31, if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if !(1..=12).contains(&mo) || d < 1 || d > month_days[usize::try_from(mo - 1).unwrap_or(0)] || h > 23 || mi > 59 || se > 60 {
        return Err(bad("a field is out of range"));
    }
    let mut i = 19;
    let mut frac_ms = 0i64;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return Err(bad("digits expected after the dot"));
        }
        let digits = &b[start..i.min(start + 3)];
        let mut v = 0i64;
        for (k, &c) in digits.iter().enumerate() {
            v += i64::from(c - b'0') * [100, 10, 1][k];
        }
        frac_ms = v;
    }
    let offset_secs = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(&sign @ (b'+' | b'-')) if i + 6 == b.len() && b[i + 3] == b':' => {
            let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            if oh > 23 || om > 59 {
                return Err(bad("the zone offset is out of range"));
            }
            let o = oh * 3600 + om * 60;
            if sign == b'+' {
                o
            } else {
                -o
            }
        }
        _ => return Err(bad("expected a zone: Z or +HH:MM")),
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se.min(59) - offset_secs;
    let ms = secs.checked_mul(1000).and_then(|v| v.checked_add(frac_ms)).ok_or_else(|| bad("too large"))?;
    u64::try_from(ms).map_err(|_| bad("before 1970"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_765_062_000_000; // 2025-12-06T23:00:00Z

    #[test]
    fn due_and_wait() {
        assert!(!due(T0, 5000, T0 + 4999));
        assert!(due(T0, 5000, T0 + 5000));
        assert_eq!(wait_ms(T0, 5000, T0 + 1000), 4000);
        assert_eq!(wait_ms(T0, 5000, T0 + 9000), 0);
        assert!(!due(u64::MAX, 5, 0));
    }

    #[test]
    fn point_in_time_choice() {
        let pending = [T0 + 10, T0 + 20, T0 + 20, T0 + 30];
        let now = T0 + 100;
        // Up to and including the target.
        assert_eq!(choose(&pending, T0, now, T0 + 20), Ok(3));
        assert_eq!(choose(&pending, T0, now, T0 + 19), Ok(1));
        assert_eq!(choose(&pending, T0, now, T0 + 5), Ok(0));
        assert_eq!(choose(&pending, T0, now, now), Ok(4));
        assert_eq!(choose(&[], T0, now, now), Ok(0));
        // The floor itself is allowed, before it is not.
        assert_eq!(choose(&pending, T0, now, T0), Ok(0));
        let e = choose(&pending, T0, now, T0 - 1).unwrap_err();
        assert!(matches!(e, PitError::BeforeFloor { .. }), "{e}");
        assert!(e.to_string().contains("2025-12-06T23:00:00.000Z"), "{e}");
        let e = choose(&pending, T0, now, now + 1).unwrap_err();
        assert!(matches!(e, PitError::Future { .. }), "{e}");
        // A clock that stepped back: the prefix stops at the first later record.
        assert_eq!(choose(&[T0 + 10, T0 + 50, T0 + 20], T0, now, T0 + 30), Ok(1));
    }

    #[test]
    fn rfc3339_both_ways() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(T0 + 250), "2025-12-06T23:00:00.250Z");
        assert_eq!(parse_rfc3339("2025-12-06T23:00:00Z"), Ok(T0));
        assert_eq!(parse_rfc3339("2025-12-06T23:00:00.25Z"), Ok(T0 + 250));
        assert_eq!(parse_rfc3339("2025-12-07T00:30:00+01:30"), Ok(T0));
        assert_eq!(parse_rfc3339("2025-12-06 22:00:00-01:00"), Ok(T0));
        assert_eq!(parse_rfc3339("2024-02-29T00:00:00Z"), Ok(1_709_164_800_000));
        for ms in [0, 1, T0, T0 + 999, 4_102_444_800_000, 951_782_400_123] {
            assert_eq!(parse_rfc3339(&rfc3339(ms)), Ok(ms));
        }
        for bad in ["", "yesterday", "2025-12-06", "2025-12-06T23:00:00", "2025-13-01T00:00:00Z", "2025-02-29T00:00:00Z", "2025-12-06T24:00:00Z", "2025-12-06T23:00:00+5", "1969-12-31T23:59:59Z", "2025-12-06T23:00:00.Z"] {
            let e = parse_rfc3339(bad).unwrap_err();
            assert!(e.contains("RFC 3339"), "{bad}: {e}");
        }
    }
}
