//! The tokenizer stored in GGUF metadata, rebuilt as a `tokenizers::Tokenizer` so that
//! encoding matches llama.cpp token for token.
//!
//! Two vocabulary kinds exist in our models:
//! - `gpt2`: byte-level BPE (tokens + merges), with a pre-tokenizer regex chosen by
//!   `tokenizer.ggml.pre` exactly as llama.cpp chooses it;
//! - `llama`: SentencePiece-style BPE (tokens + scores), spaces written as `▁`, unknown
//!   characters falling back to `<0xXX>` byte tokens. llama.cpp merges the adjacent pair
//!   whose concatenation is the highest-scoring token; we express the same thing as BPE
//!   merges ranked by the score of their result.
//!
//! Control, user-defined and unknown tokens are matched in raw text before anything else
//! (llama.cpp's "special token partition"), so "<|im_start|>" encodes to its single id.
//! Decoding does not go through `tokenizers`: every token's bytes are precomputed, which
//! also gives UTF-8 safe incremental decoding for streams.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::quantized::gguf_file::{Content, Value};
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::Replace;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior};

use super::FimTokens;

/// GGUF `tokenizer.ggml.token_type` values (llama.cpp's `llama_token_type`).
mod token_type {
    pub const NORMAL: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const CONTROL: i32 = 3;
    pub const USER_DEFINED: i32 = 4;
    pub const BYTE: i32 = 6;
}

/// Token texts llama.cpp treats as "end of generation" when present.
const END_OF_GENERATION_TEXTS: &[&str] = &["<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|eom_id|>", "<EOT>", "_<EOT>"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VocabKind {
    /// Byte-level BPE (GPT-2 family: SmolLM2, Qwen2).
    ByteLevel,
    /// SentencePiece-style BPE with byte fallback (llama/gemma family).
    SentencePiece,
}

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// The bytes each token id stands for when decoded.
    pieces: Arc<Vec<Vec<u8>>>,
    bos: Option<u32>,
    eos: Option<u32>,
    add_bos: bool,
    stop_tokens: Vec<u32>,
    fim: Option<FimTokens>,
    /// Control and unknown tokens: markers, never text (constrained decoding keeps them out).
    control: Vec<u32>,
}

