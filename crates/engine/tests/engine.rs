//! The scheduler end to end on the real SmolLM2-135M: determinism, continuous batching,
//! back-pressure, cancellation and limits.
mod model_support;

use model_support::collect;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use hearth_engine::text::{
    CompletionPrompt, EngineError, Event, FinishReason, GenerateRequest, Message, SamplingParams, TextEngine, TextEngineConfig, TextEngineStats, TextEvent,
    TextRequest,
};

fn load(config: TextEngineConfig) -> TextEngine {
    model_support::text_engine(model_support::SMOLLM2, config)
}

/// One engine with the default configuration, shared by the tests that don't need their own.
fn engine() -> &'static TextEngine {
    static ENGINE: OnceLock<TextEngine> = OnceLock::new();
    ENGINE.get_or_init(|| load(TextEngineConfig::default()))
}

fn chat_prompt(engine: &TextEngine, user: &str) -> Vec<u32> {
    let text = engine.render_chat(&[Message::user(user)], &[]).expect("template renders");
    engine.encode(&text, true).expect("encodes")
}

fn request(prompt: Vec<u32>, max_tokens: usize, sampling: SamplingParams) -> GenerateRequest {
    GenerateRequest { prompt, max_tokens, sampling, stop_tokens: vec![], logprobs: None, prompt_logprobs: false, constraint: None }
}

fn greedy() -> SamplingParams {
    SamplingParams { temperature: 0.0, ..Default::default() }
}

/// Bans every stop token so that generation runs to `max_tokens`.
fn no_stop(engine: &TextEngine, mut sampling: SamplingParams) -> SamplingParams {
    sampling.logit_bias = engine.info().stop_tokens.iter().map(|&id| (id, -100.0)).collect();
    sampling
}

fn run(engine: &TextEngine, req: GenerateRequest) -> (Vec<u32>, FinishReason) {
    collect(engine.submit(req).expect("accepted"))
}

#[test]
fn greedy_is_deterministic() {
    let e = engine();
    let prompt = chat_prompt(e, "What is the capital of France?");
    let started = Instant::now();
    let (a, _) = run(e, request(prompt.clone(), 24, greedy()));
    eprintln!("24 greedy tokens in {:?}: {a:?} {:?}", started.elapsed(), e.decode(&a));
    let (b, _) = run(e, request(prompt, 24, greedy()));
    assert_eq!(a, b);
    assert!(!a.is_empty());
}

#[test]
fn same_seed_same_tokens() {
    let e = engine();
    let prompt = chat_prompt(e, "Tell me a story about a dragon.");
    let sampling = |seed| no_stop(e, SamplingParams { temperature: 1.0, top_p: 0.95, seed: Some(seed), ..Default::default() });
    let (a, _) = run(e, request(prompt.clone(), 20, sampling(1234)));
    let (b, _) = run(e, request(prompt.clone(), 20, sampling(1234)));
    let (c, _) = run(e, request(prompt, 20, sampling(99)));
    assert_eq!(a, b);
    assert_ne!(a, c, "different seeds should (almost surely) differ over 20 tokens");
}

#[test]
fn max_tokens_ends_with_length() {
    let e = engine();
    let (ids, reason) = run(e, request(chat_prompt(e, "Count to one hundred."), 5, no_stop(e, greedy())));
    assert_eq!(ids.len(), 5);
    assert_eq!(reason, FinishReason::Length);
}

#[test]
fn concurrent_requests_match_solo_runs() {
    let e = load(TextEngineConfig { max_batch: 8, queue_capacity: 16 });
    let questions = [
        "What is 2 + 2?",
        "Name a color.",
        "Write a haiku about rain.",
        "What is the largest planet?",
        "Say hello in French.",
        "Give me a fruit.",
        "Why is the sky blue?",
        "List three animals.",
    ];
    let prompts: Vec<Vec<u32>> = questions.iter().map(|q| chat_prompt(&e, q)).collect();
    let solo: Vec<_> = prompts.iter().map(|p| run(&e, request(p.clone(), 16, greedy()))).collect();
    let receivers: Vec<_> = prompts.iter().map(|p| e.submit(request(p.clone(), 16, greedy())).expect("accepted")).collect();
    let together: Vec<_> = receivers.into_iter().map(collect).collect();
    for (i, (s, t)) in solo.iter().zip(&together).enumerate() {
        assert_eq!(s, t, "request {i} ({:?}) differs when batched", questions[i]);
    }
}

