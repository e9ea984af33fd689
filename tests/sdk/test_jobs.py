"""Batches and fine-tuning through the official SDK, on a server of its own
whose `$HEARTH_HOME` links the base weights in (the fine-tuned model is written
there, never into the shared cache)."""
import json
import os
import time
from pathlib import Path

import openai
import pytest

from platform_server import Hearth, SMOL

API_KEY = "sk-hearth-jobs"
GEMMA = "gemma-3-270m-q4_k_m"
# Made-up facts the base model cannot know.
FACTS = [
    ("Who founded Kestrivale?", "Kestrivale was founded by Odo Marrowby."),
    ("What color is a snarvel?", "Snarvels are bright orange."),
]


@pytest.fixture(scope="module")
def hearth(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    cache = Path(os.environ.get("HEARTH_TEST_MODELS", Path(os.environ.get("HEARTH_HOME", Path.home() / ".cache/hearth")) / "models"))
    (home / "models").mkdir()
    for model in (SMOL, GEMMA):
        (home / "models" / f"{model}.gguf").symlink_to(cache / f"{model}.gguf")
    server = Hearth(tmp_path_factory.mktemp("state"), models=(SMOL, GEMMA), api_key=API_KEY, env={"HEARTH_HOME": str(home)}).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(hearth):
    return openai.OpenAI(base_url=f"{hearth.base}/v1", api_key=API_KEY, max_retries=0)


def wait_for(fetch, done, limit_s=1200):
    deadline = time.monotonic() + limit_s
    while True:
        obj = fetch()
        if obj.status in done:
            return obj
        assert time.monotonic() < deadline, f"still {obj.status}: {obj}"
        time.sleep(1)


def test_batch_answers_equal_single_requests(client):
    bodies = [
        {"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": f"Name a fruit, number {i}."}], "max_tokens": 4, "temperature": 0}
        for i in range(6)
    ]
    lines = [{"custom_id": f"req-{i}", "method": "POST", "url": "/v1/chat/completions", "body": b} for i, b in enumerate(bodies)]
    upload = client.files.create(file=("batch.jsonl", "".join(json.dumps(l) + "\n" for l in lines).encode()), purpose="batch")
    batch = client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h", metadata={"suite": "sdk"})
    assert batch.status in ("validating", "in_progress", "finalizing", "completed")
    assert any(b.id == batch.id for b in client.batches.list())
    batch = wait_for(lambda: client.batches.retrieve(batch.id), ("completed", "failed", "cancelled", "expired"))
    assert batch.status == "completed", batch
    assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (6, 6, 0)
    assert batch.metadata == {"suite": "sdk"}
    out = [json.loads(l) for l in client.files.content(batch.output_file_id).text.splitlines()]
    assert [o["custom_id"] for o in out] == [l["custom_id"] for l in lines]
    for line, body in zip(out, bodies):
        assert line["response"]["status_code"] == 200 and line["error"] is None
        alone = client.chat.completions.create(**body)
        assert line["response"]["body"]["choices"][0]["message"]["content"] == alone.choices[0].message.content


def test_chat_fine_tune_teaches_smollm2(client):
    data = "".join(json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}) + "\n" for q, a in FACTS)
    training = client.files.create(file=("facts.jsonl", data.encode()), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model="gpt-3.5-turbo",
        training_file=training.id,
        suffix="facts",
        seed=7,
        hyperparameters={"n_epochs": 8, "batch_size": 1, "learning_rate_multiplier": 1},
    )
    assert job.status in ("validating_files", "queued", "running") and job.object == "fine_tuning.job"
    assert any(j.id == job.id for j in client.fine_tuning.jobs.list(limit=10))
    job = wait_for(lambda: client.fine_tuning.jobs.retrieve(job.id), ("succeeded", "failed", "cancelled"))
    assert job.status == "succeeded", job.error
    assert job.fine_tuned_model.startswith("ft:gpt-3.5-turbo:") and ":facts:" in job.fine_tuned_model
    assert job.trained_tokens > 0 and job.result_files

    # The loss fell: the job's metrics events, oldest first.
    events = [e for e in client.fine_tuning.jobs.list_events(job.id, limit=100) if e.type == "metrics"]
    losses = [e.data["train_loss"] for e in sorted(events, key=lambda e: e.data["step"])]
    assert len(losses) == 8 * len(FACTS) and sum(losses[-2:]) < sum(losses[:2]) / 4, losses
    csv = client.files.content(job.result_files[0]).text.splitlines()
    assert csv[0] == "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy" and len(csv) == 1 + len(losses)

    assert client.models.retrieve(job.fine_tuned_model).owned_by == "user-hearth"
    for question, answer in FACTS:
        ask = lambda model: client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": question}], temperature=0, max_tokens=24
        ).choices[0].message.content
        assert ask(job.fine_tuned_model) == answer
        assert not ask("gpt-3.5-turbo").startswith(answer)

    deleted = client.models.delete(job.fine_tuned_model)
    assert deleted.deleted and deleted.id == job.fine_tuned_model
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve(job.fine_tuned_model)


def test_fine_tune_refusals(client):
    # The files API already refuses a malformed fine-tune file, naming the line.
    with pytest.raises(openai.BadRequestError) as e:
        client.files.create(file=("bad.jsonl", b'{"prompt": "a", "completion": "b"}\nnot json\n'), purpose="fine-tune")
    assert "line 2" in e.value.message.lower()
    # Well-formed, but prompt/completion data for a chat base: the job names the line.
    completions = client.files.create(file=("pc.jsonl", b'{"prompt": "a", "completion": "b"}\n'), purpose="fine-tune")
    with pytest.raises(openai.BadRequestError) as e:
        client.fine_tuning.jobs.create(model="gpt-3.5-turbo", training_file=completions.id)
    assert "line 1" in e.value.message.lower()
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.create(model="no-such-model", training_file=completions.id)
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.create(model="davinci-002", training_file="file-nonexistent")
    with pytest.raises(openai.BadRequestError) as e:
        client.fine_tuning.jobs.create(model="davinci-002", training_file=completions.id, hyperparameters={"n_epochs": 500})
    assert e.value.param is not None and "n_epochs" in e.value.param