impl Tokenizer {
    /// Builds the tokenizer from the `tokenizer.ggml.*` metadata of a GGUF file.
    pub fn from_gguf(content: &Content) -> Result<Self> {
        let md = &content.metadata;
        let model = meta_str(md, "tokenizer.ggml.model").context("GGUF has no tokenizer.ggml.model")?;
        let kind = match model.as_str() {
            "gpt2" => VocabKind::ByteLevel,
            "llama" => VocabKind::SentencePiece,
            other => bail!("unsupported tokenizer model {other:?}"),
        };
        let tokens = meta_strings(md, "tokenizer.ggml.tokens")?;
        let types = match md.get("tokenizer.ggml.token_type") {
            Some(v) => v.to_vec()?.iter().map(|t| t.to_i32()).collect::<candle_core::Result<Vec<_>>>()?,
            None => vec![token_type::NORMAL; tokens.len()],
        };
        if types.len() != tokens.len() {
            bail!("tokenizer.ggml.token_type has {} entries for {} tokens", types.len(), tokens.len());
        }
        let vocab: HashMap<String, u32> = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();

        let mut inner = match kind {
            VocabKind::ByteLevel => {
                let merges = meta_strings(md, "tokenizer.ggml.merges")?;
                let pre = meta_str(md, "tokenizer.ggml.pre").unwrap_or_else(|| "default".into());
                byte_level_tokenizer(vocab.clone(), &merges, &pre)?
            }
            VocabKind::SentencePiece => {
                let scores = match md.get("tokenizer.ggml.scores") {
                    Some(v) => v.to_vec()?.iter().map(|s| s.to_f32()).collect::<candle_core::Result<Vec<_>>>()?,
                    None => vec![0.0; tokens.len()],
                };
                if meta_bool(md, "tokenizer.ggml.add_space_prefix").unwrap_or(true) {
                    // llama.cpp prepends a space to the first text fragment; our models don't ask for it.
                    bail!("SentencePiece vocabularies with add_space_prefix are not supported");
                }
                sentencepiece_tokenizer(vocab.clone(), &tokens, &scores)?
            }
        };

        // Tokens llama.cpp finds in raw text before splitting: control, user-defined, unknown.
        let specials: Vec<AddedToken> = tokens
            .iter()
            .zip(&types)
            .filter(|(text, ty)| !text.is_empty() && matches!(**ty, token_type::CONTROL | token_type::USER_DEFINED | token_type::UNKNOWN))
            .map(|(text, ty)| AddedToken::from(text.clone(), *ty != token_type::USER_DEFINED).normalized(false))
            .collect();
        inner.add_special_tokens(&specials);

        let pieces: Vec<Vec<u8>> = tokens.iter().zip(&types).map(|(text, ty)| token_bytes(kind, text, *ty)).collect();

        let id_of = |key: &str| meta_u32(md, key).filter(|&id| (id as usize) < tokens.len());
        let bos = id_of("tokenizer.ggml.bos_token_id");
        let eos = id_of("tokenizer.ggml.eos_token_id");
        let add_bos = meta_bool(md, "tokenizer.ggml.add_bos_token").unwrap_or(kind == VocabKind::SentencePiece);
        let special_by_text = |text: &str| vocab.get(text).copied().filter(|&id| matches!(types[id as usize], token_type::CONTROL | token_type::USER_DEFINED));

        let fim = match (
            id_of("tokenizer.ggml.fim_pre_token_id").or_else(|| special_by_text("<|fim_prefix|>")),
            id_of("tokenizer.ggml.fim_suf_token_id").or_else(|| special_by_text("<|fim_suffix|>")),
            id_of("tokenizer.ggml.fim_mid_token_id").or_else(|| special_by_text("<|fim_middle|>")),
        ) {
            (Some(prefix), Some(suffix), Some(middle)) => Some(FimTokens { prefix, suffix, middle }),
            _ => None,
        };

        // llama.cpp's end-of-generation set: eos, eot, eom, FIM pad/repo/file-separator
        // tokens and every token whose text is a known end marker.
        let mut stop_tokens: Vec<u32> =
            ["tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"].iter().filter_map(|k| id_of(k)).collect();
        if fim.is_some() {
            stop_tokens.extend(["<|fim_pad|>", "<|repo_name|>", "<|file_sep|>"].iter().filter_map(|t| special_by_text(t)));
        }
        stop_tokens.extend(END_OF_GENERATION_TEXTS.iter().filter_map(|t| special_by_text(t)));
        stop_tokens.sort_unstable();
        stop_tokens.dedup();

        let control = (0..types.len() as u32).filter(|&id| matches!(types[id as usize], token_type::CONTROL | token_type::UNKNOWN)).collect();

        Ok(Self { inner, pieces: Arc::new(pieces), bos, eos, add_bos, stop_tokens, fim, control })
    }

    pub fn vocab_size(&self) -> usize {
        self.pieces.len()
    }
    pub fn bos(&self) -> Option<u32> {
        self.bos
    }
    pub fn eos(&self) -> Option<u32> {
        self.eos
    }
    /// Whether the model wants BOS in front of a prompt.
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }
    pub fn stop_tokens(&self) -> &[u32] {
        &self.stop_tokens
    }
    pub fn fim(&self) -> Option<FimTokens> {
        self.fim
    }
    /// Ids of control and unknown tokens, ascending.
    pub fn control_tokens(&self) -> &[u32] {
        &self.control
    }

    /// Encodes `text`; special tokens written in it map to their ids. BOS is prepended when
    /// `add_bos` is asked for *and* the model wants it (llama.cpp's `add_special`).
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>> {
        let encoding = self.inner.encode_fast(text, false).map_err(|e| anyhow!("tokenizer: {e}"))?;
        let mut ids = Vec::with_capacity(encoding.len() + 1);
        if add_bos && self.add_bos {
            ids.extend(self.bos);
        }
        ids.extend_from_slice(encoding.get_ids());
        Ok(ids)
    }

    /// Decodes ids to text; control tokens are rendered as their text, invalid UTF-8 lossily.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let mut bytes = Vec::new();
        for &id in ids {
            bytes.extend_from_slice(self.piece(id)?);
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// The text of one token as OpenAI shows it in logprobs. A token whose bytes are not
    /// valid UTF-8 on their own (part of a multi-byte character) is written as OpenAI
    /// writes it: `bytes:\xe2\x80`.
    pub fn token_text(&self, id: u32) -> String {
        let Some(bytes) = self.pieces.get(id as usize) else {
            return String::new();
        };
        match std::str::from_utf8(bytes) {
            Ok(s) => s.to_owned(),
            Err(_) => {
                let mut out = String::from("bytes:");
                for b in bytes {
                    out.push_str(&format!("\\x{b:02x}"));
                }
                out
            }
        }
    }

    /// The raw bytes of one token.
    pub fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        self.pieces.get(id as usize).map(Vec::as_slice)
    }

    pub fn incremental(&self) -> IncrementalDecoder {
        IncrementalDecoder { pieces: self.pieces.clone(), pending: Vec::new() }
    }

    fn piece(&self, id: u32) -> Result<&[u8]> {
        self.pieces.get(id as usize).map(Vec::as_slice).ok_or_else(|| anyhow!("token id {id} is outside the vocabulary"))
    }
}

