//! The pages' words and formats: message catalogues (locales/vi.toml, locales/en.toml, compiled into
//! the binary), and dates, times and numbers as each locale writes them, in the vault's time zone
//! (Vietnam time by default). Vietnamese first; English for whoever chooses it.

use std::collections::HashMap;
use std::fmt::Display;
use std::sync::LazyLock;

use crate::ids::Date;

const VI: &str = include_str!("../../../locales/vi.toml");
const EN: &str = include_str!("../../../locales/en.toml");

/// A language the pages speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Locale {
    Vi,
    En,
}

impl Locale {
    pub fn code(self) -> &'static str {
        match self {
            Locale::Vi => "vi",
            Locale::En => "en",
        }
    }

    pub fn parse(text: &str) -> Option<Locale> {
        match text {
            "vi" => Some(Locale::Vi),
            "en" => Some(Locale::En),
            _ => None,
        }
    }

    /// The locale of a request: the visitor's choice (a cookie), else Vietnamese, whatever the
    /// browser's own language (many phones in Vietnam are set to English; the pages are Vietnamese first).
    pub fn choose(cookie: Option<&str>) -> Locale {
        cookie.and_then(Locale::parse).unwrap_or(Locale::Vi)
    }

    fn catalogue(self) -> &'static HashMap<String, String> {
        static CATALOGUES: LazyLock<[HashMap<String, String>; 2]> = LazyLock::new(|| [parse(VI), parse(EN)]);
        &CATALOGUES[self as usize]
    }
}

/// A catalogue is a flat TOML table of `key = "text"`. It is compiled in and checked by the tests, so
/// a broken one is a build that fails its tests, not a page that fails at night.
fn parse(text: &str) -> HashMap<String, String> {
    toml::from_str(text).unwrap_or_default()
}

/// The words and formats of one locale, in the vault's time zone.
#[derive(Debug, Clone, Copy)]
pub struct Messages {
    pub locale: Locale,
    pub utc_offset_minutes: i16,
}

