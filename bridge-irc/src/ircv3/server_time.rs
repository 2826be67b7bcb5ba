//! `server-time` (<https://ircv3.net/specs/extensions/server-time>): the `time` tag
//! (`2011-10-19T16:40:51.620Z`, UTC) as milliseconds since the Unix epoch, for Matrix's `ts`.

use irc::proto::Message;

use super::tags;

/// When the server says a message happened, if it says so in a readable way.
pub(crate) fn timestamp_ms(message: &Message) -> Option<u64> {
    parse(tags::get(message, "time")?)
}

/// Parses `YYYY-MM-DDThh:mm:ss[.sss]Z`; anything else (local offsets, missing fields) is `None`.
pub(crate) fn parse(time: &str) -> Option<u64> {
    let time = time.strip_suffix('Z')?;
    let (date, clock) = time.split_once('T')?;
    let mut date = date.splitn(3, '-').map(|part| part.parse::<i64>().ok());
    let (year, month, day) = (date.next()??, date.next()??, date.next()??);
    let (clock, fraction) = clock.split_once('.').unwrap_or((clock, "0"));
    let mut clock = clock.splitn(3, ':').map(|part| part.parse::<i64>().ok());
    let (hour, minute, second) = (clock.next()??, clock.next()??, clock.next()??);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    if fraction.is_empty() || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let millis: i64 = format!("{fraction:0<3}")[..3].parse().ok()?;
    let days = days_from_civil(year, month, day);
    let ms = (((days * 24 + hour) * 60 + minute) * 60 + second) * 1000 + millis;
    u64::try_from(ms).ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_to_epoch_milliseconds() {
        for (time, expected) in [
            ("1970-01-01T00:00:00.000Z", Some(0)),
            ("2011-10-19T16:40:51.620Z", Some(1_319_042_451_620)),
            ("2000-02-29T12:00:00Z", Some(951_825_600_000)),
            ("2026-11-26T09:30:00.5Z", Some(1_795_685_400_500)),
            ("2026-11-26T09:30:00.123456Z", Some(1_795_685_400_123)),
            ("2026-11-26T09:30:00+01:00", None),
            ("2026-13-26T09:30:00Z", None),
            ("yesterday", None),
            ("2026-11-26T09:30:00.Z", None),
        ] {
            assert_eq!(parse(time), expected, "{time}");
        }
    }
}
