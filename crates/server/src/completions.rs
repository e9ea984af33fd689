//! `POST /v1/completions` (legacy text completions, with echo, logprobs, best_of, suffix).
use crate::chat::sampling;
use crate::error::ApiError;
use crate::generate::{self, ChoiceResult, GenToken, Step};
use crate::logprobs::CompletionLogprobsBuilder;
use crate::sse::{self, Chunker};
use crate::state::{AppState, Target};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use hearth_api::completions::*;
use hearth_api::sse::frame;
use hearth_api::Usage;
use hearth_catalog::Endpoint;
use hearth_engine::text::{GenerateRequest, TextEngine, TokenLogprob};
use std::sync::Arc;

/// One prompt, tokenized.
struct PreparedPrompt {
    /// The prompt as text (what `echo` writes).
    text: String,
    ids: Vec<u32>,
    /// The first id is a BOS we added: not shown in echoed logprobs.
    hidden_bos: bool,
}

pub async fn create(State(state): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let req = CompletionRequest::parse(&crate::body::json(body)?)?;
    let target = state.target(&req.model, Endpoint::Completions)?;
    let prompts = prepare_prompts(&target.engine, &req).await?;
    for p in &prompts {
        if p.ids.len() + req.max_tokens > target.context_window {
            return Err(ApiError::context_exceeded_completion(target.context_window, p.ids.len(), req.max_tokens));
        }
    }
    // Ranking best_of candidates needs their logprobs even when the client did not ask.
    let engine_logprobs = req.logprobs.or((req.best_of > req.n).then_some(0));
    let mut requests = Vec::with_capacity(prompts.len() * req.best_of);
    for p in &prompts {
        for j in 0..req.best_of {
            requests.push(GenerateRequest {
                prompt: p.ids.clone(),
                max_tokens: req.max_tokens,
                sampling: sampling(&req.sampling, j),
                stop_tokens: vec![],
                logprobs: engine_logprobs,
                prompt_logprobs: req.echo && req.logprobs.is_some(),
                constraint: None,
            });
        }
    }
    let choices = generate::submit_all(&target.engine, requests, &req.stop)?;
    let header = Header::new(&target);
    let prompt_tokens = prompts.iter().map(|p| p.ids.len()).sum();
    if req.stream {
        // Streaming requires best_of == n (checked by the parser): choice index = stream index.
        let builders = prompts
            .iter()
            .flat_map(|p| (0..req.n).map(move |_| CompletionLogprobsBuilder::new(if req.echo { 0 } else { p.text.chars().count() })))
            .collect();
        let chunker = CompletionChunker {
            header,
            engine: target.engine.clone(),
            prompts,
            n: req.n,
            echo: req.echo,
            logprobs: req.logprobs.is_some(),
            include_usage: req.include_usage(),
            builders,
            prompt_tokens,
            generated: 0,
        };
        return Ok(sse::response(chunker, choices));
    }
    let results = generate::collect(choices).await.map_err(ApiError::internal)?;
    Ok(Json(respond(&req, &target.engine, header, &prompts, prompt_tokens, results)).into_response())
}

