"""Structured outputs through the official SDK: `response_format` `json_object` and
`json_schema` on both chat models (sampled, many seeds: every answer parses and
validates), `client.chat.completions.parse` with a Pydantic model, and the 400s."""
import json
from typing import List, Literal, Optional

import jsonschema
import openai
import pytest
from pydantic import BaseModel

CHAT_MODELS = ["gpt-3.5-turbo", "gpt-4"]  # SmolLM2, Qwen2.5-Coder

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "pets": {
            "type": "array",
            "maxItems": 3,
            "items": {
                "type": "object",
                "properties": {"kind": {"enum": ["cat", "dog", "fish"]}, "name": {"type": "string", "maxLength": 16}},
                "required": ["kind", "name"],
                "additionalProperties": False,
            },
        },
        "email": {"anyOf": [{"type": "string", "maxLength": 40}, {"type": "null"}]},
    },
    "required": ["name", "age", "pets", "email"],
    "additionalProperties": False,
}


def person_format():
    return {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}


@pytest.mark.parametrize("model", CHAT_MODELS)
def test_json_schema_sampled_always_validates(client, contract, model):
    r = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Invent a person with pets."}],
        response_format=person_format(),
        temperature=1.0,
        seed=11,
        n=4,
        max_tokens=200,
    )
    contract.validate("CreateChatCompletionResponse", r.model_dump(exclude_none=True))
    assert len(r.choices) == 4
    for c in r.choices:
        assert c.finish_reason == "stop", c.message.content
        jsonschema.validate(json.loads(c.message.content), PERSON)


@pytest.mark.parametrize("model", CHAT_MODELS)
def test_json_object_is_one_object(client, model):
    r = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Describe Paris as a small JSON object."}],
        response_format={"type": "json_object"},
        temperature=0,
        max_tokens=300,
    )
    c = r.choices[0]
    assert c.finish_reason == "stop", c.message.content
    assert isinstance(json.loads(c.message.content), dict)


def test_json_schema_streamed(client):
    stream = client.chat.completions.create(
        model="gpt-3.5-turbo",
        messages=[{"role": "user", "content": "Invent a person."}],
        response_format=person_format(),
        temperature=1.0,
        seed=3,
        max_tokens=200,
        stream=True,
    )
    text, reasons = "", []
    for chunk in stream:
        for choice in chunk.choices:
            text += choice.delta.content or ""
            if choice.finish_reason:
                reasons.append(choice.finish_reason)
    assert reasons == ["stop"]
    jsonschema.validate(json.loads(text), PERSON)


def test_max_tokens_cut_is_length(client):
    r = client.chat.completions.create(
        model="gpt-3.5-turbo",
        messages=[{"role": "user", "content": "Invent a person."}],
        response_format=person_format(),
        max_tokens=4,
    )
    assert r.choices[0].finish_reason == "length"
    assert r.choices[0].message.content.startswith("{")


class Pet(BaseModel):
    kind: Literal["cat", "dog", "fish"]
    name: str


class Owner(BaseModel):
    name: str
    age: int
    pets: List[Pet]
    nickname: Optional[str]


@pytest.mark.parametrize("model", CHAT_MODELS)
def test_parse_with_pydantic(client, model):
    r = client.chat.completions.parse(
        model=model,
        messages=[{"role": "user", "content": "An owner with one or two pets."}],
        response_format=Owner,
        temperature=0.8,
        seed=5,
        max_tokens=250,
    )
    c = r.choices[0]
    assert c.finish_reason == "stop", c.message.content
    assert isinstance(c.message.parsed, Owner)
    assert c.message.parsed == Owner.model_validate_json(c.message.content)


def bad_request(client, **kw):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="gpt-3.5-turbo", max_tokens=8, **kw)
    return e.value


def test_json_object_without_json_in_messages_is_400(client):
    e = bad_request(client, messages=[{"role": "user", "content": "Hi"}], response_format={"type": "json_object"})
    assert e.status_code == 400
    assert e.body["param"] == "messages"
    assert "json" in e.body["message"]


