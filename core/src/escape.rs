//! Escaping of control characters in text meant for a terminal or a line-oriented log.
//!
//! Client strings (a request's `model`, a virtual key's owner, a token's subject) end up in
//! log lines and in `wardenctl`'s tables. Raw, a line feed in one of them starts a new,
//! forged line, and an ESC starts a terminal escape sequence. [`control`] makes every C0
//! control character, DEL and every C1 control character visible instead: `\n`, `\r`,
//! `\t`, and `\u{1b}` for the others (the form Rust's `{:?}` uses). [`json_line`] does the
//! same for one JSON document per line, in JSON's own `\u001b` form, so that the line stays
//! valid JSON. Backslashes are left alone: an escaped line feed and a literal `\n` typed by
//! a client look alike, but neither starts a line.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` is a C0 control character, DEL or a C1 control character.
fn is_control(c: char) -> bool {
    c.is_control()
}

/// Whether `text` holds a control character. In UTF-8 they are the bytes below `0x20`,
/// `0x7f` and, for C1, a `0xc2` lead byte: text without any of these bytes (nearly every
/// log line) is settled by a byte scan, without decoding characters.
fn has_control(text: &str) -> bool {
    text.bytes().any(|b| b < 0x20 || b == 0x7f || b == 0xc2) && text.chars().any(is_control)
}

/// `text` with every control character written as `\n`, `\r`, `\t` or `\u{XX}`; borrowed
/// when there is none.
pub fn control(text: &str) -> Cow<'_, str> {
    if !has_control(text) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_control(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// One log line: `line` with its final line terminator (`\n` or `\r\n`) kept as it is and
/// every other control character escaped with [`control`], so that one event is always
/// exactly one line.
pub fn text_line(line: &str) -> Cow<'_, str> {
    let (body, end) = split_terminator(line);
    match control(body) {
        Cow::Borrowed(_) => Cow::Borrowed(line),
        Cow::Owned(mut escaped) => {
            escaped.push_str(end);
            Cow::Owned(escaped)
        }
    }
}

/// One JSON document per line: like [`text_line`], but control characters become JSON
/// escapes (`\u001b`), which keep the document valid and mean the same inside a string.
/// A JSON encoder escapes C0 characters itself; DEL and C1 characters it may leave raw.
pub fn json_line(line: &str) -> Cow<'_, str> {
    let (body, end) = split_terminator(line);
    if !has_control(body) {
        return Cow::Borrowed(line);
    }
    let mut out = String::with_capacity(line.len() + 8);
    for c in body.chars() {
        if is_control(c) {
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out.push_str(end);
    Cow::Owned(out)
}

/// `line` split before its final `\n` or `\r\n`.
fn split_terminator(line: &str) -> (&str, &str) {
    if let Some(body) = line.strip_suffix("\r\n") {
        (body, "\r\n")
    } else if let Some(body) = line.strip_suffix('\n') {
        (body, "\n")
    } else {
        (line, "")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_c0_del_and_c1() {
        assert_eq!(control("gpt-4o"), "gpt-4o");
        assert!(matches!(control("plain text"), Cow::Borrowed(_)));
        assert_eq!(control("a\nb\rc\td"), "a\\nb\\rc\\td");
        assert_eq!(control("\u{1b}[31mred"), "\\u{1b}[31mred");
        assert_eq!(
            control("\0\u{7f}\u{85}\u{9b}"),
            "\\u{0}\\u{7f}\\u{85}\\u{9b}"
        );
        // Printable text beyond ASCII, and backslashes, stay as they are.
        assert_eq!(control("café ü \\n"), "café ü \\n");
        assert_eq!(control("\u{a0}"), "\u{a0}");
    }

    #[test]
    fn the_byte_scan_finds_every_control_character() {
        for c in (0..=0x10ffff_u32).filter_map(char::from_u32) {
            let text = format!("ab{c}cd");
            assert_eq!(has_control(&text), c.is_control(), "{:x}", u32::from(c));
        }
    }

    #[test]
    fn a_log_line_keeps_its_terminator_and_stays_one_line() {
        assert_eq!(
            text_line("model=gpt\ntoken.issue admin\n"),
            "model=gpt\\ntoken.issue admin\n"
        );
        assert_eq!(text_line("a\r\n"), "a\r\n");
        assert_eq!(text_line("a\rb\r\n"), "a\\rb\r\n");
        assert_eq!(text_line("no end"), "no end");
        assert_eq!(text_line("\n"), "\n");
        assert_eq!(text_line("x\n\n"), "x\\n\n");
    }

    #[test]
    fn a_json_line_stays_valid_json() {
        let doc = serde_json::json!({ "model": "a\u{85}\u{1b}b\u{7f}" }).to_string() + "\n";
        let escaped = json_line(&doc);
        assert!(!escaped.trim_end().chars().any(char::is_control));
        assert!(escaped.ends_with('\n'));
        let back: serde_json::Value = serde_json::from_str(&escaped).unwrap();
        assert_eq!(back["model"], "a\u{85}\u{1b}b\u{7f}");
        assert!(matches!(json_line("{\"a\":1}\n"), Cow::Borrowed(_)));
    }
}
