//! The watchdog's log lines on stderr, in Go's `log` format (`YYYY/MM/DD HH:MM:SS msg`).
//!
//! Owns: line formatting and writing. Invariant: each line is formatted first and written
//! with one `write_all` under the stderr lock, so lines from concurrent calls (and from child
//! processes sharing the same stderr) do not interleave mid-line. The certifier greps these
//! lines (`Forking fprocess.`, `Wrote <n> Bytes - Duration: <s>s`), so keep their wording.

use std::fmt;
use std::io::Write;

use time::macros::format_description;
use time::OffsetDateTime;

/// Writes one timestamped line to stderr; errors writing stderr are ignored.
pub(crate) fn line(args: fmt::Arguments<'_>) {
    let format = format_description!("[year]/[month]/[day] [hour]:[minute]:[second]");
    let stamp = OffsetDateTime::now_utc().format(format).unwrap_or_default();
    raw(format_args!("{stamp} {args}"));
}

/// Writes one line to stderr exactly as given (no timestamp).
pub(crate) fn raw(args: fmt::Arguments<'_>) {
    let mut text = args.to_string();
    text.push('\n');
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// `log!("...", args)`: one timestamped stderr line.
macro_rules! log {
    ($($arg:tt)*) => {
        $crate::watchdog::stderr::line(format_args!($($arg)*))
    };
}
pub(crate) use log;
