//! CLIP's tokenizer from a diffusers `tokenizer/` folder: `tokenizer.json` when the
//! directory has one, else the BPE files (`vocab.json`, `merges.txt`) with CLIP's
//! normalisation and word split rebuilt around them.
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::replace::ReplacePattern;
use tokenizers::normalizers::{Lowercase, Replace, Sequence as NormalizerSequence, Strip, NFC};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

const BOS: &str = "<|startoftext|>";
const EOS: &str = "<|endoftext|>";
/// CLIP's word pattern: its special tokens, English contractions, letter runs, single digits, punctuation runs.
const CLIP_WORDS: &str = r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

pub struct ClipTokenizer {
    inner: Tokenizer,
    bos: u32,
    eos: u32,
    pad: u32,
    /// Sequence length the text encoder takes (77 for SD 1.x).
    pub max_len: usize,
}

fn from_bpe_files(dir: &Path) -> Result<Tokenizer> {
    let vocab = dir.join("vocab.json");
    let merges = dir.join("merges.txt");
    let bpe = BPE::from_file(&vocab.to_string_lossy(), &merges.to_string_lossy())
        .end_of_word_suffix("</w>".into())
        .unk_token(EOS.into())
        .build()
        .map_err(|e| anyhow!("reading {}: {e}", vocab.display()))?;
    let mut tokenizer = Tokenizer::new(bpe);
    let whitespace = Replace::new(ReplacePattern::Regex(r"\s+".into()), " ").map_err(|e| anyhow!("{e}"))?;
    tokenizer.with_normalizer(Some(NormalizerSequence::new(vec![NFC.into(), whitespace.into(), Strip::new(true, true).into(), Lowercase.into()])));
    let words = Split::new(SplitPattern::Regex(CLIP_WORDS.into()), SplitDelimiterBehavior::Removed, true).map_err(|e| anyhow!("{e}"))?;
    tokenizer.with_pre_tokenizer(Some(PreSequence::new(vec![
        PreTokenizerWrapper::Split(words),
        PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, false, false)),
    ])));
    Ok(tokenizer)
}

fn special_tokens_config(dir: &Path) -> (usize, Option<String>) {
    let config: serde_json::Value =
        std::fs::read_to_string(dir.join("tokenizer_config.json")).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default();
    let max_len = config["model_max_length"].as_u64().filter(|&n| n > 0 && n <= 4096).unwrap_or(77) as usize;
    let pad = match &config["pad_token"] {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o.get("content").and_then(|c| c.as_str()).map(str::to_string),
        _ => None,
    };
    (max_len, pad)
}

impl ClipTokenizer {
    pub fn load(dir: &Path) -> Result<Self> {
        let json = dir.join("tokenizer.json");
        let inner = if json.exists() { Tokenizer::from_file(&json).map_err(|e| anyhow!("reading {}: {e}", json.display()))? } else { from_bpe_files(dir)? };
        let id = |t: &str| inner.token_to_id(t).with_context(|| format!("the tokenizer in {} has no {t}", dir.display()));
        let (max_len, pad) = special_tokens_config(dir);
        let (bos, eos) = (id(BOS)?, id(EOS)?);
        let pad = match pad {
            Some(p) => id(&p)?,
            None => eos,
        };
        Ok(Self { inner, bos, eos, pad, max_len })
    }

    /// `[BOS] prompt [EOS] pad…`, truncated and padded to `max_len` as diffusers does.
    pub fn encode(&self, prompt: &str) -> Result<Vec<u32>> {
        let encoding = self.inner.encode(prompt, false).map_err(|e| anyhow!("tokenizing the prompt: {e}"))?;
        let mut ids = Vec::with_capacity(self.max_len);
        ids.push(self.bos);
        ids.extend(encoding.get_ids().iter().copied().take(self.max_len - 2));
        ids.push(self.eos);
        ids.resize(self.max_len, self.pad);
        Ok(ids)
    }
}
