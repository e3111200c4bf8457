//! Text from files made safe to print: control characters written as escapes.
use std::borrow::Cow;
use std::path::Path;

/// `text` with every control character (C0, DEL and C1: escape sequences, NUL, tabs, line
/// breaks) written as Rust writes it escaped (`\u{1b}`, `\u{0}`, `\t`, `\n`), so that text read
/// from a file (an image path, a caption, a file name) printed to a terminal, a log or a report
/// cannot clear the screen, set the window title, fake a line or split a field. Other text is
/// returned as it is.
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c.is_control() {
            true => out.extend(c.escape_default()),
            false => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// `path` as text to print: lossy UTF-8, control characters escaped ([`escape_controls`]).
pub fn shown(path: &Path) -> String {
    escape_controls(&path.to_string_lossy()).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert!(matches!(
            escape_controls("imgs/a b/ü.jpg"),
            Cow::Borrowed(_)
        ));
        assert_eq!(
            escape_controls("a\x1b[2J\x1b]0;title\x07b\0c\td\ne\u{9b}f\x7f"),
            "a\\u{1b}[2J\\u{1b}]0;title\\u{7}b\\u{0}c\\td\\ne\\u{9b}f\\u{7f}"
        );
        assert_eq!(shown(Path::new("x/\x1b.jpg")), "x/\\u{1b}.jpg");
    }
}
