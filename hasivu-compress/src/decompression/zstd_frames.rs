//! Where each zstd frame of a body ends and how much content its header
//! declares (RFC 8878 §3.1), read as the bytes arrive, in pieces of any
//! size. libzstd's streaming decoder checks the declared size at the end
//! of a frame, except when the frame ends with an empty last block: the
//! decode stage checks that case itself with what this reports.
//!
//! Only the framing is read (headers, block headers, lengths), never the
//! content. Input this reader does not understand (a wrong magic number, a
//! reserved block type) stops it: the decoder refuses such input anyway.

/// The magic number of a zstd frame.
const ZSTD_MAGIC: u32 = 0xFD2F_B528;
/// Skippable frames carry 0x184D2A50 to 0x184D2A5F.
const SKIPPABLE_MAGIC: u32 = 0x184D_2A50;

/// What comes after bytes that are skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Then {
    Magic,
    ContentSize(usize),
    BlockHeader,
    FrameEnd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// 4 bytes.
    Magic,
    /// 4 bytes: the length of a skippable frame's content.
    SkippableSize,
    /// 1 byte: the frame header descriptor.
    Descriptor,
    /// 0, 1, 2, 4 or 8 bytes.
    ContentSize(usize),
    /// 3 bytes.
    BlockHeader,
    Skip(u64, Then),
    /// Not zstd framing as this reader knows it: nothing more is read.
    Lost,
}

/// The framing reader; see the module docs.
#[derive(Debug)]
pub(crate) struct Frames {
    step: Step,
    /// The bytes of a multi-byte field read so far.
    field: [u8; 8],
    have: usize,
    /// The current frame's declared content size.
    declared: Option<u64>,
    checksum: bool,
}

impl Default for Frames {
    fn default() -> Self {
        Self {
            step: Step::Magic,
            field: [0; 8],
            have: 0,
            declared: None,
            checksum: false,
        }
    }
}

impl Frames {
    /// Reads from `input` up to the end of the current frame: how many
    /// bytes were read, and, when a frame ended with the last of them, its
    /// declared content size (`Some(None)`: it declared none). Reads all of
    /// `input` when no frame ends in it.
    pub(crate) fn advance(&mut self, input: &[u8]) -> (usize, Option<Option<u64>>) {
        let mut used = 0;
        loop {
            // Steps that need no byte.
            match self.step {
                Step::Skip(0, then) => {
                    self.step = match then {
                        Then::Magic => Step::Magic,
                        Then::ContentSize(size) => Step::ContentSize(size),
                        Then::BlockHeader => Step::BlockHeader,
                        Then::FrameEnd => {
                            self.step = Step::Magic;
                            return (used, Some(self.declared.take()));
                        }
                    };
                    continue;
                }
                Step::ContentSize(0) => {
                    self.declared = None;
                    self.step = Step::BlockHeader;
                    continue;
                }
                Step::Lost => return (input.len(), None),
                _ => {}
            }
            let Some(rest) = input.get(used..).filter(|rest| !rest.is_empty()) else {
                return (used, None);
            };
            if let Step::Skip(left, then) = self.step {
                let n = usize::try_from(left).unwrap_or(usize::MAX).min(rest.len());
                used += n;
                self.step = Step::Skip(left - n as u64, then);
                continue;
            }
            let need = match self.step {
                Step::Magic | Step::SkippableSize => 4,
                Step::Descriptor => 1,
                Step::ContentSize(size) => size,
                Step::BlockHeader => 3,
                Step::Skip(..) | Step::Lost => unreachable!("handled above"),
            };
            let n = (need - self.have).min(rest.len());
            self.field[self.have..self.have + n].copy_from_slice(&rest[..n]);
            self.have += n;
            used += n;
            if self.have < need {
                continue;
            }
            self.have = 0;
            let value = u64::from_le_bytes(self.field);
            self.field = [0; 8];
            self.step = self.next(value);
        }
    }

