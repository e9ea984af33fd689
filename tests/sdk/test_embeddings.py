"""client.embeddings.create with the official SDK: its default (base64, decoded
by the SDK) and float, token inputs, `dimensions`, errors; bodies checked
against the 2023 contract."""
import base64
import json
import math
import struct

import openai
import pytest

ALIAS = "text-embedding-ada-002"
TEXTS = ["The quick brown fox jumps over the lazy dog.", "hello world", "Vectors for search and clustering."]


def _cosine(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def test_embeddings_default_is_base64_and_matches_float(client, contract):
    raw = client.embeddings.with_raw_response.create(model=ALIAS, input=TEXTS)
    sent = json.loads(raw.http_response.request.content)
    assert sent["encoding_format"] == "base64"  # what the SDK asks for by default
    body = raw.http_response.json()
    assert all(isinstance(d["embedding"], str) for d in body["data"])
    # The contract predates base64: the decoded body must match it.
    for d in body["data"]:
        raw_bytes = base64.b64decode(d["embedding"])
        d["embedding"] = list(struct.unpack(f"<{len(raw_bytes) // 4}f", raw_bytes))
    contract.validate("CreateEmbeddingResponse", body)

    decoded = raw.parse()
    floats = client.embeddings.create(model=ALIAS, input=TEXTS, encoding_format="float")
    assert decoded.model == ALIAS and decoded.object == "list"
    assert [d.index for d in decoded.data] == [0, 1, 2]
    assert decoded.usage.prompt_tokens == floats.usage.prompt_tokens == decoded.usage.total_tokens
    for a, b in zip(decoded.data, floats.data):
        assert len(a.embedding) == len(b.embedding) == 384
        assert max(abs(x - y) for x, y in zip(a.embedding, b.embedding)) < 1e-6


def test_embeddings_float_validates(client, contract):
    raw = client.embeddings.with_raw_response.create(model=ALIAS, input="hello world", encoding_format="float", user="sdk-suite")
    body = raw.http_response.json()
    contract.validate("CreateEmbeddingResponse", body)
    vec = body["data"][0]["embedding"]
    assert abs(math.sqrt(sum(x * x for x in vec)) - 1.0) < 1e-5
    assert body["usage"] == {"prompt_tokens": 4, "total_tokens": 4}  # [CLS] hello world [SEP]


def test_embeddings_token_input_is_cl100k(client):
    text = client.embeddings.create(model=ALIAS, input="hello world", encoding_format="float").data[0].embedding
    tokens = client.embeddings.create(model=ALIAS, input=[[15339, 1917]], encoding_format="float").data[0].embedding
    assert _cosine(text, tokens) > 0.99999


def test_embeddings_dimensions(client):
    full = client.embeddings.create(model=ALIAS, input="shorter", encoding_format="float").data[0].embedding
    short = client.embeddings.create(model=ALIAS, input="shorter", dimensions=32).data[0].embedding
    assert len(short) == 32
    assert abs(math.sqrt(sum(x * x for x in short)) - 1.0) < 1e-5
    assert _cosine(short, full[:32]) > 0.99999


def test_embeddings_errors(client, contract, http):
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model=ALIAS, input="")
    assert e.value.status_code == 400
    assert "'$.input' is invalid" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model=ALIAS, input="word " * 300)
    assert e.value.code == "context_length_exceeded"
    r = http.post("/v1/embeddings", json={"model": ALIAS, "input": "x", "dimensions": 4096})
    assert r.status_code == 400
    contract.validate("ErrorResponse", r.json())
