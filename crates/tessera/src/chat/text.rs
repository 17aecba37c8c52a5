//! Peer-controlled text made safe for a terminal line.
//!
//! A contact chooses the text of their messages (and the relay, say, names and ids). Printed as is, a
//! newline lets them forge a line that seems to come from someone else (`hi\nalice: wire me 100€`), and
//! escape sequences (ANSI/OSC) reach the terminal. [`escape_controls`] makes every control character
//! visible instead: `\n`, `\r`, `\t`, and `\u{..}` for the rest (C0, DEL, C1), and for the Unicode
//! bidirectional controls that can reorder what a line seems to say. `--json` output needs none of
//! this: JSON escapes control characters itself.

use std::borrow::Cow;

/// Whether `c` must not reach a terminal as is.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` with its control characters written out (`\n`, `\r`, `\t`, `\u{1b}`, ...): one line, nothing
/// a terminal acts on. Borrowed when there is nothing to escape.
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forged_line_and_terminal_escapes_are_made_visible() {
        assert_eq!(
            escape_controls("hi\nalice: wire me 100€"),
            "hi\\nalice: wire me 100€"
        );
        assert_eq!(escape_controls("a\r\tb"), "a\\r\\tb");
        assert_eq!(
            escape_controls("\x1b]0;owned\x07\x1b[2J"),
            "\\u{1b}]0;owned\\u{7}\\u{1b}[2J"
        );
        assert_eq!(escape_controls("\u{7f}\u{9b}"), "\\u{7f}\\u{9b}");
        assert_eq!(escape_controls("abc\u{202e}def"), "abc\\u{202e}def");
        let plain = "plain text, ünïcødé and emoji 👋";
        assert!(matches!(escape_controls(plain), Cow::Borrowed(p) if p == plain));
        assert!(
            !escape_controls("x\u{0}\u{85}y")
                .chars()
                .any(char::is_control)
        );
    }
}