async fn prepare_prompts(engine: &TextEngine, req: &CompletionRequest) -> Result<Vec<PreparedPrompt>, ApiError> {
    let info = engine.info();
    let fim = match (&req.suffix, info.fim) {
        (None, _) => None,
        (Some(suffix), Some(fim)) => Some((suffix.clone(), fim)),
        (Some(_), None) => return Err(ApiError::invalid("suffix is not supported for this model", Some("suffix"))),
    };
    let engine = engine.clone();
    let prompt = req.prompt.clone();
    tokio::task::spawn_blocking(move || {
        let info = engine.info();
        let encode = |text: &str| engine.encode(text, false).map_err(ApiError::internal);
        let (texts_and_ids, from_text): (Vec<(String, Vec<u32>)>, bool) = match prompt {
            Prompt::Texts(texts) => (texts.into_iter().map(|t| encode(&t).map(|ids| (t, ids))).collect::<Result<_, _>>()?, true),
            Prompt::Tokens(lists) => {
                let mut out = Vec::with_capacity(lists.len());
                for ids in lists {
                    if let Some(bad) = ids.iter().find(|&&id| id as usize >= info.vocab_size) {
                        return Err(ApiError::invalid(
                            format!("Invalid token id {bad} in 'prompt': this model's vocabulary has {} tokens.", info.vocab_size),
                            Some("prompt"),
                        ));
                    }
                    let text = engine.decode(&ids).map_err(ApiError::internal)?;
                    out.push((text, ids));
                }
                (out, false)
            }
        };
        let mut prepared = Vec::with_capacity(texts_and_ids.len());
        for (text, ids) in texts_and_ids {
            let p = match &fim {
                Some((suffix, fim)) => {
                    let mut all = vec![fim.prefix];
                    all.extend(ids);
                    all.push(fim.suffix);
                    all.extend(encode(suffix)?);
                    all.push(fim.middle);
                    PreparedPrompt { text, ids: all, hidden_bos: false }
                }
                None if from_text || ids.is_empty() => {
                    // Like llama.cpp: BOS when the model wants it; an empty prompt starts a new
                    // document (OpenAI reads it as <|endoftext|>).
                    let start = if info.add_bos || ids.is_empty() { info.bos.or(info.stop_tokens.first().copied()) } else { None };
                    match start {
                        Some(b) => PreparedPrompt { text, ids: std::iter::once(b).chain(ids).collect(), hidden_bos: true },
                        None => PreparedPrompt { text, ids, hidden_bos: false },
                    }
                }
                None => PreparedPrompt { text, ids, hidden_bos: false },
            };
            if p.ids.is_empty() {
                return Err(ApiError::invalid("The prompt is empty.", Some("prompt")));
            }
            prepared.push(p);
        }
        Ok(prepared)
    })
    .await
    .map_err(ApiError::internal)?
}

#[derive(Clone)]
struct Header {
    id: String,
    created: i64,
    model: String,
    system_fingerprint: String,
}

impl Header {
    fn new(target: &Target) -> Self {
        Self {
            id: generate::random_id("cmpl-"),
            created: generate::now(),
            model: target.requested.clone(),
            system_fingerprint: target.system_fingerprint.clone(),
        }
    }
    fn response(&self, choices: Vec<CompletionChoice>, usage: Option<Option<Usage>>) -> CompletionResponse {
        CompletionResponse {
            id: self.id.clone(),
            object: "text_completion".into(),
            created: self.created,
            model: self.model.clone(),
            system_fingerprint: Some(self.system_fingerprint.clone()),
            choices,
            usage,
        }
    }
}

/// Echoed prompt tokens with their logprobs (the first shown token has none, as OpenAI's).
fn prompt_logprobs(engine: &TextEngine, p: &PreparedPrompt, lps: &[Option<TokenLogprob>], builder: &mut CompletionLogprobsBuilder, out: &mut CompletionLogprobs) {
    let skip = usize::from(p.hidden_bos);
    for (k, &id) in p.ids.iter().enumerate().skip(skip) {
        let lp = if k == skip { None } else { lps.get(k).and_then(Option::as_ref) };
        builder.push(out, engine, id, lp);
    }
}

/// Mean logprob per token: how best_of ranks candidates.
fn mean_logprob(r: &ChoiceResult) -> f32 {
    let lps: Vec<f32> = r.tokens.iter().filter_map(|t| t.logprob.as_ref().map(|l| l.logprob)).collect();
    if lps.is_empty() { f32::NEG_INFINITY } else { lps.iter().sum::<f32>() / lps.len() as f32 }
}

