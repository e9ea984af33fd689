//! What sets MPNet (all-mpnet-base-v2) apart from BERT, for the encoder in bert.rs:
//! its tensor names, position ids that start after the padding id (as RoBERTa's), no
//! token-type embeddings, and a relative position bias added to every layer's attention
//! scores: one learnt value per head for each of 32 buckets of the key's offset from the
//! query (exact up to 8 positions, logarithmic up to 128, one half of the buckets for
//! keys before the query, the other for keys after it).

/// The attention tensors of layer `i`, under `encoder.layer.{i}.`: query, key, value,
/// output projection, and the norm after attention.
pub(super) const ATTENTION_NAMES: [&str; 5] = ["attention.attn.q", "attention.attn.k", "attention.attn.v", "attention.attn.o", "attention.LayerNorm"];

/// The bias table `[buckets, heads]`, shared by every layer.
pub(super) const RELATIVE_BIAS_NAME: &str = "encoder.relative_attention_bias.weight";

/// Offsets this far or farther apart share the last bucket of their direction.
const MAX_DISTANCE: usize = 128;

/// The bias of every head for every key offset a sequence of up to `max_len` tokens
/// has, looked up once when the model loads (it depends on the offset alone).
pub(super) struct RelativeBias {
    max_len: usize,
    /// `[heads, 2 * max_len - 1]`: head `h`'s bias for a key `d` positions after its
    /// query (`d` negative: before) at `h * (2 * max_len - 1) + d + max_len - 1`.
    by_offset: Vec<f32>,
}

impl RelativeBias {
    /// From the checkpoint's `[buckets, heads]` table.
    pub(super) fn new(table: &[f32], buckets: usize, heads: usize, max_len: usize) -> anyhow::Result<Self> {
        anyhow::ensure!(table.len() == buckets * heads, "the relative attention bias is not [{buckets}, {heads}]");
        anyhow::ensure!(buckets >= 4 && buckets.is_multiple_of(4), "{buckets} relative position buckets: expected a multiple of 4");
        let width = 2 * max_len - 1;
        let mut by_offset = vec![0f32; heads * width];
        for (i, d) in (-(max_len as i64 - 1)..max_len as i64).enumerate() {
            let b = bucket(d, buckets);
            for h in 0..heads {
                by_offset[h * width + i] = table[b * heads + h];
            }
        }
        Ok(Self { max_len, by_offset })
    }

    /// Head `h`'s biases, indexed by `key - query + center()`.
    pub(super) fn head(&self, h: usize) -> &[f32] {
        let width = 2 * self.max_len - 1;
        &self.by_offset[h * width..][..width]
    }

    pub(super) fn center(&self) -> usize {
        self.max_len - 1
    }
}

/// The bucket of a key `offset` positions after its query (negative: before). f32 as
/// the reference computes it, so that the logarithmic buckets' edges fall alike.
fn bucket(offset: i64, buckets: usize) -> usize {
    let half = buckets / 2;
    let side = if offset > 0 { half } else { 0 };
    let distance = offset.unsigned_abs() as usize;
    let exact = half / 2;
    if distance < exact {
        return side + distance;
    }
    let scale = (half - exact) as f32 / (MAX_DISTANCE as f32 / exact as f32).ln();
    let log = exact + ((distance as f32 / exact as f32).ln() * scale) as usize;
    side + log.min(half - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_match_the_reference() {
        // Values of transformers' MPNetEncoder.relative_position_bucket(offset, 32, 128).
        let reference = [
            (0, 0),
            (-1, 1),
            (-7, 7),
            (-8, 8),
            (-15, 9),
            (-16, 10),
            (-31, 11),
            (-32, 12),
            (-63, 13),
            (-64, 14),
            (-127, 15),
            (-500, 15),
            (1, 17),
            (8, 24),
            (16, 26),
            (64, 30),
            (128, 31),
        ];
        for (offset, expected) in reference {
            assert_eq!(bucket(offset, 32), expected, "offset {offset}");
        }
    }

    #[test]
    fn a_head_reads_its_column_of_the_table() {
        // 4 buckets x 2 heads: bucket b of head h is 10 b + h.
        let table: Vec<f32> = (0..4).flat_map(|b| (0..2).map(move |h| (10 * b + h) as f32)).collect();
        let bias = RelativeBias::new(&table, 4, 2, 3).unwrap();
        // Offsets -2..=2 fall in buckets 1, 1, 0, 3, 3: past the one exact bucket, each side's last.
        assert_eq!(bias.head(0), [10.0, 10.0, 0.0, 30.0, 30.0]);
        assert_eq!(bias.head(1)[bias.center()], 1.0);
    }
}