#[test]
fn full_queue_is_overloaded() {
    let e = load(TextEngineConfig { max_batch: 1, queue_capacity: 1 });
    let prompt = chat_prompt(&e, "Write a long essay about the sea.");
    let mut running = e.submit(request(prompt.clone(), 2000, no_stop(&e, greedy()))).expect("accepted");
    // Once it produces a token it holds the only batch slot.
    assert!(matches!(running.blocking_recv(), Some(Event::Token { .. })));
    let _queued = e.submit(request(prompt.clone(), 4, greedy())).expect("fits the queue");
    match e.submit(request(prompt, 4, greedy())) {
        Err(EngineError::Overloaded) => {}
        other => panic!("expected Overloaded, got {:?}", other.map(|_| "a receiver")),
    }
}

/// Polls `stats` until `done` holds (bounded: fails with the state last seen).
fn wait_for_stats(e: &TextEngine, what: &str, done: impl Fn(&TextEngineStats) -> bool) -> TextEngineStats {
    let mut seen = e.stats();
    for _ in 0..600 {
        if done(&seen) {
            return seen;
        }
        std::thread::sleep(Duration::from_millis(50));
        seen = e.stats();
    }
    panic!("{what}: the engine's state is still {seen:?}");
}

#[test]
fn dropping_the_receiver_frees_the_slot() {
    let e = load(TextEngineConfig { max_batch: 1, queue_capacity: 4 });
    let prompt = chat_prompt(&e, "Write a long essay about mountains.");
    // Stop tokens banned: it cannot end before its thousands of tokens.
    let mut long = e.submit(request(prompt.clone(), 8000 - prompt.len(), no_stop(&e, greedy()))).expect("accepted");
    assert!(matches!(long.blocking_recv(), Some(Event::Token { .. })));
    wait_for_stats(&e, "while it runs", |s| s.running == 1 && s.kv_cache_bytes > 0);
    let queued = e.submit(request(prompt.clone(), 8000 - prompt.len(), no_stop(&e, greedy()))).expect("fits the queue");
    assert_eq!(e.stats().queued, 1, "the second waits for the only slot");
    // Both clients hang up: the engine holds nothing once it notices.
    drop(long);
    drop(queued);
    wait_for_stats(&e, "after both receivers were dropped", |s| s.running == 0 && s.queued == 0 && s.kv_cache_bytes == 0);
    // The freed slot serves the next request.
    let (ids, reason) = collect(e.submit(request(prompt, 4, greedy())).expect("accepted"));
    assert!(!ids.is_empty() && reason == FinishReason::Length, "{ids:?} {reason:?}");
}

#[test]
fn invalid_requests_are_refused() {
    let e = engine();
    let info = e.info();
    let invalid = |req| matches!(e.submit(req), Err(EngineError::InvalidRequest(_)));
    assert!(invalid(request(vec![], 4, greedy())));
    assert!(invalid(request(vec![info.vocab_size as u32], 4, greedy())));
    assert!(invalid(request(vec![1, 2, 3], info.context_length, greedy())));
    let mut bias = greedy();
    bias.logit_bias = vec![(u32::MAX, 1.0)];
    assert!(invalid(request(vec![1, 2, 3], 4, bias)));
}

