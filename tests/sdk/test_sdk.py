"""The official `openai` Python SDK against a real hearth server; every body
and stream chunk is checked against OpenAI's 2023 schemas."""
import json

import httpx
import openai
import pytest

SMOL = "smollm2-135m-instruct-q4_1"
QWEN = "qwen2.5-coder-0.5b-instruct-q4_k_m"
GEMMA = "gemma-3-270m-q4_k_m"
ALIASES = [
    "gpt-3.5-turbo", "gpt-3.5-turbo-0301", "gpt-4", "gpt-4-0314", "gpt-4-32k", "gpt-4-32k-0314",
    "text-davinci-003", "text-davinci-002", "code-davinci-002", "davinci", "curie", "babbage", "ada",
]
HI = [{"role": "user", "content": "Say hello in one short sentence."}]


def sse_chunks(http, path, body):
    """POSTs a streaming request and returns its JSON chunks, checking the framing."""
    with http.stream("POST", path, json=body) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        text = r.read().decode()
    assert text.endswith("data: [DONE]\n\n"), text[-200:]
    events = [e for e in text.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events), events
    assert events[-1] == "data: [DONE]"
    return [json.loads(e[len("data: "):]) for e in events[:-1]]


# ------------------------------------------------------------------- models


def test_models_list(client, http, contract):
    ids = [m.id for m in client.models.list()]
    for want in [SMOL, QWEN, GEMMA, *ALIASES]:
        assert want in ids
    body = http.get("/v1/models").json()
    contract.validate("ListModelsResponse", body)
    for m in body["data"]:
        contract.validate("Model", m)


def test_models_retrieve(client, http, contract):
    model = client.models.retrieve("gpt-3.5-turbo")
    assert model.id == "gpt-3.5-turbo"
    assert model.object == "model"
    contract.validate("Model", http.get("/v1/models/gpt-3.5-turbo").json())


def test_models_retrieve_unknown(client):
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


# --------------------------------------------------------------------- chat


def test_chat_non_stream(client, contract):
    raw = client.chat.completions.with_raw_response.create(model="gpt-3.5-turbo", messages=HI, max_tokens=8, temperature=0)
    contract.validate("CreateChatCompletionResponse", raw.http_response.json())
    resp = raw.parse()
    assert resp.object == "chat.completion"
    assert resp.model == "gpt-3.5-turbo"
    assert resp.choices[0].message.role == "assistant"
    assert resp.choices[0].message.content
    assert resp.choices[0].finish_reason in ("stop", "length")
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens
    assert 1 <= resp.usage.completion_tokens <= 8


def test_chat_max_completion_tokens(client):
    resp = client.chat.completions.create(
        model=QWEN, messages=[{"role": "user", "content": "Write a long poem about the sea."}],
        max_completion_tokens=3, temperature=0,
    )
    assert resp.choices[0].finish_reason == "length"
    assert resp.usage.completion_tokens == 3


def test_chat_stream_sdk(client):
    stream = client.chat.completions.create(
        model="gpt-3.5-turbo", messages=HI, max_tokens=6, temperature=0, stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0] in ("stop", "length")
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    plain = client.chat.completions.create(model="gpt-3.5-turbo", messages=HI, max_tokens=6, temperature=0)
    assert text == plain.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == plain.usage.prompt_tokens


def test_chat_stream_chunks_validate(http, contract):
    body = {"model": SMOL, "messages": HI, "max_tokens": 5, "stream": True,
            "stream_options": {"include_usage": True}, "logprobs": True, "top_logprobs": 1}
    chunks = sse_chunks(http, "/v1/chat/completions", body)
    for c in chunks:
        contract.validate("CreateChatCompletionStreamResponseChunk", c)
        assert c["object"] == "chat.completion.chunk"
    assert chunks[-1]["usage"]["completion_tokens"] >= 1


def test_chat_logprobs(client, contract):
    raw = client.chat.completions.with_raw_response.create(
        model=SMOL, messages=HI, max_tokens=4, temperature=0, logprobs=True, top_logprobs=2,
    )
    contract.validate("CreateChatCompletionResponse", raw.http_response.json())
    resp = raw.parse()
    content = resp.choices[0].logprobs.content
    assert len(content) == resp.usage.completion_tokens
    for entry in content:
        assert entry.logprob <= 0
        assert len(entry.top_logprobs) == 2
    assert "".join(e.token for e in content) == resp.choices[0].message.content


