//! The selection line a client types before it is attached: line editing with echo, and
//! the `[connect] <selector> [rw|ro|excl]` grammar.

use crate::types::Mode;

/// Longest selection line accepted.
pub(crate) const MAX_LINE: usize = 256;

/// Line editing while the client chooses a VM.
#[derive(Debug, Default)]
pub(crate) struct Selection {
    line: Vec<u8>,
    /// Skip one LF or NUL after the CR that ended a line, in this segment or the next.
    pub(crate) after_cr: bool,
}

/// What a chunk of typed bytes amounted to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Picked {
    /// A complete line, and how many bytes of the chunk it used (the rest is for the VM, or
    /// the next line if this one selects nothing).
    Line(String, usize),
    /// The chunk was used up without completing a line.
    More,
    /// The line grew past [`MAX_LINE`].
    Overflow,
}

impl Selection {
    /// Feeds typed bytes; `echo` gets what the client should see.
    pub(crate) fn feed(&mut self, data: &[u8], echo: &mut Vec<u8>) -> Picked {
        for (i, &b) in data.iter().enumerate() {
            let after_cr = std::mem::take(&mut self.after_cr);
            match b {
                b'\n' | 0 if after_cr => {}
                b'\r' | b'\n' => {
                    self.after_cr = b == b'\r';
                    echo.extend_from_slice(b"\r\n");
                    if self.line.is_empty() {
                        continue;
                    }
                    let line = String::from_utf8_lossy(&self.line).trim().to_owned();
                    self.line.clear();
                    return Picked::Line(line, i + 1);
                }
                0 => {}
                0x08 | 0x7f => {
                    if self.line.pop().is_some() {
                        echo.extend_from_slice(b"\x08 \x08");
                    }
                }
                _ => {
                    if self.line.len() >= MAX_LINE {
                        return Picked::Overflow;
                    }
                    self.line.push(b);
                    if (0x20..0x7f).contains(&b) {
                        echo.push(b);
                    }
                }
            }
        }
        Picked::More
    }
}

/// Parses `[connect] <selector> [rw|ro|excl]`.
pub(crate) fn parse_selection(line: &str) -> (String, Mode) {
    let mut words: Vec<&str> = line.split_whitespace().collect();
    if words
        .first()
        .is_some_and(|w| w.eq_ignore_ascii_case("connect"))
    {
        words.remove(0);
    }
    let mode = match words.last().and_then(|w| Mode::parse(w)) {
        Some(mode) if words.len() > 1 => {
            words.pop();
            mode
        }
        _ => Mode::ReadWrite,
    };
    (words.join(" "), mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_lines() {
        assert_eq!(
            parse_selection("vm-1"),
            ("vm-1".to_owned(), Mode::ReadWrite)
        );
        assert_eq!(
            parse_selection("connect vm-1 ro"),
            ("vm-1".to_owned(), Mode::ReadOnly)
        );
        assert_eq!(
            parse_selection("vm-1 excl"),
            ("vm-1".to_owned(), Mode::Exclusive)
        );
        let mut s = Selection::default();
        let mut echo = Vec::new();
        assert_eq!(s.feed(b"vm", &mut echo), Picked::More);
        assert_eq!(
            s.feed(b"-1\rabc", &mut echo),
            Picked::Line("vm-1".into(), 3)
        );
        assert!(s.after_cr);
        assert_eq!(echo, b"vm-1\r\n");
    }

    #[test]
    fn lf_after_cr_is_skipped_in_the_next_segment_too() {
        let mut s = Selection::default();
        let mut echo = Vec::new();
        assert_eq!(s.feed(b"a\r", &mut echo), Picked::Line("a".into(), 2));
        assert_eq!(s.feed(b"\nb\r\n", &mut echo), Picked::Line("b".into(), 3));
    }
}