#[test]
fn logprobs_and_prompt_logprobs() {
    let e = engine();
    let prompt = e.encode("The capital of France is", false).unwrap();
    let mut req = request(prompt.clone(), 3, no_stop(e, greedy()));
    req.logprobs = Some(3);
    req.prompt_logprobs = true;
    let mut rx = e.submit(req).expect("accepted");
    match rx.blocking_recv() {
        Some(Event::PromptLogprobs(lps)) => {
            assert_eq!(lps.len(), prompt.len());
            assert!(lps[0].is_none());
            for lp in &lps[1..] {
                let lp = lp.as_ref().expect("logprob for every prompt token after the first");
                assert!(lp.logprob <= 0.0);
                assert_eq!(lp.top.len(), 3);
            }
        }
        other => panic!("expected prompt logprobs first, got {other:?}"),
    }
    let mut tokens = 0;
    while let Some(event) = rx.blocking_recv() {
        match event {
            Event::Token { id, logprob } => {
                let lp = logprob.expect("logprobs asked for");
                // Greedy: the chosen token is the most likely one.
                assert_eq!(lp.top[0].0, id);
                assert!((lp.top[0].1 - lp.logprob).abs() < 1e-5);
                tokens += 1;
            }
            Event::Finished { reason } => {
                assert_eq!(reason, FinishReason::Length);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(tokens, 3);
}

#[test]
fn max_tokens_zero_scores_the_prompt_only() {
    let e = engine();
    let mut req = request(e.encode("Hello there", false).unwrap(), 0, greedy());
    req.prompt_logprobs = true;
    let mut rx = e.submit(req).expect("accepted");
    assert!(matches!(rx.blocking_recv(), Some(Event::PromptLogprobs(_))));
    assert!(matches!(rx.blocking_recv(), Some(Event::Finished { reason: FinishReason::Length })));
}

#[test]
fn shared_prompt_prefix_is_reused_not_prefilled() {
    let e = load(TextEngineConfig::default());
    let system = "You are a careful assistant. ".repeat(60); // a few hundred tokens
    let ask = |q: &str| {
        let text = e.render_chat(&[Message::system(system.clone()), Message::user(q)], &[]).expect("template renders");
        e.encode(&text, true).expect("encodes")
    };
    let (first, second) = (ask("Name a color."), ask("Name a fruit."));
    let shared = first.iter().zip(&second).take_while(|(a, b)| a == b).count();
    assert!(shared > 300, "the prompts share {shared} tokens");

    let reference = run(&e, request(second.clone(), 12, greedy()));
    // A fresh engine: the first request fills the prefix cache, the second reuses it.
    let e = load(TextEngineConfig::default());
    run(&e, request(first, 12, greedy()));
    assert_eq!(e.reused_prompt_tokens(), 0);
    let reused = run(&e, request(second.clone(), 12, greedy()));
    assert_eq!(e.reused_prompt_tokens() as usize, shared);
    assert_eq!(reused, reference, "reusing the cached prefix changes the output");
    // Asking for prompt logprobs needs every prompt row: no reuse then.
    let mut with_logprobs = request(second, 1, greedy());
    with_logprobs.prompt_logprobs = true;
    run(&e, with_logprobs);
    assert_eq!(e.reused_prompt_tokens() as usize, shared);
}

/// Every event of one choice, in order.
async fn events(mut stream: hearth_engine::text::TextStream) -> Vec<TextEvent> {
    let mut out = Vec::new();
    while let Some(event) = stream.next().await {
        out.push(event);
    }
    out
}

#[test]
fn candidates_share_one_scoring_of_the_prompt() {
    let e = load(TextEngineConfig::default());
    let prompt = e.prepare_completions(vec![CompletionPrompt::Text("The lighthouse keeper climbed the stairs".into())], None).unwrap().remove(0);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let ask = |n: usize| {
        let req = TextRequest {
            prompt: prompt.clone(),
            n,
            max_tokens: 4,
            sampling: SamplingParams { temperature: 1.0, seed: Some(7), ..Default::default() },
            stop: vec![],
            logprobs: Some(2),
            prompt_logprobs: true,
            constraint: None,
        };
        let streams = e.generate(req).expect("accepted");
        rt.block_on(async {
            let tasks: Vec<_> = streams.into_iter().map(|s| tokio::spawn(events(s))).collect();
            let mut all = Vec::new();
            for t in tasks {
                all.push(t.await.unwrap());
            }
            all
        })
    };
    let before = e.stats().prompt_logprob_passes;
    let alone = ask(1);
    assert_eq!(e.stats().prompt_logprob_passes, before + 1);
    let Some(TextEvent::Prompt(expected)) = alone[0].first() else { panic!("the prompt's logprobs come first: {:?}", alone[0]) };
    assert!(expected.iter().skip(1).all(|t| t.logprob.is_some()), "{expected:?}");
    let candidates = ask(3);
    assert_eq!(e.stats().prompt_logprob_passes, before + 2, "three candidates, one scoring of their prompt");
    for choice in &candidates {
        assert_eq!(choice.first(), Some(&TextEvent::Prompt(expected.clone())), "each candidate starts with the prompt's logprobs");
        assert!(choice.iter().skip(1).all(|ev| matches!(ev, TextEvent::Text(_))), "{choice:?}");
    }
}