@pytest.mark.parametrize(
    "schema, keyword",
    [
        ({"type": "object", "properties": {"a": {"not": {"type": "string"}}}}, "not"),
        ({"type": "array", "uniqueItems": True}, "uniqueItems"),
        ({"type": "object", "if": {"required": ["a"]}, "then": {"required": ["b"]}}, "if"),
    ],
)
def test_unsupported_keyword_is_400_naming_it(client, schema, keyword):
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    e = bad_request(client, messages=[{"role": "user", "content": "Hi"}], response_format=fmt)
    assert e.body["type"] == "invalid_request_error"
    assert e.body["param"] == "response_format"
    assert keyword in e.body["message"]


@pytest.mark.parametrize(
    "json_schema, param",
    [
        ({"schema": {"type": "object"}}, "response_format.json_schema.name"),
        ({"name": "has space", "schema": {"type": "object"}}, "response_format.json_schema.name"),
        ({"name": "x", "schema": {"type": "object", "properties": 3}}, "response_format"),
        ({"name": "x", "schema": {"$ref": "#/$defs/nowhere"}}, "response_format"),
    ],
)
def test_invalid_schema_is_400(client, json_schema, param):
    fmt = {"type": "json_schema", "json_schema": json_schema}
    e = bad_request(client, messages=[{"role": "user", "content": "Hi"}], response_format=fmt)
    assert e.body["param"] == param


WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 30}, "unit": {"enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Current weather of a city", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "get_time", "description": "Current time", "parameters": {"type": "object", "properties": {}}}},
]


@pytest.mark.parametrize("model", CHAT_MODELS)
def test_named_tool_choice_forces_that_call(client, model):
    r = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "What is the weather in Oslo?"}],
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        temperature=1.0,
        seed=2,
        max_tokens=100,
    )
    # (The 2023 contract predates `tool_calls`: not validated against it.)
    c = r.choices[0]
    assert c.finish_reason == "tool_calls"
    assert len(c.message.tool_calls) == 1
    call = c.message.tool_calls[0]
    assert call.id.startswith("call_") and call.type == "function"
    assert call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), WEATHER)


@pytest.mark.parametrize("model", CHAT_MODELS)
def test_required_tool_choice_calls_one_of_the_tools(client, model):
    r = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "What time is it?"}],
        tools=TOOLS,
        tool_choice="required",
        parallel_tool_calls=False,
        temperature=1.0,
        seed=4,
        n=3,
        max_tokens=100,
    )
    for c in r.choices:
        assert c.finish_reason == "tool_calls"
        (call,) = c.message.tool_calls
        assert call.function.name in ("get_weather", "get_time")
        args = json.loads(call.function.arguments)
        if call.function.name == "get_weather":
            jsonschema.validate(args, WEATHER)


def test_tool_choice_naming_an_unknown_function_is_400(client):
    e = bad_request(
        client,
        messages=[{"role": "user", "content": "Hi"}],
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "launch_rocket"}},
    )
    assert e.body["param"] == "tool_choice"
    assert "launch_rocket" in e.body["message"]


def test_tool_with_unsupported_parameters_is_400_naming_the_function(client):
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "not": {}}}}]
    e = bad_request(client, messages=[{"role": "user", "content": "Hi"}], tools=tools, tool_choice="required")
    assert e.body["param"] == "tools"
    assert "'f'" in e.body["message"] and "not" in e.body["message"]


@pytest.mark.parametrize("model", CHAT_MODELS)
def test_forced_tool_call_streams_openai_deltas(client, http, model):
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "What is the weather in Lima?"}],
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        temperature=1.0,
        seed=9,
        max_tokens=100,
        stream=True,
    )
    calls, reasons, content = {}, [], ""
    for chunk in stream:
        for choice in chunk.choices:
            content += choice.delta.content or ""
            for d in choice.delta.tool_calls or []:
                if d.index not in calls:
                    # The first delta of a call names it.
                    assert d.id.startswith("call_") and d.type == "function" and d.function.name == "get_weather"
                    calls[d.index] = ""
                else:
                    assert d.id is None and d.function.name is None
                calls[d.index] += d.function.arguments or ""
            if choice.finish_reason:
                reasons.append(choice.finish_reason)
    assert reasons == ["tool_calls"]
    assert content == ""
    assert list(calls) == [0]
    jsonschema.validate(json.loads(calls[0]), WEATHER)