impl Messages {
    pub fn lang(&self) -> &'static str {
        self.locale.code()
    }

    /// The text of `key`; the key itself if a catalogue lacks it (the tests make sure none does).
    pub fn get<'a>(&self, key: &'a str) -> &'a str {
        match self.locale.catalogue().get(key) {
            Some(text) => text.as_str(),
            None => key,
        }
    }

    /// The text of `key` with `{0}` replaced.
    pub fn fill1(&self, key: &str, first: impl Display) -> String {
        self.get(key).replace("{0}", &first.to_string())
    }

    /// The text of `key` with `{0}` and `{1}` replaced.
    pub fn fill2(&self, key: &str, first: impl Display, second: impl Display) -> String {
        self.fill1(key, first).replace("{1}", &second.to_string())
    }

    /// A moment, to the minute, in the vault's time zone: "24/11/2026 14:05" or "24 Nov 2026, 14:05".
    pub fn datetime(&self, unix_ms: i64) -> String {
        let local = time::OffsetDateTime::from_unix_timestamp(unix_ms.div_euclid(1000)).ok().and_then(|moment| {
            let offset = time::UtcOffset::from_whole_seconds(i32::from(self.utc_offset_minutes) * 60).ok()?;
            Some(moment.to_offset(offset))
        });
        let Some(local) = local else { return unix_ms.to_string() };
        let date = self.format_date(local.date());
        match self.locale {
            Locale::Vi => format!("{:02}:{:02} {date}", local.hour(), local.minute()),
            Locale::En => format!("{date}, {:02}:{:02}", local.hour(), local.minute()),
        }
    }

    /// A calendar date: "24/11/2026" or "24 Nov 2026".
    pub fn date(&self, date: &Date) -> String {
        time::Date::parse(&date.to_string(), time::macros::format_description!("[year]-[month]-[day]"))
            .map(|date| self.format_date(date))
            .unwrap_or_else(|_| date.to_string())
    }

    fn format_date(&self, date: time::Date) -> String {
        match self.locale {
            Locale::Vi => format!("{:02}/{:02}/{}", date.day(), u8::from(date.month()), date.year()),
            Locale::En => {
                let month = date.month().to_string();
                format!("{} {} {}", date.day(), month.get(..3).unwrap_or(&month), date.year())
            }
        }
    }

    /// A whole number with the locale's thousands separator: "1.234.567" or "1,234,567".
    pub fn number(&self, value: u64) -> String {
        let separator = match self.locale {
            Locale::Vi => '.',
            Locale::En => ',',
        };
        let digits = value.to_string();
        let mut out = String::with_capacity(digits.len() + digits.len() / 3);
        for (index, digit) in digits.chars().enumerate() {
            if index > 0 && (digits.len() - index).is_multiple_of(3) {
                out.push(separator);
            }
            out.push(digit);
        }
        out
    }

    /// A size in bytes, for people: "12 KB", "3,4 MB".
    pub fn size(&self, bytes: u64) -> String {
        let (value, unit) = match bytes {
            0..1_000 => return format!("{} B", self.number(bytes)),
            1_000..1_000_000 => (bytes as f64 / 1e3, "KB"),
            1_000_000..1_000_000_000 => (bytes as f64 / 1e6, "MB"),
            _ => (bytes as f64 / 1e9, "GB"),
        };
        let text = format!("{value:.1}");
        let text = match self.locale {
            Locale::Vi => text.replace('.', ","),
            Locale::En => text,
        };
        format!("{text} {unit}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(text: &str) -> std::collections::BTreeSet<String> {
        let table: toml::Table = toml::from_str(text).expect("a catalogue is a TOML table");
        for (key, value) in &table {
            assert!(value.is_str(), "{key} is not a string");
        }
        table.keys().cloned().collect()
    }

    #[test]
    fn both_catalogues_have_the_same_keys() {
        let (vi, en) = (keys(VI), keys(EN));
        assert!(vi.len() > 50, "the catalogues hold the pages' words");
        assert_eq!(vi.difference(&en).collect::<Vec<_>>(), Vec::<&String>::new(), "missing in en.toml");
        assert_eq!(en.difference(&vi).collect::<Vec<_>>(), Vec::<&String>::new(), "missing in vi.toml");
    }

    #[test]
    fn every_key_the_pages_use_is_in_the_catalogues() {
        let vi = keys(VI);
        let mut used = std::collections::BTreeSet::new();
        let sources = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/templates"))
            .expect("templates")
            .map(|entry| entry.expect("entry").path())
            .chain([std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/src/http/pages/mod.rs"))]);
        for path in sources {
            let text = std::fs::read_to_string(&path).expect("read");
            // Every literal key: t.get("..."), fill1("...", ...), key("...") and the like.
            for piece in text.split('"').skip(1).step_by(2) {
                let is_key = piece.contains('.')
                    && !piece.ends_with(".html")
                    && !piece.contains(' ')
                    && piece
                        .split('.')
                        .all(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
                    && [
                        "page.", "nav.", "doc.", "status.", "check.", "access.", "share.", "verify.", "signin.",
                        "error.", "filter.", "action.", "outcome.", "footer.", "lang.",
                    ]
                    .iter()
                    .any(|prefix| piece.starts_with(prefix));
                if is_key {
                    used.insert(piece.to_owned());
                }
            }
        }
        assert!(used.len() > 30, "the scan found the keys the pages use ({})", used.len());
        // Keys the pages build from a value.
        for status in ["valid", "not_yet_valid", "expired", "revoked", "superseded"] {
            used.insert(format!("status.{status}"));
        }
        for action in
            ["read_record", "read_content", "list_records", "read_access_log", "export_store", "export_record"]
        {
            used.insert(format!("action.{action}"));
        }
        for role in ["citizen", "officer", "issuer", "auditor", "admin"] {
            used.insert(format!("access.role_{role}"));
        }
        for state in ["active", "expired", "revoked"] {
            used.insert(format!("share.state_{state}"));
        }
        let missing: Vec<_> = used.iter().filter(|key| !vi.contains(*key)).collect();
        assert!(missing.is_empty(), "keys used but not in the catalogues: {missing:?}");
    }

    #[test]
    fn dates_times_and_numbers_follow_the_locale_in_vietnam_time() {
        let vi = Messages { locale: Locale::Vi, utc_offset_minutes: 7 * 60 };
        let en = Messages { locale: Locale::En, utc_offset_minutes: 7 * 60 };
        // 2026-11-23T20:30:00Z is 03:30 on the 24th in Vietnam.
        let moment = 1_795_465_800_000;
        assert_eq!(vi.datetime(moment), "03:30 24/11/2026");
        assert_eq!(en.datetime(moment), "24 Nov 2026, 03:30");
        let date = Date::parse("2026-01-05").expect("date");
        assert_eq!(vi.date(&date), "05/01/2026");
        assert_eq!(en.date(&date), "5 Jan 2026");
        assert_eq!(vi.number(1_234_567), "1.234.567");
        assert_eq!(en.number(1_234_567), "1,234,567");
        assert_eq!(en.number(999), "999");
        assert_eq!(vi.size(3_400_000), "3,4 MB");
        assert_eq!(en.size(12_300), "12.3 KB");
        assert_eq!(Locale::choose(None), Locale::Vi);
        assert_eq!(Locale::choose(Some("en")), Locale::En);
        assert_eq!(Locale::choose(Some("xx")), Locale::Vi);
    }
}