def test_chat_n_and_seed(client, contract):
    kwargs = dict(model=SMOL, messages=HI, max_tokens=5, n=2, temperature=1.0, seed=11)
    raw = client.chat.completions.with_raw_response.create(**kwargs)
    contract.validate("CreateChatCompletionResponse", raw.http_response.json())
    first = raw.parse()
    assert [c.index for c in first.choices] == [0, 1]
    again = client.chat.completions.create(**kwargs)
    assert [c.message.content for c in again.choices] == [c.message.content for c in first.choices]


# -------------------------------------------------------------- completions


def test_completions_non_stream(client, contract):
    raw = client.completions.with_raw_response.create(model="text-davinci-003", prompt="def hello():", max_tokens=8, temperature=0)
    contract.validate("CreateCompletionResponse", raw.http_response.json())
    resp = raw.parse()
    assert resp.object == "text_completion"
    assert resp.model == "text-davinci-003"
    assert resp.choices[0].text
    assert resp.usage.completion_tokens <= 8


def test_completions_list_prompt(client, contract):
    raw = client.completions.with_raw_response.create(model="davinci", prompt=["The sky is", "Water is"], max_tokens=2, temperature=0)
    contract.validate("CreateCompletionResponse", raw.http_response.json())
    assert [c.index for c in raw.parse().choices] == [0, 1]


def test_completions_token_prompt(client):
    resp = client.completions.create(model=SMOL, prompt=[504, 3458, 282], max_tokens=2, temperature=0)
    assert resp.usage.prompt_tokens == 3


def test_completions_stream(client, http, contract):
    pieces = list(client.completions.create(model="ada", prompt="Once upon a time", max_tokens=6, temperature=0, stream=True))
    text = "".join(p.choices[0].text for p in pieces if p.choices)
    plain = client.completions.create(model="ada", prompt="Once upon a time", max_tokens=6, temperature=0)
    assert text == plain.choices[0].text
    body = {"model": "ada", "prompt": "Once upon a time", "max_tokens": 4, "stream": True,
            "stream_options": {"include_usage": True}}
    chunks = sse_chunks(http, "/v1/completions", body)
    for c in chunks:
        contract.validate("CreateCompletionResponseChunk", c)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] >= 1


def test_completions_echo_logprobs(client, contract):
    prompt = "Hello, my name is"
    raw = client.completions.with_raw_response.create(model=SMOL, prompt=prompt, max_tokens=3, temperature=0, echo=True, logprobs=2)
    contract.validate("CreateCompletionResponseEcho", raw.http_response.json())
    choice = raw.parse().choices[0]
    assert choice.text.startswith(prompt)
    lp = choice.logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.text_offset) == len(lp.top_logprobs)
    assert "".join(lp.tokens) == choice.text
    assert lp.token_logprobs[0] is None


def test_completions_suffix_code_davinci(client, contract):
    # The only sensible middle is the function's name, which only the suffix tells.
    raw = client.completions.with_raw_response.create(
        model="code-davinci-002", prompt="def ", suffix="(a, b):\n    return a * b\n\n\nprint(multiply(6, 7))\n",
        max_tokens=8, temperature=0,
    )
    contract.validate("CreateCompletionResponse", raw.http_response.json())
    choice = raw.parse().choices[0]
    assert choice.text.strip() == "multiply"
    assert choice.finish_reason == "stop"


# ------------------------------------------------------------------- errors


def test_unknown_model_is_not_found(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="no-such-model", messages=HI, max_tokens=1)
    assert e.value.code == "model_not_found"


def test_context_length_is_bad_request(client, http, contract):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="gpt-3.5-turbo", messages=HI, max_tokens=5000)
    assert e.value.code == "context_length_exceeded"
    assert "maximum context length is 4096 tokens" in e.value.message
    r = http.post("/v1/chat/completions", json={"model": "gpt-3.5-turbo", "messages": HI, "max_tokens": 5000})
    assert r.status_code == 400
    contract.validate("ErrorResponse", r.json())


def test_wrong_endpoint_is_an_error(client):
    with pytest.raises((openai.NotFoundError, openai.BadRequestError)) as e:
        client.completions.create(model="gpt-3.5-turbo", prompt="Hi", max_tokens=1)
    assert "chat/completions" in e.value.message


def test_bad_key_is_authentication_error(server, contract):
    bad = openai.OpenAI(base_url=f"{server}/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        bad.models.list()
    assert e.value.code == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model=SMOL, messages=HI, max_tokens=1)
    r = httpx.get(f"{server}/v1/models", headers={"Authorization": "Bearer sk-wrong"})
    assert r.status_code == 401
    contract.validate("ErrorResponse", r.json())


def test_invalid_parameter_is_bad_request(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=SMOL, messages=HI, max_tokens=1, temperature=3)
    assert e.value.param == "temperature"