    /// The step after a complete field of the current step.
    fn next(&mut self, value: u64) -> Step {
        match self.step {
            Step::Magic => match u32::try_from(value).unwrap_or(0) {
                ZSTD_MAGIC => Step::Descriptor,
                magic if magic & 0xFFFF_FFF0 == SKIPPABLE_MAGIC => Step::SkippableSize,
                _ => Step::Lost,
            },
            Step::SkippableSize => Step::Skip(value, Then::Magic),
            Step::Descriptor => {
                let single_segment = value & 0x20 != 0;
                self.checksum = value & 0x04 != 0;
                let dictionary = [0, 1, 2, 4][(value & 3) as usize];
                let window = u64::from(!single_segment);
                let content_size = match value >> 6 {
                    0 => usize::from(single_segment),
                    1 => 2,
                    2 => 4,
                    _ => 8,
                };
                Step::Skip(window + dictionary, Then::ContentSize(content_size))
            }
            Step::ContentSize(size) => {
                // A two-byte field counts from 256 (RFC 8878 §3.1.1.1.4).
                self.declared = Some(if size == 2 { value + 256 } else { value });
                Step::BlockHeader
            }
            Step::BlockHeader => {
                let last = value & 1 != 0;
                let size = value >> 3;
                let content = match (value >> 1) & 3 {
                    // Raw and compressed blocks hold `size` bytes, RLE one.
                    0 | 2 => size,
                    1 => 1,
                    _ => return Step::Lost,
                };
                let then = match (last, self.checksum) {
                    (false, _) => Then::BlockHeader,
                    (true, false) => Then::FrameEnd,
                    (true, true) => return Step::Skip(content + 4, Then::FrameEnd),
                };
                Step::Skip(content, then)
            }
            Step::Skip(..) | Step::Lost => unreachable!("no field is read in these steps"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frame ends and declared sizes over `body` read in pieces of `chunk`.
    fn ends(body: &[u8], chunk: usize) -> Vec<(usize, Option<u64>)> {
        let mut frames = Frames::default();
        let mut seen = Vec::new();
        let mut offset = 0;
        for piece in body.chunks(chunk) {
            let mut rest = piece;
            while !rest.is_empty() {
                let (n, end) = frames.advance(rest);
                offset += n;
                rest = &rest[n..];
                if let Some(declared) = end {
                    seen.push((offset, declared));
                }
                assert!(n > 0 || end.is_some(), "no progress");
            }
        }
        seen
    }

    #[test]
    fn frames_end_where_their_blocks_end_whatever_the_pieces() {
        let one = zstd::encode_all(&b"hello hello hello"[..], 3).unwrap();
        let mut encoder = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
        encoder.include_checksum(true).unwrap();
        encoder.set_pledged_src_size(Some(5)).unwrap();
        std::io::Write::write_all(&mut encoder, b"world").unwrap();
        let two = encoder.finish().unwrap();
        // A skippable frame between them.
        let skippable = [0x5a, 0x2a, 0x4d, 0x18, 3, 0, 0, 0, 1, 2, 3];
        let body = [&one[..], &skippable[..], &two[..]].concat();
        let whole = ends(&body, body.len());
        assert_eq!(whole.len(), 2, "{whole:?}");
        assert_eq!(whole[0].0, one.len());
        assert_eq!(whole[1], (body.len(), Some(5)));
        for chunk in 1..body.len() {
            assert_eq!(ends(&body, chunk), whole, "pieces of {chunk}");
        }
    }

    #[test]
    fn sizes_are_read_in_every_field_width() {
        // Single segment, 1-byte size; 2-byte size (+256); 4 and 8 bytes.
        let empty_last = [0x01, 0x00, 0x00];
        let cases: [(&[u8], u64); 4] = [
            (&[0x20, 7], 7),
            (&[0x40, 0x00, 0x01, 0x00], 257),
            (&[0x80, 0x00, 1, 0, 0, 0], 1),
            (&[0xc0, 0x00, 2, 0, 0, 0, 0, 0, 0, 0], 2),
        ];
        for (header, declared) in cases {
            let body = [&[0x28, 0xb5, 0x2f, 0xfd][..], header, &empty_last].concat();
            assert_eq!(
                ends(&body, 1),
                [(body.len(), Some(declared))],
                "{header:02x?}"
            );
        }
    }

    #[test]
    fn what_is_not_zstd_framing_stops_the_reader() {
        assert!(ends(b"not zstd at all", 3).is_empty());
        // A reserved block type.
        let body = [0x28, 0xb5, 0x2f, 0xfd, 0x20, 0x04, 0x07, 0x00, 0x00, 0, 0];
        assert!(ends(&body, 2).is_empty());
    }
}