fn respond(
    req: &CompletionRequest,
    engine: &TextEngine,
    header: Header,
    prompts: &[PreparedPrompt],
    prompt_tokens: usize,
    results: Vec<ChoiceResult>,
) -> CompletionResponse {
    let generated = results.iter().map(|r| r.generated).sum();
    let mut results = results.into_iter();
    let mut choices = Vec::with_capacity(prompts.len() * req.n);
    for p in prompts {
        let mut candidates: Vec<ChoiceResult> = results.by_ref().take(req.best_of).collect();
        if req.best_of > req.n {
            candidates.sort_by(|a, b| mean_logprob(b).total_cmp(&mean_logprob(a)));
            candidates.truncate(req.n);
        }
        for r in candidates {
            let logprobs = req.logprobs.map(|_| {
                let mut out = CompletionLogprobs::default();
                let mut builder = CompletionLogprobsBuilder::new(if req.echo { 0 } else { p.text.chars().count() });
                if req.echo {
                    prompt_logprobs(engine, p, r.prompt_logprobs.as_deref().unwrap_or(&[]), &mut builder, &mut out);
                }
                for t in &r.tokens {
                    builder.push(&mut out, engine, t.id, t.logprob.as_ref());
                }
                out
            });
            let text = if req.echo { format!("{}{}", p.text, r.text) } else { r.text };
            choices.push(CompletionChoice { text, index: choices.len(), logprobs, finish_reason: Some(r.reason.to_string()) });
        }
    }
    header.response(choices, Some(Some(Usage::new(prompt_tokens, generated))))
}

struct CompletionChunker {
    header: Header,
    engine: TextEngine,
    prompts: Vec<PreparedPrompt>,
    n: usize,
    echo: bool,
    logprobs: bool,
    include_usage: bool,
    builders: Vec<CompletionLogprobsBuilder>,
    prompt_tokens: usize,
    generated: usize,
}

impl CompletionChunker {
    fn chunk(&self, index: usize, text: String, logprobs: Option<CompletionLogprobs>, finish_reason: Option<&str>) -> String {
        let choice = CompletionChoice { text, index, logprobs, finish_reason: finish_reason.map(str::to_string) };
        frame(&self.header.response(vec![choice], self.include_usage.then_some(None)))
    }

    fn token_logprobs(&mut self, index: usize, tokens: &[&GenToken]) -> Option<CompletionLogprobs> {
        if !self.logprobs {
            return None;
        }
        let mut out = CompletionLogprobs::default();
        if let Some(builder) = self.builders.get_mut(index) {
            for t in tokens {
                builder.push(&mut out, &self.engine, t.id, t.logprob.as_ref());
            }
        }
        Some(out)
    }
}

impl Chunker for CompletionChunker {
    fn start(&mut self) -> Vec<String> {
        if !self.echo || self.logprobs {
            return vec![]; // with logprobs the echo goes out with the prompt logprobs
        }
        (0..self.prompts.len() * self.n).map(|i| self.chunk(i, self.prompts[i / self.n].text.clone(), None, None)).collect()
    }

    fn step(&mut self, index: usize, step: Step) -> Vec<String> {
        match step {
            Step::Failed(_) => vec![],
            Step::Prompt(lps) => {
                if !self.echo {
                    return vec![];
                }
                let Some(p) = self.prompts.get(index / self.n.max(1)) else { return vec![] };
                let mut out = CompletionLogprobs::default();
                if let Some(builder) = self.builders.get_mut(index) {
                    prompt_logprobs(&self.engine, p, &lps, builder, &mut out);
                }
                let text = p.text.clone();
                vec![self.chunk(index, text, Some(out), None)]
            }
            Step::Text { text, token } => {
                self.generated += 1;
                if text.is_empty() && !self.logprobs {
                    return vec![];
                }
                let lps = self.token_logprobs(index, &[&token]);
                vec![self.chunk(index, text, lps, None)]
            }
            Step::Done { text, last, reason } => {
                let mut frames = Vec::new();
                let shown: Vec<&GenToken> = last.iter().filter(|(_, shown)| *shown).map(|(t, _)| t).collect();
                if !text.is_empty() || !shown.is_empty() && self.logprobs {
                    let lps = self.token_logprobs(index, &shown);
                    frames.push(self.chunk(index, text, lps, None));
                }
                if last.is_some() {
                    self.generated += 1;
                }
                let lps = self.logprobs.then(CompletionLogprobs::default);
                frames.push(self.chunk(index, String::new(), lps, Some(reason)));
                frames
            }
        }
    }

    fn end(&mut self) -> Vec<String> {
        if !self.include_usage {
            return vec![];
        }
        vec![frame(&self.header.response(vec![], Some(Some(Usage::new(self.prompt_tokens, self.generated)))))]
    }
}
