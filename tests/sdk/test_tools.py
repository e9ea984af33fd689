"""Tool calls through the official SDK and LangChain: `auto` calls held by the tools'
schemas once the model opens one, the legacy `functions`/`function_call` shape (whole and
streamed, as the 2023 API sent it), the round trip with a tool result, and the 400s."""
import json

import jsonschema
import openai
import pytest

CHAT_MODELS = ["gpt-3.5-turbo", "gpt-4"]  # SmolLM2, Qwen2.5-Coder

WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 30}, "unit": {"enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"],
    "additionalProperties": False,
}
GET_WEATHER = {"name": "get_weather", "description": "Current weather of a city", "parameters": WEATHER}
TOOLS = [{"type": "function", "function": GET_WEATHER}]
# Qwen2.5's vocabulary writes the call-open tag as one token.
QWEN_CALL_OPEN_TOKEN = "151657"


def test_auto_call_opened_by_the_model_validates_when_sampled(client):
    # The small model seldom opens a call on its own: a logit bias makes it open one (and
    # pulls toward the tag everywhere after), yet every call's arguments must validate.
    r = client.chat.completions.create(
        model="gpt-4",
        messages=[{"role": "user", "content": "What is the weather in Oslo?"}],
        tools=TOOLS,
        tool_choice="auto",
        logit_bias={QWEN_CALL_OPEN_TOKEN: 100},
        temperature=1.0,
        seed=7,
        n=3,
        max_tokens=60,
    )
    for c in r.choices:
        assert c.finish_reason == "tool_calls", c.message
        for call in c.message.tool_calls:
            assert call.function.name == "get_weather"
            jsonschema.validate(json.loads(call.function.arguments), WEATHER)


@pytest.mark.parametrize("model", CHAT_MODELS)
def test_legacy_function_call_answers_message_function_call(client, contract, model):
    r = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "What is the weather in Oslo?"}],
        functions=[GET_WEATHER],
        function_call={"name": "get_weather"},
        temperature=1.0,
        seed=3,
        max_tokens=60,
    )
    contract.validate("CreateChatCompletionResponse", r.model_dump(exclude_none=True))
    c = r.choices[0]
    assert c.finish_reason == "function_call"
    assert c.message.tool_calls is None
    assert c.message.function_call.name == "get_weather"
    jsonschema.validate(json.loads(c.message.function_call.arguments), WEATHER)


def test_legacy_function_call_streams_function_call_deltas(client, contract):
    stream = client.chat.completions.create(
        model="gpt-3.5-turbo",
        messages=[{"role": "user", "content": "What is the weather in Lima?"}],
        functions=[GET_WEATHER],
        function_call={"name": "get_weather"},
        max_tokens=60,
        stream=True,
    )
    name, arguments, reasons = None, "", []
    for chunk in stream:
        contract.validate("CreateChatCompletionStreamResponse", chunk.model_dump(exclude_none=True))
        for choice in chunk.choices:
            assert not choice.delta.tool_calls
            f = choice.delta.function_call
            if f is not None:
                if name is None:
                    name = f.name
                else:
                    assert f.name is None
                arguments += f.arguments or ""
            if choice.finish_reason:
                reasons.append(choice.finish_reason)
    assert name == "get_weather"
    assert reasons == ["function_call"]
    jsonschema.validate(json.loads(arguments), WEATHER)


@pytest.mark.parametrize("model", CHAT_MODELS)
def test_round_trip_with_a_tool_result(client, model):
    messages = [{"role": "user", "content": "What is the weather in Oslo?"}]
    r = client.chat.completions.create(
        model=model, messages=messages, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "get_weather"}}, temperature=0, max_tokens=40
    )
    call = r.choices[0].message.tool_calls[0]
    messages.append(r.choices[0].message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": "-7 degrees", "sky": "snow"})})
    final = client.chat.completions.create(model=model, messages=messages, tools=TOOLS, temperature=0, max_tokens=30)
    c = final.choices[0]
    assert c.finish_reason in ("stop", "length") and not c.message.tool_calls
    # The answer is written from the tool's result.
    assert "7" in c.message.content or "snow" in c.message.content.lower(), c.message.content


def bad_request(client, **kw):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="gpt-3.5-turbo", max_tokens=8, **kw)
    return e.value


def test_tool_message_without_tool_call_id_is_400(client):
    e = bad_request(
        client,
        messages=[
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
            {"role": "tool", "content": "sunny"},
        ],
        tools=TOOLS,
    )
    assert e.body["type"] == "invalid_request_error"
    assert e.body["param"] == "messages.[2].tool_call_id"
    assert "tool_call_id" in e.body["message"]


@pytest.fixture(scope="module")
def langchain_model(client):
    from langchain_openai import ChatOpenAI

    return lambda model: ChatOpenAI(model=model, base_url=str(client.base_url), api_key=client.api_key, temperature=0, max_tokens=80)


@pytest.mark.parametrize("model", CHAT_MODELS)
def test_langchain_with_structured_output(langchain_model, model):
    from pydantic import BaseModel

    class City(BaseModel):
        name: str
        country: str

    city = langchain_model(model).with_structured_output(City).invoke("Name a city in Norway, as JSON.")
    assert isinstance(city, City)


def test_langchain_bind_tools(langchain_model):
    from langchain_core.tools import tool

    @tool
    def get_weather(city: str) -> str:
        """Current weather of a city."""
        return "sunny"

    message = langchain_model("gpt-4").bind_tools([get_weather], tool_choice="get_weather").invoke("What is the weather in Oslo?")
    (call,) = message.tool_calls
    assert call["name"] == "get_weather"
    assert isinstance(call["args"]["city"], str)


def test_completions_refuse_response_format_as_openai_does(client):
    # Not part of OpenAI's completions contract: refused, as OpenAI refuses it (README).
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="text-davinci-003", prompt="{", max_tokens=4, extra_body={"response_format": {"type": "json_object"}})
    assert e.value.body["message"] == "Unrecognized request argument supplied: response_format"
