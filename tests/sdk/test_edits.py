"""`POST /v1/edits` through the official SDK. Today's `openai` package has no
`client.edits` (the endpoint was shut down in 2024), so the requests go through
the SDK's generic `client.post(...)`: its auth, JSON, and error classes."""
import openai
import pytest

QWEN = "qwen2.5-coder-0.5b-instruct-q4_k_m"


def edit(client, **body):
    return client.post("/edits", cast_to=object, body=body)


def test_sdk_has_no_edits_resource(client):
    # Why this file uses client.post: if a future SDK brings the resource back, use it.
    assert not hasattr(client, "edits")


def test_edit_fixes_the_spelling(client, contract):
    resp = edit(client, model=QWEN, input="What day of the wek is it?", instruction="Fix the spelling mistakes.", temperature=0)
    contract.validate("CreateEditResponse", resp)
    assert resp["object"] == "edit"
    assert [c["index"] for c in resp["choices"]] == [0]
    assert "week" in resp["choices"][0]["text"]
    usage = resp["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_n_choices(client, contract):
    resp = edit(client, model=QWEN, input="Hello world", instruction="Translate to French.", n=2, temperature=1.0, top_p=0.9)
    contract.validate("CreateEditResponse", resp)
    assert [c["index"] for c in resp["choices"]] == [0, 1]


def test_errors_raise_the_sdk_classes(client):
    with pytest.raises(openai.BadRequestError) as e:
        edit(client, model=QWEN, input="x")
    assert e.value.body["param"] == "instruction"
    with pytest.raises(openai.BadRequestError) as e:
        edit(client, model=QWEN, instruction="x", n=21)
    assert e.value.body["param"] == "n"
    with pytest.raises(openai.NotFoundError) as e:
        edit(client, model="no-such-model", instruction="x")
    assert e.value.body["code"] == "model_not_found"
    # OpenAI shut the edit models down on 2024-01-04: the built-in names are refused, naming the replacement.
    with pytest.raises(openai.NotFoundError) as e:
        edit(client, model="text-davinci-edit-001", instruction="x")
    assert "gpt-3.5-turbo" in e.value.body["message"]
