//! The last stderr lines of one replica process, kept while it starts so that a crash at start
//! can say why in the gateway's own log (the exit status alone says nothing).
//!
//! Owns a bounded tail: at most [`TAIL_LINES`] lines and [`TAIL_BYTES`] bytes (newlines
//! included); older lines leave first, and a single line longer than the tail keeps its start.
//!
//! Invariants: the buffer is allocated once, when the tail is made, and [`StderrTail::push`]
//! never allocates (the unit test checks that the capacity never moves), so recording adds
//! only a copy of the line to the log pump. The instance records only during
//! [`super::instance::EARLY_EXIT`] after the spawn and then drops the tail: a long-running
//! replica's per-request lines pay nothing.

use std::collections::VecDeque;

/// Most lines kept.
pub(super) const TAIL_LINES: usize = 10;
/// Most bytes kept, newlines included.
pub(super) const TAIL_BYTES: usize = 2048;

/// The last lines written, bounded (see the module doc).
#[derive(Debug)]
pub(super) struct StderrTail {
    buf: VecDeque<u8>,
    lines: usize,
}

// === impl StderrTail ===

impl Default for StderrTail {
    fn default() -> Self {
        Self::new()
    }
}

impl StderrTail {
    pub(super) fn new() -> Self {
        Self {
            buf: VecDeque::with_capacity(TAIL_BYTES),
            lines: 0,
        }
    }

    /// Records one line (without its newline), dropping the oldest lines to stay in bounds.
    pub(super) fn push(&mut self, line: &[u8]) {
        let line = &line[..line.len().min(TAIL_BYTES - 1)];
        while self.lines > 0
            && (self.lines >= TAIL_LINES || self.buf.len() + line.len() + 1 > TAIL_BYTES)
        {
            self.pop_line();
        }
        self.buf.extend(line);
        self.buf.push_back(b'\n');
        self.lines += 1;
    }

    pub(super) fn is_empty(&self) -> bool {
        self.lines == 0
    }

    /// The lines kept, oldest first, joined by newlines (invalid UTF-8 replaced).
    pub(super) fn text(&self) -> String {
        let (a, b) = self.buf.as_slices();
        let mut bytes = Vec::with_capacity(self.buf.len());
        bytes.extend_from_slice(a);
        bytes.extend_from_slice(b);
        if bytes.last() == Some(&b'\n') {
            bytes.pop();
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn pop_line(&mut self) {
        match self.buf.iter().position(|&b| b == b'\n') {
            Some(end) => {
                self.buf.drain(..=end);
                self.lines -= 1;
            }
            None => {
                self.buf.clear();
                self.lines = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_lines() {
        let mut t = StderrTail::new();
        assert!(t.is_empty());
        assert_eq!(t.text(), "");
        t.push(b"one");
        t.push(b"");
        t.push(b"three");
        assert_eq!(t.text(), "one\n\nthree");
        for i in 0..25 {
            t.push(format!("line {i}").as_bytes());
        }
        let want: Vec<String> = (15..25).map(|i| format!("line {i}")).collect();
        assert_eq!(t.text(), want.join("\n"));
    }

    #[test]
    fn stays_within_its_bytes_and_never_grows() {
        let mut t = StderrTail::new();
        let capacity = t.buf.capacity();
        let long = vec![b'x'; 700];
        for i in 0..100u8 {
            t.push(&long[..(i as usize * 37) % 700]);
            t.push(&[b'a' + i % 26]);
            assert!(t.buf.len() <= TAIL_BYTES, "{}", t.buf.len());
            assert!(t.lines <= TAIL_LINES);
            assert_eq!(t.buf.iter().filter(|&&b| b == b'\n').count(), t.lines);
        }
        // A line longer than the tail keeps its start and evicts everything else.
        let mut huge = b"Traceback: ".to_vec();
        huge.resize(huge.len() + 3 * TAIL_BYTES, b'y');
        t.push(&huge);
        assert_eq!(t.lines, 1);
        assert_eq!(t.buf.len(), TAIL_BYTES);
        assert!(t.text().starts_with("Traceback: yyy"));
        t.push(b"last");
        assert_eq!(t.text(), "last");
        assert_eq!(t.buf.capacity(), capacity, "push reallocated");
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        let mut t = StderrTail::new();
        t.push(b"bad \xff byte");
        assert_eq!(t.text(), "bad \u{fffd} byte");
    }
}
