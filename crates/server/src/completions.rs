//! `POST /v1/completions` (legacy text completions, with echo, logprobs, best_of, suffix).
use crate::error::ApiError;
use crate::generate::{self, ChoiceResult, Header};
use crate::logprobs::CompletionLogprobsBuilder;
use crate::sse::{self, Chunker};
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use hearth_api::completions::*;
use hearth_api::sse::frame;
use hearth_api::Usage;
use hearth_catalog::Endpoint;
use hearth_engine::text::{completion_budget, CompletionPrompt, GeneratedToken, PreparedPrompt, PromptToken, TextChunk, TextRequest};
use std::sync::Arc;

pub async fn create(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let req = CompletionRequest::parse(&crate::body::json(&headers, body)?)?;
    let target = state.text_target(&req.model, Endpoint::Completions)?;
    let prompts: Vec<CompletionPrompt> = match &req.prompt {
        Prompt::Texts(texts) => texts.iter().cloned().map(CompletionPrompt::Text).collect(),
        Prompt::Tokens(lists) => lists.iter().cloned().map(CompletionPrompt::Tokens).collect(),
    };
    let suffix = req.suffix.clone();
    let prompts = generate::prepare(&target.engine, move |e| e.prepare_completions(prompts, suffix.as_deref())).await?;
    for p in &prompts {
        completion_budget(target.context_window, p.ids.len(), Some(req.max_tokens)).map_err(|e| ApiError::context_exceeded(Endpoint::Completions, e))?;
    }
    // Ranking best_of candidates needs their logprobs even when the client did not ask.
    let engine_logprobs = req.logprobs.or((req.best_of > req.n).then_some(0));
    let requests = prompts
        .iter()
        .map(|p| TextRequest {
            prompt: p.clone(),
            n: req.best_of,
            max_tokens: req.max_tokens,
            sampling: generate::sampling(&req.sampling),
            stop: req.stop.clone(),
            logprobs: engine_logprobs,
            prompt_logprobs: req.echo && req.logprobs.is_some(),
            constraint: None,
        })
        .collect();
    let choices = generate::start(&target, &state.metrics, requests)?;
    let header = Header::new(&target, "cmpl-");
    let prompt_tokens = generate::prompt_tokens(&prompts);
    if req.stream {
        // Streaming requires best_of == n (checked by the parser): choice index = stream index.
        let builders =
            prompts.iter().flat_map(|p| (0..req.n).map(move |_| CompletionLogprobsBuilder::new(if req.echo { 0 } else { p.text.chars().count() }))).collect();
        let chunker = CompletionChunker {
            header,
            prompts,
            n: req.n,
            echo: req.echo,
            logprobs: req.logprobs.is_some(),
            include_usage: req.include_usage(),
            builders,
            prompt_tokens,
        };
        return Ok(sse::response(chunker, choices));
    }
    let results = generate::collect(choices).await?;
    Ok(Json(respond(&req, &header, &prompts, prompt_tokens, results)).into_response())
}

fn response(header: &Header, choices: Vec<CompletionChoice>, usage: Option<Option<Usage>>) -> CompletionResponse {
    CompletionResponse {
        id: header.id.clone(),
        object: "text_completion".into(),
        created: header.created,
        model: header.model.clone(),
        system_fingerprint: Some(header.system_fingerprint.clone()),
        choices,
        usage,
    }
}

/// Echoed prompt tokens with their logprobs.
fn prompt_logprobs(tokens: &[PromptToken], builder: &mut CompletionLogprobsBuilder, out: &mut CompletionLogprobs) {
    for t in tokens {
        builder.push(out, &t.token, t.logprob.as_ref());
    }
}

fn token_logprobs(tokens: &[GeneratedToken], builder: &mut CompletionLogprobsBuilder, out: &mut CompletionLogprobs) {
    for t in tokens {
        if let Some(lp) = &t.logprob {
            builder.push(out, &lp.token, Some(lp));
        }
    }
}

/// Mean logprob per token: how best_of ranks candidates.
fn mean_logprob(r: &ChoiceResult) -> f32 {
    let lps: Vec<f32> = r.tokens.iter().filter_map(|t| t.logprob.as_ref().map(|l| l.logprob)).collect();
    if lps.is_empty() {
        f32::NEG_INFINITY
    } else {
        lps.iter().sum::<f32>() / lps.len() as f32
    }
}

fn respond(req: &CompletionRequest, header: &Header, prompts: &[PreparedPrompt], prompt_tokens: usize, results: Vec<ChoiceResult>) -> CompletionResponse {
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
                    prompt_logprobs(r.prompt_tokens.as_deref().unwrap_or(&[]), &mut builder, &mut out);
                }
                token_logprobs(&r.tokens, &mut builder, &mut out);
                out
            });
            let text = if req.echo { format!("{}{}", p.text, r.text) } else { r.text };
            choices.push(CompletionChoice { text, index: choices.len(), logprobs, finish_reason: Some(r.reason.to_string()) });
        }
    }
    response(header, choices, Some(Some(Usage::new(prompt_tokens, generated))))
}

struct CompletionChunker {
    header: Header,
    prompts: Vec<PreparedPrompt>,
    n: usize,
    echo: bool,
    logprobs: bool,
    include_usage: bool,
    builders: Vec<CompletionLogprobsBuilder>,
    prompt_tokens: usize,
}

impl CompletionChunker {
    fn chunk(&self, index: usize, text: String, logprobs: Option<CompletionLogprobs>, finish_reason: Option<&str>) -> String {
        let choice = CompletionChoice { text, index, logprobs, finish_reason: finish_reason.map(str::to_string) };
        frame(&response(&self.header, vec![choice], self.include_usage.then_some(None)))
    }
}

impl Chunker for CompletionChunker {
    fn start(&mut self) -> Vec<String> {
        if !self.echo || self.logprobs {
            return vec![]; // with logprobs the echo goes out with the prompt logprobs
        }
        (0..self.prompts.len() * self.n).map(|i| self.chunk(i, self.prompts[i / self.n].text.clone(), None, None)).collect()
    }

    fn prompt(&mut self, index: usize, tokens: Vec<PromptToken>) -> Vec<String> {
        if !self.echo {
            return vec![];
        }
        let Some(p) = self.prompts.get(index / self.n.max(1)) else { return vec![] };
        let text = p.text.clone();
        let mut out = CompletionLogprobs::default();
        if let Some(builder) = self.builders.get_mut(index) {
            prompt_logprobs(&tokens, builder, &mut out);
        }
        vec![self.chunk(index, text, Some(out), None)]
    }

    fn text(&mut self, index: usize, chunk: TextChunk) -> Vec<String> {
        let mut frames = Vec::new();
        // Text held back for a possible stop string sends nothing, unless its token's logprob is asked.
        if !chunk.text.is_empty() || !chunk.tokens.is_empty() && self.logprobs {
            let lps = self.logprobs.then(|| {
                let mut out = CompletionLogprobs::default();
                if let Some(builder) = self.builders.get_mut(index) {
                    token_logprobs(&chunk.tokens, builder, &mut out);
                }
                out
            });
            frames.push(self.chunk(index, chunk.text, lps, None));
        }
        if let Some(reason) = chunk.finish {
            let lps = self.logprobs.then(CompletionLogprobs::default);
            frames.push(self.chunk(index, String::new(), lps, Some(generate::finish_reason(reason))));
        }
        frames
    }

    fn end(&mut self, generated: usize) -> Vec<String> {
        if !self.include_usage {
            return vec![];
        }
        vec![frame(&response(&self.header, vec![], Some(Some(Usage::new(self.prompt_tokens, generated)))))]
    }
}
