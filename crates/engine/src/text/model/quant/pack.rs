//! Load-time repacking: GGML blocks of each type are decoded into uniform 32-value
//! blocks, then stored 4 rows interleaved in one of the few layouts the kernels read.
//!
//! Every layout holds, per group of 4 rows and 32 columns, the scales of the 4 rows
//! side by side (one vector load) followed by the 4 rows' quants. Values are
//! `w = dlo * (q - z) + m` for the first 16 columns and `w = dhi * (q - z) + m` for the
//! last 16, with `z` the layout's zero point.
//! Scales are stored as the GGML type stores them, so that the pack loses nothing and
//! reads few more bytes than the file: f16, or for the K-quants an 8-bit sub-block scale
//! and its row's f16 super-block scale, multiplied in f32 when read (exactly: 11 by 6
//! significant bits).
use candle_core::quantized::GgmlDType;
use candle_core::{bail, Result};
use half::f16;

pub const ROWS: usize = 4;
pub const BLOCK: usize = 32;

/// The packed layouts. Scales come first: `d[4]`, then `m[4]` (offsets) or `dhi[4]`
/// where the layout has them; in the K layouts, these sets of 4 sub-block scales (i8)
/// and then the f16 super-block scales of the 4 rows (of `d`, then of `m` where it has
/// its own). Quants of 4 to 6 bits: the low nibbles (per row 16 bytes,
/// low nibble = column j, high = j + 16), then the bits above them: 5-bit, 16 bytes for
/// the 4 rows (byte j, bit 2r = row r's column j, bit 2r + 1 = its column j + 16, so that
/// one shift lines up a row's bits); 6-bit, per row 8 bytes (byte j, bits 2i..2i+1 =
/// column j + 8i).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Q4_0: 4-bit about a zero point of 8; f16 `d`.
    Nib4Sym,
    /// Q4_1: 4-bit; f16 `d m`.
    Nib4,
    /// Q4_K: 4-bit; `d m` as i8 times f16.
    Nib4K,
    /// Q5_0: 5-bit about 16; f16 `d`.
    Nib5Sym,
    /// Q5_1: 5-bit; f16 `d m`.
    Nib5,
    /// Q8_0: signed 8-bit; f16 `d`.
    I8,
    /// Q6_K: 6-bit about 32 with a scale per half block; `dlo dhi` as i8 times one f16.
    I6Half,
}

impl Layout {
    pub fn for_dtype(dtype: GgmlDType) -> Option<Self> {
        Some(match dtype {
            GgmlDType::Q4_0 => Self::Nib4Sym,
            GgmlDType::Q4_1 => Self::Nib4,
            GgmlDType::Q4K => Self::Nib4K,
            GgmlDType::Q5_0 => Self::Nib5Sym,
            GgmlDType::Q5_1 => Self::Nib5,
            GgmlDType::Q8_0 => Self::I8,
            GgmlDType::Q6K => Self::I6Half,
            _ => return None,
        })
    }

    pub const fn quant_bits(self) -> usize {
        match self {
            Self::Nib4Sym | Self::Nib4 | Self::Nib4K => 4,
            Self::Nib5Sym | Self::Nib5 => 5,
            Self::I6Half => 6,
            Self::I8 => 8,
        }
    }

    /// Unsigned quants (with a zero point or a stored offset); else signed 8-bit.
    pub const fn unsigned_quants(self) -> bool {
        self.quant_bits() < 8
    }

    /// The offset `m` is stored per row (else it is 0).
    pub const fn stores_offset(self) -> bool {
        matches!(self, Self::Nib4 | Self::Nib4K | Self::Nib5)
    }

    pub const fn zero_point(self) -> i32 {
        match self {
            Self::Nib4Sym => 8,
            Self::Nib5Sym => 16,
            Self::I6Half => 32,
            _ => 0,
        }
    }

    pub const fn has_half_scales(self) -> bool {
        matches!(self, Self::I6Half)
    }

    /// Scales stored as an i8 sub-block scale times an f16 super-block scale (else f16).
    pub const fn split_scales(self) -> bool {
        matches!(self, Self::Nib4K | Self::I6Half)
    }

    /// Sets of 4 scales: `d`, and `m` or `dhi` where the layout has them.
    pub const fn scale_sets(self) -> usize {
        if self.stores_offset() || self.has_half_scales() {
            2
        } else {
            1
        }
    }

