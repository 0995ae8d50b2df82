//! Bounded excerpts of text that comes from outside (a pod's page, a Prometheus error, an
//! NVML message): the one place every such text is cut before it reaches a reason, a
//! condition, an event or a log line a user reads.

use std::borrow::Cow;

/// The most bytes of an external text kept in a rule's reason (and so in
/// `status.rules[].reason`, conditions and events).
pub const MAX_REASON_BYTES: usize = 1024;

/// The most lines of an external text kept in a rule's reason.
pub const MAX_REASON_LINES: usize = 4;

/// `text` cut to at most `max_bytes` bytes and `max_lines` lines, on a UTF-8 character
/// boundary, with a marker saying how much was left out when anything was.
///
/// The result, marker included, is never longer than `max_bytes` (for `max_bytes` of 32 or
/// more; below that the marker is left out and the text is only cut). A text within both
/// bounds comes back borrowed and unchanged. `max_lines` of 0 counts as 1.
///
/// A status the API server cannot store (over its request size limit) is never written, so
/// the policy's status would freeze on the first huge error; every external text goes
/// through here first.
///
/// ```
/// use vllm_scaling_core::excerpt;
///
/// assert_eq!(excerpt("short", 100, 1), "short");
/// let long = "é".repeat(1000); // 2000 bytes
/// let cut = excerpt(&long, 64, 1);
/// assert!(cut.len() <= 64 && cut.ends_with("[1958 more bytes]"), "{cut}");
/// assert_eq!(excerpt("one\ntwo\nthree", 100, 2), "one\ntwo… [6 more bytes]");
/// ```
#[must_use]
pub fn excerpt(text: &str, max_bytes: usize, max_lines: usize) -> Cow<'_, str> {
    let max_lines = max_lines.max(1);
    // The end of the `max_lines`-th line, when there are more lines than that. Only the
    // first `max_bytes` can be kept, so only they are searched: the cost is bounded by the
    // excerpt, not by the text (a 10 MB line is not scanned).
    let line_end = memchr_nth_newline(text, max_bytes, max_lines);
    let within_lines = line_end.is_none();
    if text.len() <= max_bytes && within_lines {
        return Cow::Borrowed(text);
    }
    let limit = line_end.unwrap_or(text.len());
    // The marker's length with the largest count it can show, so the cut never overflows.
    let marker_len = marker(text.len()).len();
    let (budget, with_marker) =
        if max_bytes >= 32 && max_bytes > marker_len { (max_bytes - marker_len, true) } else { (max_bytes, false) };
    let mut cut = limit.min(budget);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let kept = &text[..cut];
    if !with_marker {
        return Cow::Borrowed(kept);
    }
    let mut out = String::with_capacity(cut + marker_len);
    out.push_str(kept);
    out.push_str(&marker(text.len() - cut));
    Cow::Owned(out)
}

fn marker(omitted: usize) -> String {
    format!("… [{omitted} more bytes]")
}

/// The byte index of the `n`-th `\n` (1-based) within the first `within` bytes, if the text
/// has that many and more after it.
fn memchr_nth_newline(text: &str, within: usize, n: usize) -> Option<usize> {
    let mut seen = 0;
    for (i, b) in text.bytes().take(within).enumerate() {
        if b == b'\n' {
            seen += 1;
            if seen == n {
                return (i + 1 < text.len()).then_some(i);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_texts_are_borrowed_unchanged() {
        assert!(matches!(excerpt("abc", 3, 1), Cow::Borrowed("abc")));
        assert!(matches!(excerpt("a\nb", 10, 2), Cow::Borrowed("a\nb")));
        assert!(matches!(excerpt("a\n", 10, 1), Cow::Borrowed("a\n")), "a trailing newline is not a second line");
        assert_eq!(excerpt("", 0, 0), "");
    }

    #[test]
    fn long_texts_are_cut_within_the_bound_with_a_marker() {
        let ten_mb = "x".repeat(10 << 20);
        let cut = excerpt(&ten_mb, MAX_REASON_BYTES, MAX_REASON_LINES);
        assert!(cut.len() <= MAX_REASON_BYTES, "{}", cut.len());
        assert!(cut.starts_with("xxxx") && cut.ends_with(" more bytes]"), "{cut}");
        let omitted: usize = cut.rsplit('[').next().unwrap().split(' ').next().unwrap().parse().unwrap();
        assert_eq!(omitted + cut.find('…').unwrap(), ten_mb.len(), "the marker counts what was left out");
    }

    #[test]
    fn cuts_respect_utf8_boundaries_for_every_bound() {
        let text = "aé€😀".repeat(40);
        for max in 0..text.len() + 2 {
            let cut = excerpt(&text, max, 1);
            assert!(cut.len() <= max, "max {max}: {} bytes", cut.len());
            assert!(text.starts_with(cut.split('…').next().unwrap()), "max {max}");
        }
    }

    #[test]
    fn lines_are_bounded() {
        assert_eq!(excerpt("1\n2\n3\n4", 1000, 2), "1\n2… [4 more bytes]");
        let many = "line\n".repeat(100_000);
        let cut = excerpt(&many, 1 << 20, 3);
        assert_eq!(cut.matches('\n').count(), 2, "{cut}");
        // Tiny bounds cut without a marker.
        assert_eq!(excerpt("abcdef", 3, 1), "abc");
    }
}
