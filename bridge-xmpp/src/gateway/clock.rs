//! Time as XMPP writes it: [XEP-0082](https://xmpp.org/extensions/xep-0082.html) timestamps, for delay stamps
//! (XEP-0203) and the `since` of a MUC history request.

use std::str::FromStr;

use tokio_xmpp::parsers::date::DateTime;

/// Now, as an XEP-0082 timestamp.
pub(crate) fn now() -> DateTime {
    DateTime::from_str(&format_now()).expect("a formatted timestamp parses")
}

/// The current time as an XEP-0082 timestamp.
fn format_now() -> String {
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    format_seconds(since_epoch.as_secs() as i64)
}

/// XEP-0082 stamp from milliseconds since the epoch.
pub(crate) fn stamp(ms: u64) -> Option<DateTime> {
    let seconds = i64::try_from(ms / 1000).ok()?;
    DateTime::from_str(&format_seconds(seconds)).ok()
}

/// Seconds since the epoch as `YYYY-MM-DDThh:mm:ssZ`.
fn format_seconds(seconds: i64) -> String {
    let (days, rest) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rest / 3600, rest % 3600 / 60, rest % 60)
}

/// Days since 1970-01-01 to a (year, month, day) date: Howard Hinnant's `civil_from_days`.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_xep_0082() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert!(DateTime::from_str(&format_now()).is_ok());
        assert_eq!(stamp(0).map(|stamp| stamp.0.to_rfc3339()), Some("1970-01-01T00:00:00+00:00".to_owned()));
        assert_eq!(
            stamp(1_704_067_199_999).map(|stamp| stamp.0.to_rfc3339()).as_deref(),
            Some("2023-12-31T23:59:59+00:00")
        );
    }
}