    /// Where the f16 super-block scales of scale set `set` lie (split scales only): the
    /// half-block scales share one.
    pub const fn super_offset(self, set: usize) -> usize {
        self.scale_sets() * ROWS + if self.stores_offset() { 2 * ROWS * set } else { 0 }
    }

    /// Offset of the quants (their low nibbles, or the signed 8-bit values) within a group.
    pub const fn quants_offset(self) -> usize {
        if self.split_scales() {
            self.super_offset(self.scale_sets() - 1) + 2 * ROWS
        } else {
            self.scale_sets() * ROWS * 2
        }
    }

    /// Bytes of one group (4 rows × 32 columns).
    pub const fn group_bytes(self) -> usize {
        self.quants_offset() + ROWS * self.quant_bits() * BLOCK / 8
    }

    /// Offset of the bits above the low nibbles (5- and 6-bit layouts) within a group.
    pub const fn high_bits_offset(self) -> usize {
        self.quants_offset() + ROWS * 16
    }

    /// Scale `i` of a group (0..4: `d` or `dlo`; 4..8: `m` or `dhi`).
    pub fn scale(self, group: &[u8], i: usize) -> f32 {
        if self.split_scales() {
            let (set, r) = (i / ROWS, i % ROWS);
            f16_at(group, self.super_offset(set) + 2 * r) * group[i] as i8 as f32
        } else {
            f16_at(group, 2 * i)
        }
    }

    /// Stores scale `i` of a block: `b.sub[set]` times `b.sup[set]` for split scales.
    fn put_scale(self, group: &mut [u8], i: usize, b: &Block32) {
        let (set, r) = (i / ROWS, i % ROWS);
        let value = [b.dlo, if self.stores_offset() { b.m } else { b.dhi }][set];
        let put_f16 = |group: &mut [u8], at: usize, v: f32| {
            let h = f16::from_f32(v);
            debug_assert!(h.to_f32() == v || v.is_nan(), "scale {v} does not fit an f16");
            group[at..at + 2].copy_from_slice(&h.to_le_bytes());
        };
        if self.split_scales() {
            debug_assert!(b.sup[set] * b.sub[set] as f32 == value || value.is_nan(), "scale {value} is not its parts' product");
            group[i] = b.sub[set] as u8;
            put_f16(group, self.super_offset(set) + 2 * r, b.sup[set]);
        } else {
            put_f16(group, 2 * i, value);
        }
    }
}

/// One decoded block: 32 quants (unsigned, about the layout's zero point, except for
/// I8) and scales; for the K-quants also the parts of the two scales (`dlo` and `m` or
/// `dhi`): `sub` times `sup`.
#[derive(Clone, Copy, Default)]
pub struct Block32 {
    pub q: [i32; BLOCK],
    pub dlo: f32,
    pub dhi: f32,
    pub m: f32,
    pub sub: [i8; 2],
    pub sup: [f32; 2],
}

impl Block32 {
    fn uniform(q: [i32; BLOCK], d: f32, m: f32) -> Self {
        Self { q, dlo: d, dhi: d, m, ..Self::default() }
    }
}

fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// Decodes one row of GGML blocks into 32-value blocks.
pub fn decode_row(dtype: GgmlDType, raw: &[u8], out: &mut Vec<Block32>) -> Result<()> {
    let type_size = dtype.type_size();
    for b in raw.chunks_exact(type_size) {
        match dtype {
            GgmlDType::Q4_0 | GgmlDType::Q4_1 => {
                let d = f16_at(b, 0);
                let (m, qs) = if dtype == GgmlDType::Q4_0 { (0.0, &b[2..18]) } else { (f16_at(b, 2), &b[4..20]) };
                let mut q = [0; BLOCK];
                for j in 0..16 {
                    q[j] = (qs[j] & 0xF) as i32;
                    q[j + 16] = (qs[j] >> 4) as i32;
                }
                out.push(Block32::uniform(q, d, m));
            }
            GgmlDType::Q5_0 | GgmlDType::Q5_1 => {
                let d = f16_at(b, 0);
                let (m, rest) = if dtype == GgmlDType::Q5_0 { (0.0, &b[2..]) } else { (f16_at(b, 2), &b[4..]) };
                let qh = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
                let qs = &rest[4..20];
                let mut q = [0; BLOCK];
                for j in 0..16 {
                    q[j] = (qs[j] & 0xF) as i32 | ((((qh >> j) & 1) << 4) as i32);
                    q[j + 16] = (qs[j] >> 4) as i32 | ((((qh >> (j + 16)) & 1) << 4) as i32);
                }
                out.push(Block32::uniform(q, d, m));
            }
            GgmlDType::Q8_0 => {
                let d = f16_at(b, 0);
                let mut q = [0; BLOCK];
                for j in 0..BLOCK {
                    q[j] = b[2 + j] as i8 as i32;
                }
                out.push(Block32::uniform(q, d, 0.0));
            }
            GgmlDType::Q4K => {
                let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
                let scales = &b[4..16];
                let qs = &b[16..144];
                for sub in 0..8 {
                    let (sc, mn) = q4k_scale_min(sub, scales);
                    let chunk = &qs[32 * (sub / 2)..32 * (sub / 2) + 32];
                    let mut q = [0; BLOCK];
                    for l in 0..BLOCK {
                        q[l] = if sub % 2 == 0 { chunk[l] & 0xF } else { chunk[l] >> 4 } as i32;
                    }
                    let (sub, sup) = ([sc as i8, mn as i8], [d, -dmin]);
                    out.push(Block32 { sub, sup, ..Block32::uniform(q, d * sc as f32, -dmin * mn as f32) });
                }
            }
            GgmlDType::Q6K => {
                let (ql, qh, sc) = (&b[0..128], &b[128..192], &b[192..208]);
                let d = f16_at(b, 208);
                for half in 0..2 {
                    let (ql, qh, sc) = (&ql[64 * half..], &qh[32 * half..], &sc[8 * half..]);
                    for which in 0..4 {
                        let mut q = [0; BLOCK];
                        for l in 0..BLOCK {
                            let low = match which {
                                0 => ql[l] & 0xF,
                                1 => ql[l + 32] & 0xF,
                                2 => ql[l] >> 4,
                                _ => ql[l + 32] >> 4,
                            };
                            let high = (qh[l] >> (2 * which)) & 3;
                            q[l] = (low | (high << 4)) as i32;
                        }
                        let sub = [sc[2 * which] as i8, sc[2 * which + 1] as i8];
                        let (dlo, dhi) = (d * sub[0] as f32, d * sub[1] as f32);
                        out.push(Block32 { q, dlo, dhi, m: 0.0, sub, sup: [d, d] });
                    }
                }
            }
            other => bail!("no packed layout for {other:?}"),
        }
    }
    Ok(())
}

/// Scale and min of sub-block `j` of a Q4_K super-block (6 bits each, packed in 12 bytes).
fn q4k_scale_min(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        ((s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4), (s[j + 4] >> 4) | ((s[j] >> 6) << 4))
    }
}

/// Writes the group of blocks `blocks[r]` (one per row; None = padding row) at `dst`.
pub fn write_group(layout: Layout, blocks: [Option<&Block32>; ROWS], dst: &mut [u8]) {
    let zero = Block32::default();
    let rows: [&Block32; ROWS] = blocks.map(|b| b.unwrap_or(&zero));
    for (r, b) in rows.iter().enumerate() {
        for set in 0..layout.scale_sets() {
            layout.put_scale(dst, set * ROWS + r, b);
        }
        debug_assert!(layout.has_half_scales() || b.dlo == b.dhi);
        debug_assert!(layout.stores_offset() || b.m == 0.0);
    }
    let qs_at = layout.quants_offset();
    let hi_at = layout.high_bits_offset();
    for (r, b) in rows.iter().enumerate() {
        match layout.quant_bits() {
            4..=6 => {
                for j in 0..16 {
                    dst[qs_at + 16 * r + j] = ((b.q[j] & 0xF) | ((b.q[j + 16] & 0xF) << 4)) as u8;
                }
                if layout.quant_bits() == 5 {
                    for j in 0..16 {
                        let (lo, hi) = ((b.q[j] >> 4) & 1, (b.q[j + 16] >> 4) & 1);
                        let bits = (lo | (hi << 1)) << (2 * r);
                        dst[hi_at + j] = if r == 0 { bits } else { dst[hi_at + j] as i32 | bits } as u8;
                    }
                }
                if layout.quant_bits() == 6 {
                    for j in 0..8 {
                        dst[hi_at + 8 * r + j] = (0..4).map(|i| (((b.q[j + 8 * i] >> 4) & 3) << (2 * i)) as u8).sum();
                    }
                }
            }
            _ => {
                for j in 0..BLOCK {
                    dst[qs_at + 32 * r + j] = b.q[j] as i8 as u8;
                }
            }
        }
    }
}
