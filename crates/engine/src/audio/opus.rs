//! Opus audio (what browsers record into webm, and voice notes into ogg) decoded
//! with the system's libopus, loaded when the first Opus file arrives: symphonia
//! demuxes the packets but has no Opus decoder, and loading the library at run
//! time keeps the build free of a C toolchain and of libopus headers.
use std::ffi::{c_int, c_void};
use std::sync::OnceLock;

use super::input::AudioError;

/// libopus decodes to this rate whatever the encoder was fed.
pub const RATE: u32 = 48_000;
/// The longest Opus packet: 120 ms at 48 kHz.
const MAX_FRAME: usize = 5_760;

type Create = unsafe extern "C" fn(rate: i32, channels: c_int, error: *mut c_int) -> *mut c_void;
type DecodeFloat = unsafe extern "C" fn(st: *mut c_void, data: *const u8, len: i32, pcm: *mut f32, frame_size: c_int, fec: c_int) -> c_int;
type Destroy = unsafe extern "C" fn(st: *mut c_void);

struct Lib {
    create: Create,
    decode: DecodeFloat,
    destroy: Destroy,
    /// Keeps the functions above loaded.
    _lib: libloading::Library,
}

fn lib() -> Result<&'static Lib, AudioError> {
    static LIB: OnceLock<Option<Lib>> = OnceLock::new();
    LIB.get_or_init(|| {
        // SAFETY: libopus runs no initialisers with side effects, and the symbols
        // are typed as its stable C API declares them (opus.h, API version 1.x).
        unsafe {
            let lib = libloading::Library::new("libopus.so.0").ok()?;
            let create = *lib.get::<Create>(b"opus_decoder_create\0").ok()?;
            let decode = *lib.get::<DecodeFloat>(b"opus_decode_float\0").ok()?;
            let destroy = *lib.get::<Destroy>(b"opus_decoder_destroy\0").ok()?;
            Some(Lib { create, decode, destroy, _lib: lib })
        }
    })
    .as_ref()
    .ok_or_else(|| AudioError::Undecodable("Opus audio needs the system's libopus (Debian/Ubuntu: apt install libopus0)".into()))
}

/// The fields of an `OpusHead` (RFC 7845 §5.1) the decoder needs.
#[derive(Debug, PartialEq)]
pub struct Head {
    pub channels: usize,
    /// Samples (at 48 kHz) the encoder put before the audio; dropped.
    pub pre_skip: usize,
}

impl Head {
    /// From the identification header, which ogg carries as its first packet and
    /// webm/mkv as the track's CodecPrivate (symphonia's `extra_data` in both).
    pub fn parse(header: &[u8]) -> Result<Self, AudioError> {
        let bad = |why: &str| AudioError::Undecodable(format!("Opus stream: {why}"));
        if header.len() < 19 || &header[..8] != b"OpusHead" {
            return Err(bad("no OpusHead identification header"));
        }
        let channels = header[9] as usize;
        let pre_skip = u16::from_le_bytes([header[10], header[11]]) as usize;
        match (header[18], channels) {
            (0, 1 | 2) => Ok(Self { channels, pre_skip }),
            (0, _) => Err(bad("channel count outside 1–2 without a channel map")),
            (family, _) => Err(bad(&format!("multistream channel mapping {family} (surround) is not supported; send mono or stereo"))),
        }
    }
}

/// One stream's decoder state.
pub struct Decoder {
    lib: &'static Lib,
    state: *mut c_void,
    head: Head,
    /// Samples per channel still to drop from the start.
    skip: usize,
    pcm: Vec<f32>,
}

impl Decoder {
    pub fn new(header: &[u8]) -> Result<Self, AudioError> {
        let head = Head::parse(header)?;
        let lib = lib()?;
        let mut error = 0;
        // SAFETY: a valid rate and channel count; `error` receives the status.
        let state = unsafe { (lib.create)(RATE as i32, head.channels as c_int, &mut error) };
        if state.is_null() || error != 0 {
            return Err(AudioError::Undecodable(format!("libopus refused the stream (error {error})")));
        }
        Ok(Self { lib, state, skip: head.pre_skip, head, pcm: vec![0.0; MAX_FRAME * 2] })
    }

    pub fn channels(&self) -> usize {
        self.head.channels
    }

    /// Appends one packet's interleaved samples to `out`; a corrupt packet adds nothing.
    pub fn decode(&mut self, packet: &[u8], out: &mut Vec<f32>) {
        let Ok(len) = i32::try_from(packet.len()) else { return };
        // SAFETY: `pcm` holds MAX_FRAME samples per channel, as `frame_size` says.
        let n = unsafe { (self.lib.decode)(self.state, packet.as_ptr(), len, self.pcm.as_mut_ptr(), MAX_FRAME as c_int, 0) };
        let Ok(n) = usize::try_from(n) else { return };
        let dropped = self.skip.min(n);
        self.skip -= dropped;
        out.extend_from_slice(&self.pcm[dropped * self.head.channels..n * self.head.channels]);
    }
}

impl Drop for Decoder {
    fn drop(&mut self) {
        // SAFETY: created by `opus_decoder_create`, destroyed once.
        unsafe { (self.lib.destroy)(self.state) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(channels: u8, pre_skip: u16, family: u8) -> Vec<u8> {
        let mut h = b"OpusHead".to_vec();
        h.extend([1, channels]);
        h.extend(pre_skip.to_le_bytes());
        h.extend(48_000u32.to_le_bytes());
        h.extend([0, 0, family]);
        h
    }

    #[test]
    fn reads_the_identification_header() {
        assert_eq!(Head::parse(&head(2, 312, 0)).unwrap(), Head { channels: 2, pre_skip: 312 });
        assert!(Head::parse(&head(6, 312, 1)).is_err(), "surround");
        assert!(Head::parse(&head(3, 0, 0)).is_err(), "3 channels without a map");
        assert!(Head::parse(b"OpusTags and more bytes").is_err());
        assert!(Head::parse(&head(1, 0, 0)[..12]).is_err(), "truncated");
    }
}