/// Turns a stream of token ids into text, holding back bytes of a character that is not
/// complete yet so that a multi-token emoji is never split into replacement characters.
pub struct IncrementalDecoder {
    pieces: Arc<Vec<Vec<u8>>>,
    pending: Vec<u8>,
}

impl IncrementalDecoder {
    /// Adds one token; returns the text completed by it (possibly empty).
    pub fn push(&mut self, id: u32) -> String {
        if let Some(bytes) = self.pieces.get(id as usize) {
            self.pending.extend_from_slice(bytes);
        }
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // SAFETY-free: the prefix was just validated.
                    out.push_str(std::str::from_utf8(&self.pending[..valid]).unwrap_or_default());
                    match e.error_len() {
                        // Incomplete character at the end: wait for the next token.
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                        // Bytes that can never become valid: replace them and go on.
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
    }

    /// Flushes what is left at the end of the stream (an incomplete character, lossily).
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}

/// Pre-tokenizer regexes per `tokenizer.ggml.pre`, applied one after another, as in
/// llama.cpp's `llm_tokenizer_bpe`.
fn pre_tokenizer_regexes(pre: &str) -> Vec<&'static str> {
    const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
    match pre {
        "qwen2" | "deepseek-r1-qwen" => {
            vec![r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"]
        }
        "llama3" | "llama-bpe" | "llama-v3" | "falcon3" | "pixtral" => vec![
            r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        ],
        "starcoder" | "refact" | "command-r" | "smollm" | "codeshell" | "exaone" | "minerva-7b" => {
            vec![r"\p{N}", GPT2]
        }
        "gpt-2" | "mpt" | "olmo" | "jais" | "trillion" => vec![GPT2],
        _ => vec![r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"],
    }
}

fn byte_level_tokenizer(vocab: HashMap<String, u32>, merges: &[String], pre: &str) -> Result<tokenizers::Tokenizer> {
    let merges: Vec<(String, String)> = merges
        .iter()
        .filter_map(|m| m.split_once(' '))
        .filter(|(a, b)| vocab.contains_key(*a) && vocab.contains_key(*b) && vocab.contains_key(&format!("{a}{b}")))
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect();
    let bpe = BPE::builder().vocab_and_merges(vocab.into_iter().collect::<Vocab>(), merges).build().map_err(|e| anyhow!("building BPE: {e}"))?;
    let mut steps: Vec<PreTokenizerWrapper> = Vec::new();
    for regex in pre_tokenizer_regexes(pre) {
        let split =
            Split::new(SplitPattern::Regex(regex.to_owned()), SplitDelimiterBehavior::Isolated, false).map_err(|e| anyhow!("pre-tokenizer regex: {e}"))?;
        steps.push(split.into());
    }
    // Bytes to the GPT-2 byte alphabet; the splitting was done above.
    steps.push(ByteLevel::new(false, false, false).into());
    let mut tk = tokenizers::Tokenizer::new(bpe);
    tk.with_pre_tokenizer(Some(Sequence::new(steps)));
    Ok(tk)
}

fn sentencepiece_tokenizer(vocab: HashMap<String, u32>, tokens: &[String], scores: &[f32]) -> Result<tokenizers::Tokenizer> {
    // Every split of a token into two tokens is a merge; the higher the score of the
    // result, the earlier the merge (llama.cpp's SPM bigram queue).
    let mut ranked: Vec<(f32, u32, usize)> = Vec::new();
    for (id, text) in tokens.iter().enumerate() {
        let score = scores.get(id).copied().unwrap_or(0.0);
        for (split, _) in text.char_indices().skip(1) {
            let (a, b) = text.split_at(split);
            if vocab.contains_key(a) && vocab.contains_key(b) {
                ranked.push((score, id as u32, split));
            }
        }
    }
    ranked.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)).then(x.2.cmp(&y.2)));
    let mut seen = std::collections::HashSet::new();
    let merges: Vec<(String, String)> = ranked
        .into_iter()
        .map(|(_, id, split)| {
            let (a, b) = tokens[id as usize].split_at(split);
            (a.to_owned(), b.to_owned())
        })
        // A duplicated token text would give the same pair twice; keep the best rank.
        .filter(|pair| seen.insert(pair.clone()))
        .collect();
    let bpe =
        BPE::builder().vocab_and_merges(vocab.into_iter().collect::<Vocab>(), merges).byte_fallback(true).build().map_err(|e| anyhow!("building BPE: {e}"))?;
    let mut tk = tokenizers::Tokenizer::new(bpe);
    tk.with_normalizer(Some(Replace::new(" ", "▁").map_err(|e| anyhow!("normalizer: {e}"))?));
    Ok(tk)
}

