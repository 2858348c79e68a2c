//! One progress line on stderr: redrawn in place on a terminal, printed as plain lines
//! (at most one per change) when stderr is a file or a pipe, so logs stay readable.

use std::io::{IsTerminal, Write};

/// Where progress goes and how it is drawn.
pub struct StatusLine {
    out: Box<dyn Write + Send>,
    terminal: bool,
    /// On a terminal: whether a line is drawn and must be cleared. Plain: unused.
    drawn: bool,
    /// The change key of the last plain line printed.
    last_key: Option<String>,
}

impl StatusLine {
    /// Progress on this process's stderr.
    pub fn stderr() -> Self {
        let terminal = std::io::stderr().is_terminal();
        StatusLine::new(Box::new(std::io::stderr()), terminal)
    }

    /// Progress into any writer; `terminal` chooses in-place redraws.
    pub fn new(out: Box<dyn Write + Send>, terminal: bool) -> Self {
        StatusLine {
            out,
            terminal,
            drawn: false,
            last_key: None,
        }
    }

    /// Shows `text`. On a terminal the line is redrawn every time; otherwise a line is
    /// printed only when `key` (what counts as a change: not a ticking clock) differs
    /// from the last one printed.
    pub fn update(&mut self, text: &str, key: &str) {
        // Progress is a courtesy: a closed stderr must not fail the command.
        if self.terminal {
            let _ = write!(self.out, "\r\x1b[2K{text}");
            let _ = self.out.flush();
            self.drawn = true;
        } else if self.last_key.as_deref() != Some(key) {
            let _ = writeln!(self.out, "{text}");
            let _ = self.out.flush();
            self.last_key = Some(key.to_owned());
        }
    }

    /// Prints a line that stays (after clearing an in-place line).
    pub fn println(&mut self, text: &str) {
        self.clear();
        let _ = writeln!(self.out, "{text}");
        let _ = self.out.flush();
    }

    /// Removes the in-place line, if one is drawn.
    pub fn clear(&mut self) {
        if self.terminal && self.drawn {
            let _ = write!(self.out, "\r\x1b[2K");
            let _ = self.out.flush();
            self.drawn = false;
        }
    }
}

impl Drop for StatusLine {
    fn drop(&mut self) {
        self.clear();
    }
}

/// A byte count for people: `512 B`, `1.5 KiB`, `3.2 MiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = UNITS[0];
    for next in &UNITS[1..] {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = next;
    }
    format!("{value:.1} {unit}")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A writer tests can read back.
    #[derive(Clone, Default)]
    pub(crate) struct Shared(pub Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Shared {
        pub(crate) fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    #[test]
    fn plain_output_prints_one_line_per_change() {
        let buf = Shared::default();
        let mut line = StatusLine::new(Box::new(buf.clone()), false);
        line.update("Running ... 1/3 (1s)", "1/3");
        line.update("Running ... 1/3 (2s)", "1/3");
        line.update("Running ... 2/3 (3s)", "2/3");
        drop(line);
        assert_eq!(buf.text(), "Running ... 1/3 (1s)\nRunning ... 2/3 (3s)\n");
    }

    #[test]
    fn terminal_output_redraws_in_place_and_clears() {
        let buf = Shared::default();
        let mut line = StatusLine::new(Box::new(buf.clone()), true);
        line.update("a", "k");
        line.update("b", "k");
        drop(line);
        assert_eq!(buf.text(), "\r\x1b[2Ka\r\x1b[2Kb\r\x1b[2K");
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024 + 200 * 1024), "3.2 MiB");
    }
}
