//! Making text from the network safe to print: agents send names and facts, and
//! the hub's own messages quote them. The hub refuses control and invisible
//! characters on entry, but a terminal must not depend on that. Low in the crate:
//! both the output helpers and the error renderer use it.

/// `text` with control characters (but newline and tab, unless `one_line`) and
/// bidi or zero-width characters written as `\uXXXX`, so nothing in it can move
/// the cursor, retitle the terminal, or make one name look like another.
pub fn escape(text: &str, one_line: bool) -> std::borrow::Cow<'_, str> {
    let hidden = |c: char| {
        (c.is_control() && (one_line || !matches!(c, '\n' | '\t'))) || muster_proto::is_invisible(c)
    };
    if !text.chars().any(hidden) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if hidden(c) {
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}
