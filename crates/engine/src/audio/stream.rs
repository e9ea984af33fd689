//! The 16 kHz samples a transcription reads, moving forward through the audio:
//! either samples already in memory, or a file decoded as it goes with only the
//! part still needed kept (about two 30 s windows), so memory does not grow with
//! the audio's length.
use super::input::{AudioError, AudioReader};
use crate::cancel::Cancel;
use std::sync::Arc;

/// Where a transcription's audio comes from.
pub(super) enum Source<'a> {
    Samples(&'a [f32]),
    /// An uploaded file, read twice: once to measure it, once to transcribe.
    File {
        bytes: Arc<[u8]>,
        filename: Option<&'a str>,
    },
}

/// Samples `[start, start + buf.len())` of the audio; earlier ones are released.
pub(super) struct Feed<'a> {
    inner: Inner<'a>,
}

enum Inner<'a> {
    Samples(&'a [f32]),
    // Boxed: the decoder state is large beside a borrowed slice.
    File { reader: Box<AudioReader>, buf: Vec<f32>, start: usize, ended: bool },
}

impl<'a> Feed<'a> {
    pub fn open(source: &Source<'a>) -> Result<Self, AudioError> {
        let inner = match source {
            Source::Samples(s) => Inner::Samples(s),
            Source::File { bytes, filename } => {
                Inner::File { reader: Box::new(AudioReader::open(bytes.clone(), *filename)?), buf: Vec::new(), start: 0, ended: false }
            }
        };
        Ok(Self { inner })
    }

    /// Reads until the samples before `end` are held or the audio ends.
    pub fn fill(&mut self, end: usize, cancel: &Cancel) -> Result<(), AudioError> {
        if let Inner::File { reader, buf, start, ended } = &mut self.inner {
            while !*ended && *start + buf.len() < end {
                cancel.check()?;
                *ended = !reader.read(buf)?;
            }
        }
        Ok(())
    }

    /// Whether every sample has been read; `held_end` is then the audio's length.
    pub fn ended(&self) -> bool {
        match &self.inner {
            Inner::Samples(_) => true,
            Inner::File { ended, .. } => *ended,
        }
    }

    /// One past the last sample held.
    pub fn held_end(&self) -> usize {
        match &self.inner {
            Inner::Samples(s) => s.len(),
            Inner::File { buf, start, .. } => start + buf.len(),
        }
    }

    /// The reader, for its length checks once the audio has ended.
    pub fn reader(&self) -> Option<&AudioReader> {
        match &self.inner {
            Inner::Samples(_) => None,
            Inner::File { reader, .. } => Some(reader),
        }
    }

    /// The samples held in `[from, to)` (clipped to what is held) and the index
    /// of the first. `from` before the held ones starts at the first held.
    pub fn get(&self, from: usize, to: usize) -> (&[f32], usize) {
        let (all, first) = match &self.inner {
            Inner::Samples(s) => (*s, 0),
            Inner::File { buf, start, .. } => (buf.as_slice(), *start),
        };
        debug_assert!(from >= first, "sample {from} was released (held from {first})");
        let lo = from.max(first).min(first + all.len());
        let hi = to.clamp(lo, first + all.len());
        (&all[lo - first..hi - first], lo)
    }

    /// Lets go of the samples before `at`.
    pub fn release(&mut self, at: usize) {
        if let Inner::File { buf, start, .. } = &mut self.inner {
            let drop = at.saturating_sub(*start).min(buf.len());
            buf.drain(..drop);
            *start += drop;
        }
    }
}
