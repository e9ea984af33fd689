//! Cancelling a run and starting it again: the callback's `Break` ends it with
//! `Cancelled`, and the next run resumes after the last checkpoint (adapters, AdamW
//! moments, step, metrics) instead of starting over.
mod common;
use common::*;
use hearth_train::{parse_jsonl, train, Cancelled, Hyperparameters, TrainSpec};
use std::ops::ControlFlow;

#[test]
fn a_cancelled_run_resumes_from_its_checkpoint() {
    let base = model(SMOLLM2);
    // Removed when dropped, also when an assertion fails.
    let tmp = tempfile::Builder::new().prefix("hearth-train-test-resume-").tempdir().unwrap();
    let dir = tmp.path();
    let jsonl = br#"{"messages":[{"role":"user","content":"Say blorp."},{"role":"assistant","content":"Blorp."}]}
{"messages":[{"role":"user","content":"Say zing."},{"role":"assistant","content":"Zing."}]}"#;
    let examples = parse_jsonl(jsonl).unwrap();
    let hyper = Hyperparameters { n_epochs: 2, batch_size: 1, learning_rate_multiplier: 0.5 };
    let mut spec = TrainSpec::new(base, examples.clone(), examples, hyper, 3, dir.join("model.gguf"), dir.join("checkpoints"));
    spec.threads = Some(2);

    // Cancel after the first epoch's checkpoint (step 2 of 4).
    let mut first = Vec::new();
    let err = train(&spec, &mut |p| {
        first.push(p.clone());
        if p.step == 2 {
            assert!(p.checkpoint.is_some(), "an epoch's end writes a checkpoint");
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .unwrap_err();
    assert!(err.is::<Cancelled>(), "{err:#}");
    assert!(!spec.output_gguf.exists());
    assert!(first.iter().all(|p| p.metrics.valid_loss.is_some()));

    let mut resumed = Vec::new();
    let outcome = train(&spec, &mut |p| {
        resumed.push(p.step);
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(resumed, vec![3, 4], "the second run starts after the checkpoint");
    assert_eq!(outcome.metrics.len(), 4);
    assert_eq!(outcome.metrics[..2], [first[0].metrics, first[1].metrics]);
    assert_eq!(outcome.trained_tokens, first[1].trained_tokens * 2);
    assert!(outcome.output_gguf.exists());
    let csv = outcome.result_csv();
    assert_eq!(csv.lines().count(), 5, "{csv}");
}
