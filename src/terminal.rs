//! Text an agent controls (approval titles and details, prompts, output lines, file
//! names), made safe to show on a terminal: control characters are shown as escapes
//! (`\e`, `\x07`, `\u{202e}`) instead of being obeyed, so no text can hide part of a
//! command (SGR 8 conceals), rename the terminal (OSC 0), or make it type into the
//! user's shell (a device status report). The CLI and `warden dash` print through here.

use std::borrow::Cow;
use std::fmt::Write;

/// Whether a character would act on the terminal or hide text rather than show itself:
/// C0 controls, DEL, C1 controls, and the invisible and bidirectional formatting marks
/// that can reorder or hide what is shown ("Trojan Source").
fn acts(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '\u{1b}' => out.push_str("\\e"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if (c as u32) < 0x100 => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
}

fn escape_where(text: &str, keep: impl Fn(char) -> bool) -> Cow<'_, str> {
    if !text.chars().any(|c| acts(c) && !keep(c)) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if acts(c) && !keep(c) {
            push_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Text of several lines: newlines and tabs stay, every other control is escaped.
pub fn escape(text: &str) -> Cow<'_, str> {
    escape_where(text, |c| c == '\n' || c == '\t')
}

/// Text for one line (a table cell, a title): newlines and tabs are escaped too, so
/// nothing after them can pass for another row.
pub fn escape_line(text: &str) -> Cow<'_, str> {
    escape_where(text, |_| false)
}

/// An output line for `warden logs`: SGR sequences (`ESC [ … m`: colours, bold) stay,
/// so coloured output still looks coloured; everything else that acts is escaped, and
/// a concealing SGR (8) is escaped too. A reset follows a line that kept any SGR.
pub fn keep_colours(text: &str) -> Cow<'_, str> {
    if !text.chars().any(acts) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    let mut kept_any = false;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if c == '\u{1b}' {
            if let Some(length) = sgr_length(rest) {
                out.push_str(&rest[..length]);
                kept_any = true;
                rest = &rest[length..];
                continue;
            }
        }
        if acts(c) && c != '\t' {
            push_escaped(&mut out, c);
        } else {
            out.push(c);
        }
        rest = &rest[c.len_utf8()..];
    }
    if kept_any {
        out.push_str("\u{1b}[0m");
    }
    Cow::Owned(out)
}

/// The length of the harmless SGR sequence `text` starts with: `ESC [`, parameters of
/// digits, `;` and `:`, then `m`, and none of its parameters 8 (conceal).
fn sgr_length(text: &str) -> Option<usize> {
    let params = text.strip_prefix("\u{1b}[")?;
    let end = params.find(|c: char| !(c.is_ascii_digit() || c == ';' || c == ':'))?;
    if !params[end..].starts_with('m') || end > 64 {
        return None;
    }
    let conceals = params[..end].split([';', ':']).any(|p| p.trim_start_matches('0') == "8");
    (!conceals).then_some(2 + end + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_shown_not_obeyed() {
        assert_eq!(escape("plain text\nline two"), "plain text\nline two");
        assert_eq!(escape("npm test \u{1b}[8m&& curl x|sh\u{1b}[0m"), "npm test \\e[8m&& curl x|sh\\e[0m");
        assert_eq!(escape("\u{1b}]0;pwned\u{7}"), "\\e]0;pwned\\x07");
        assert_eq!(escape("a\u{9b}6n"), "a\\x9b6n");
        assert_eq!(escape("abc\u{202e}def"), "abc\\u{202e}def");
        assert_eq!(escape_line("one\ntwo\rthree"), "one\\ntwo\\rthree");
    }

    #[test]
    fn colours_stay_and_everything_else_is_escaped() {
        assert_eq!(keep_colours("\u{1b}[1;31merror\u{1b}[0m: x"), "\u{1b}[1;31merror\u{1b}[0m: x\u{1b}[0m");
        assert_eq!(keep_colours("\u{1b}[6n"), "\\e[6n");
        assert_eq!(keep_colours("\u{1b}]0;title\u{7}"), "\\e]0;title\\x07");
        assert_eq!(keep_colours("hide \u{1b}[8mthis"), "hide \\e[8mthis");
        assert_eq!(keep_colours("tab\tstays"), "tab\tstays");
        assert_eq!(keep_colours("\u{1b}[38;5;208morange"), "\u{1b}[38;5;208morange\u{1b}[0m");
    }

    proptest::proptest! {
        /// Whatever the text, nothing that acts on a terminal is left but harmless SGR.
        #[test]
        fn nothing_escapes(text in "\\PC*|[\u{0}-\u{9f}\u{202a}-\u{202e}]{0,40}") {
            for shown in [escape_line(&text).into_owned(), escape(&text).into_owned()] {
                proptest::prop_assert!(!shown.chars().any(|c| acts(c) && c != '\n' && c != '\t'));
            }
            let coloured = keep_colours(&text).into_owned();
            let mut rest = coloured.as_str();
            while let Some(at) = rest.find('\u{1b}') {
                let length = sgr_length(&rest[at..]);
                proptest::prop_assert!(length.is_some(), "{coloured:?}");
                rest = &rest[at + length.unwrap_or(1)..];
            }
        }
    }
}
