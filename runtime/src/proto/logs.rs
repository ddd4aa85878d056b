//! Workers' output lines at the driver, deduplicated as Ray does: the first line with a given
//! text (whatever worker printed it) shows at once; the same text again within
//! [`WINDOW`] is held back and counted, and when the window ends the last of them shows once
//! with `[repeated 7x across cluster]`. Sans-IO: lines and the time go in, what to print comes
//! out; the driver's node prints it and calls [`Dedup::due`] every second.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// How long repeats of a line are held back and counted.
pub(crate) const WINDOW: Duration = Duration::from_secs(5);

/// What to print: the text, and whether it goes to standard error.
pub(crate) type Printed = (bool, String);

/// Lines seen in the last [`WINDOW`] (see the module's documentation).
#[derive(Debug, Default)]
pub(crate) struct Dedup {
    /// By stream and text (without the worker's label).
    seen: HashMap<(bool, String), Seen>,
    /// When each text was first seen, oldest first.
    order: VecDeque<(Instant, (bool, String))>,
}

#[derive(Debug)]
struct Seen {
    /// Repeats held back.
    repeats: u64,
    /// The last repeat, as the worker labelled it.
    last: String,
}

/// A labelled line's text without its label: `(f pid=1 node=n) text` gives `text`.
fn text_of(line: &str) -> &str {
    line.strip_prefix('(')
        .and_then(|rest| rest.split_once(") "))
        .map_or(line, |(_, text)| text)
}

impl Dedup {
    /// Takes in `batch`, lines a worker wrote to one stream (`stderr` or not), each labelled;
    /// appends to `now_out` what shows at once.
    pub(crate) fn lines(&mut self, stderr: bool, batch: &str, now: Instant, now_out: &mut String) {
        for line in batch.split_inclusive('\n') {
            let text = text_of(line.trim_end_matches('\n'));
            if text.trim().is_empty() {
                now_out.push_str(line);
                continue;
            }
            let key = (stderr, text.to_string());
            match self.seen.get_mut(&key) {
                Some(seen) => {
                    seen.repeats += 1;
                    seen.last.clear();
                    seen.last.push_str(line.trim_end_matches('\n'));
                }
                None => {
                    now_out.push_str(line);
                    if !line.ends_with('\n') {
                        now_out.push('\n');
                    }
                    let seen = Seen {
                        repeats: 0,
                        last: String::new(),
                    };
                    self.seen.insert(key.clone(), seen);
                    self.order.push_back((now, key));
                }
            }
        }
    }

    /// The counts of lines whose window ended by `now`, to print.
    pub(crate) fn due(&mut self, now: Instant) -> Vec<Printed> {
        let mut out = Vec::new();
        while let Some((first, _)) = self.order.front() {
            if now.saturating_duration_since(*first) < WINDOW {
                break;
            }
            let Some((_, key)) = self.order.pop_front() else {
                break;
            };
            self.end(key, &mut out);
        }
        out
    }

    /// Every count held, to print now (the driver stops).
    pub(crate) fn flush(&mut self) -> Vec<Printed> {
        let mut out = Vec::new();
        while let Some((_, key)) = self.order.pop_front() {
            self.end(key, &mut out);
        }
        out
    }

    /// Whether counts are held.
    pub(crate) fn holds(&self) -> bool {
        !self.order.is_empty()
    }

    fn end(&mut self, key: (bool, String), out: &mut Vec<Printed>) {
        if let Some(seen) = self.seen.remove(&key)
            && seen.repeats > 0
        {
            let line = format!(
                "{} [repeated {}x across cluster]\n",
                seen.last, seen.repeats
            );
            out.push((key.0, line));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_line_shows_at_once_and_repeats_once_counted() {
        let t0 = Instant::now();
        let mut dedup = Dedup::default();
        let mut out = String::new();
        dedup.lines(false, "(f pid=1) hello\n(f pid=1) step 1\n", t0, &mut out);
        assert_eq!(out, "(f pid=1) hello\n(f pid=1) step 1\n");
        out.clear();
        // Other workers print the same; a different line and another stream show at once.
        let later = t0 + Duration::from_secs(1);
        dedup.lines(
            false,
            "(f pid=2 node=n2) hello\n(f pid=3) hello\n",
            later,
            &mut out,
        );
        dedup.lines(false, "(f pid=2) step 2\n", later, &mut out);
        dedup.lines(true, "(f pid=4) hello", later, &mut out);
        assert_eq!(out, "(f pid=2) step 2\n(f pid=4) hello\n");
        assert!(dedup.due(t0 + Duration::from_secs(4)).is_empty());
        assert!(dedup.holds());
        let shown = dedup.due(t0 + WINDOW);
        assert_eq!(
            shown,
            vec![(
                false,
                "(f pid=3) hello [repeated 2x across cluster]\n".to_string()
            )]
        );
        // A line seen once is forgotten quietly; after its window a line shows again.
        out.clear();
        dedup.lines(false, "(f pid=1) hello\n", t0 + WINDOW, &mut out);
        assert_eq!(out, "(f pid=1) hello\n");
        assert!(dedup.due(t0 + WINDOW * 3).is_empty());
        assert!(!dedup.holds());
    }

    #[test]
    fn blank_and_unlabelled_lines_pass_and_a_flush_gives_every_count() {
        let t0 = Instant::now();
        let mut dedup = Dedup::default();
        let mut out = String::new();
        dedup.lines(false, "\n\nplain\nplain\n", t0, &mut out);
        assert_eq!(out, "\n\nplain\n");
        dedup.lines(true, "(g pid=9) boom\n(g pid=8) boom\n", t0, &mut out);
        let flushed = dedup.flush();
        assert_eq!(
            flushed,
            vec![
                (false, "plain [repeated 1x across cluster]\n".to_string()),
                (
                    true,
                    "(g pid=8) boom [repeated 1x across cluster]\n".to_string()
                )
            ]
        );
        assert!(!dedup.holds());
    }
}
