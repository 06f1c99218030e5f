//! How the hub's log lines are written: `tracing` to stderr, with every
//! field (the message too) passed through [`printable`], so text that
//! agents and clients send (reasons, errors, task ids, titles) can never
//! start a line of its own or carry terminal escapes: one event, one line.
//!
//! This module only formats; it decides nothing about what is logged and
//! must never log a secret itself.

use std::borrow::Cow;
use std::fmt::{self, Write as _};

use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::format::{debug_fn, Writer};

/// `text` with its control characters (newlines, carriage returns, escape
/// sequences…) written as Rust escapes (`\n`, `\u{1b}`); anything else as is.
pub(crate) fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// One field as the default formatter writes it (`name=value`, the
/// message bare), made printable.
fn field(w: &mut Writer<'_>, field: &tracing::field::Field, value: &dyn fmt::Debug) -> fmt::Result {
    let mut text = String::new();
    write!(text, "{value:?}")?;
    if field.name() == "message" {
        write!(w, "{}", printable(&text))
    } else {
        write!(w, "{}={}", field.name(), printable(&text))
    }
}

/// Log to stderr, filtered by `RUST_LOG` (else `default`).
pub(crate) fn init(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .fmt_fields(debug_fn(field).delimited(" "))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert!(matches!(printable("plain text, é ✓"), Cow::Borrowed(_)));
        assert_eq!(
            printable("a\n2026-01-01T00:00:00Z  INFO forged\r\t\u{1b}[31m\"q\""),
            "a\\n2026-01-01T00:00:00Z  INFO forged\\r\\t\\u{1b}[31m\"q\""
        );
    }
}
