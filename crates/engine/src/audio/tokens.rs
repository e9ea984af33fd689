//! Whisper's vocabulary: BPE text tokens from tokenizer.json, then special
//! tokens (found by name), then 1501 timestamp tokens `<|0.00|>`…`<|30.00|>`
//! that follow `<|notimestamps|>` and are not in tokenizer.json.
use anyhow::{anyhow, Context, Result};
use std::path::Path;

pub struct WhisperTokenizer {
    inner: tokenizers::Tokenizer,
    pub eot: u32,
    pub sot: u32,
    pub sot_prev: u32,
    pub sot_lm: u32,
    pub no_speech: u32,
    pub no_timestamps: u32,
    pub translate: u32,
    pub transcribe: u32,
    /// First timestamp token (`<|0.00|>`); each next one is +0.02 s.
    pub timestamp_begin: u32,
    /// `(code, token)` for every language token, in vocabulary order (multilingual models only).
    pub languages: Vec<(String, u32)>,
}

impl WhisperTokenizer {
    pub fn load(path: &Path, vocab_size: usize) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| anyhow!("reading {}: {e}", path.display()))?;
        let id = |name: &str| inner.token_to_id(name).with_context(|| format!("the tokenizer has no `{name}`"));
        let no_timestamps = id("<|notimestamps|>")?;
        let sot = id("<|startoftranscript|>")?;
        let no_speech = id("<|nospeech|>").or_else(|_| id("<|nocaptions|>"))?;
        // Language tokens sit between <|startoftranscript|> and <|translate|>.
        // English-only models have a 51864-token vocabulary (Whisper's own test).
        let translate = id("<|translate|>")?;
        let multilingual = vocab_size >= 51865;
        let languages = if multilingual {
            (sot + 1..translate)
                .filter_map(|t| inner.id_to_token(t))
                .filter_map(|s| Some((s.strip_prefix("<|")?.strip_suffix("|>")?.to_string(), inner.token_to_id(&s)?)))
                .collect()
        } else {
            Vec::new()
        };
        Ok(Self {
            eot: id("<|endoftext|>")?,
            sot,
            sot_prev: id("<|startofprev|>")?,
            sot_lm: id("<|startoflm|>")?,
            no_speech,
            no_timestamps,
            translate,
            transcribe: id("<|transcribe|>")?,
            timestamp_begin: no_timestamps + 1,
            languages,
            inner,
        })
    }

    pub fn multilingual(&self) -> bool {
        !self.languages.is_empty()
    }

    pub fn language_token(&self, code: &str) -> Option<u32> {
        self.languages.iter().find(|(c, _)| c == code).map(|(_, t)| *t)
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, false).map_err(|e| anyhow!("tokenizing: {e}"))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of the text tokens among `tokens` (special and timestamp tokens dropped).
    pub fn decode(&self, tokens: &[u32]) -> Result<String> {
        let text: Vec<u32> = tokens.iter().copied().filter(|&t| t < self.eot).collect();
        self.inner.decode(&text, true).map_err(|e| anyhow!("detokenizing: {e}"))
    }
}
