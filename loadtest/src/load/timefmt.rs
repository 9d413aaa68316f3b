//! UTC timestamps the way Go prints them: RFC 3339 with nanoseconds (`StartTime`) and fortio's
//! run-id date prefix (pure; no time-zone database needed).

use std::time::{SystemTime, UNIX_EPOCH};

/// Civil date and time in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UtcTime {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub nanos: u32,
}

impl UtcTime {
    pub fn from_system(time: SystemTime) -> Self {
        let (secs, nanos) = match time.duration_since(UNIX_EPOCH) {
            Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
            Err(_) => (0, 0),
        };
        Self::from_unix(secs, nanos)
    }

    pub fn from_unix(secs: i64, nanos: u32) -> Self {
        let days = secs.div_euclid(86_400);
        let of_day = secs.rem_euclid(86_400) as u32;
        let (year, month, day) = civil_from_days(days);
        Self {
            year,
            month,
            day,
            hour: of_day / 3600,
            minute: of_day / 60 % 60,
            second: of_day % 60,
            nanos,
        }
    }

    /// Go's `time.RFC3339Nano` in UTC: `2024-05-01T12:34:56.123456789Z`, fraction trimmed of
    /// trailing zeros and omitted when zero.
    pub fn rfc3339_nanos(&self) -> String {
        let fraction = if self.nanos == 0 {
            String::new()
        } else {
            let digits = format!("{:09}", self.nanos);
            format!(".{}", digits.trim_end_matches('0'))
        };
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{fraction}Z",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }

    /// fortio's `formatDate`: `2024-05-01-123456`.
    pub fn id_date(&self) -> String {
        format!(
            "{:04}-{:02}-{:02}-{:02}{:02}{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(
            UtcTime::from_unix(0, 0).rfc3339_nanos(),
            "1970-01-01T00:00:00Z"
        );
        // 2022-03-19T22:34:23.279389Z (fortio's README example, in UTC).
        let t = UtcTime::from_unix(1_647_729_263, 279_389_000);
        assert_eq!(t.rfc3339_nanos(), "2022-03-19T22:34:23.279389Z");
        assert_eq!(t.id_date(), "2022-03-19-223423");
        let leap = UtcTime::from_unix(951_782_400 + 3_661, 5);
        assert_eq!(leap.rfc3339_nanos(), "2000-02-29T01:01:01.000000005Z");
        assert_eq!(
            UtcTime::from_unix(4_102_444_799, 999_999_999).rfc3339_nanos(),
            "2099-12-31T23:59:59.999999999Z"
        );
    }
}
