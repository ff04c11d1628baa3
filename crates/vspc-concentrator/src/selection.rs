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

/// What a client asks for: a VM, a mode (`None`: the best its rights allow, read-write for
/// an unrestricted client), and whether to take the write lock from its holders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Request {
    pub(crate) selector: String,
    pub(crate) mode: Option<Mode>,
    pub(crate) kick: bool,
}

/// Parses `[connect] <selector> [rw|ro|excl|kick]...` (a typed selection line).
pub(crate) fn parse_selection(line: &str) -> Request {
    let mut words: Vec<&str> = line.split_whitespace().collect();
    if words
        .first()
        .is_some_and(|w| w.eq_ignore_ascii_case("connect"))
    {
        words.remove(0);
    }
    let (mut mode, mut kick) = (None, false);
    while words.len() > 1 {
        let Some(last) = words.last() else { break };
        if last.eq_ignore_ascii_case("kick") {
            kick = true;
        } else if let Some(m) = Mode::parse(last).filter(|_| mode.is_none()) {
            mode = Some(m);
        } else {
            break;
        }
        words.pop();
    }
    Request {
        selector: words.join(" "),
        mode,
        kick,
    }
}

/// Parses `<selector>[+rw|+ro|+excl][+kick]` (an SSH user name, where spaces are awkward).
/// A `+` not followed by a known word stays part of the selector.
pub(crate) fn parse_request(text: &str) -> Request {
    let mut selector = text.trim();
    let (mut mode, mut kick) = (None, false);
    while let Some((head, word)) = selector.rsplit_once('+') {
        if head.is_empty() {
            break;
        }
        if word.eq_ignore_ascii_case("kick") {
            kick = true;
        } else if let Some(m) = Mode::parse(word).filter(|_| mode.is_none()) {
            mode = Some(m);
        } else {
            break;
        }
        selector = head;
    }
    Request {
        selector: selector.to_owned(),
        mode,
        kick,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_lines() {
        let request = |selector: &str, mode, kick| Request {
            selector: selector.into(),
            mode,
            kick,
        };
        assert_eq!(parse_selection("vm-1"), request("vm-1", None, false));
        assert_eq!(
            parse_selection("connect vm-1 ro"),
            request("vm-1", Some(Mode::ReadOnly), false)
        );
        assert_eq!(
            parse_selection("vm-1 excl kick"),
            request("vm-1", Some(Mode::Exclusive), true)
        );
        assert_eq!(parse_selection("ro"), request("ro", None, false));
        assert_eq!(
            parse_request("web-1+ro"),
            request("web-1", Some(Mode::ReadOnly), false)
        );
        assert_eq!(parse_request("web-1+kick"), request("web-1", None, true));
        assert_eq!(parse_request("a+b"), request("a+b", None, false));
        assert_eq!(parse_request("+ro"), request("+ro", None, false));
        assert_eq!(
            parse_request("web+ro+ro"),
            request("web+ro", Some(Mode::ReadOnly), false)
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