/// The bytes a token decodes to (llama.cpp `token_to_piece` with special tokens shown).
fn token_bytes(kind: VocabKind, text: &str, ty: i32) -> Vec<u8> {
    match (kind, ty) {
        (_, token_type::CONTROL | token_type::USER_DEFINED | token_type::UNKNOWN) => text.as_bytes().to_vec(),
        (VocabKind::SentencePiece, token_type::BYTE) => parse_byte_token(text).map(|b| vec![b]).unwrap_or_default(),
        (VocabKind::SentencePiece, _) => text.replace('▁', " ").into_bytes(),
        (VocabKind::ByteLevel, _) => {
            let table = byte_level_decode_table();
            text.chars()
                .flat_map(|c| match table.get(&c) {
                    Some(&b) => vec![b],
                    None => c.to_string().into_bytes(),
                })
                .collect()
        }
    }
}

fn parse_byte_token(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    u8::from_str_radix(hex, 16).ok()
}

/// GPT-2's reversible byte → printable character mapping, inverted.
fn byte_level_decode_table() -> &'static HashMap<char, u8> {
    static TABLE: std::sync::OnceLock<HashMap<char, u8>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let printable = |b: u8| matches!(b, 33..=126 | 161..=172 | 174..=255);
        let mut next = 256u32;
        let mut table = HashMap::new();
        for b in 0..=255u8 {
            let c = if printable(b) {
                b as u32
            } else {
                next += 1;
                next - 1
            };
            if let Some(c) = char::from_u32(c) {
                table.insert(c, b);
            }
        }
        table
    })
}

fn meta_str(md: &HashMap<String, Value>, key: &str) -> Option<String> {
    md.get(key).and_then(|v| v.to_string().ok()).cloned()
}

fn meta_u32(md: &HashMap<String, Value>, key: &str) -> Option<u32> {
    let v = md.get(key)?;
    v.to_u32().ok().or_else(|| v.to_i32().ok().and_then(|i| u32::try_from(i).ok()))
}

fn meta_bool(md: &HashMap<String, Value>, key: &str) -> Option<bool> {
    md.get(key).and_then(|v| v.to_bool().ok())
}

fn meta_strings(md: &HashMap<String, Value>, key: &str) -> Result<Vec<String>> {
    let values = md.get(key).with_context(|| format!("GGUF has no {key}"))?.to_vec()?;
    values.iter().map(|v| v.to_string().cloned().map_err(|e| anyhow!("{key}: {e}"))).collect()
}
