"""`client.moderations.create` of the official SDK against hearth's moderation
model (the ported toxicity classifier + heads over all-MiniLM-L6-v2)."""
import openai
import pytest

MODEL = "hearth-moderation-1"


def test_moderation_default_model_flags_a_threat(client, contract):
    # Today's SDK sends no model unless asked: the server's default applies.
    raw = client.moderations.with_raw_response.create(input="I will stab you to death when you get home.")
    contract.validate("CreateModerationResponse", raw.http_response.json())
    resp = raw.parse()
    assert resp.id.startswith("modr-")
    assert resp.model == MODEL
    result = resp.results[0]
    assert result.flagged
    assert result.categories.violence
    # The SDK reads the slash names into its snake_case fields.
    assert 0.0 <= result.category_scores.harassment_threatening <= 1.0
    assert 0.0 <= result.category_scores.self_harm_intent <= 1.0
    assert isinstance(result.categories.sexual_minors, bool)


@pytest.mark.parametrize("model", ["omni-moderation-latest", "text-moderation-latest", "text-moderation-stable"])
def test_moderation_models_and_list_input(client, contract, model):
    inputs = ["Thanks for the lovely dinner last night!", "You are a disgusting idiot and everyone hates you."]
    raw = client.moderations.with_raw_response.create(model=model, input=inputs)
    contract.validate("CreateModerationResponse", raw.http_response.json())
    results = raw.parse().results
    assert [r.flagged for r in results] == [False, True]
    assert results[1].categories.harassment


def test_moderation_text_parts(client):
    resp = client.moderations.create(model="omni-moderation-latest", input=[{"type": "text", "text": "I want to end my life tonight."}])
    assert resp.results[0].flagged
    assert resp.results[0].categories.self_harm


def test_moderation_bad_input(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.moderations.create(model="text-moderation-latest", input=[1, 2])
    assert e.value.body["param"] == "input"
    with pytest.raises(openai.NotFoundError):
        client.moderations.create(model="gpt-3.5-turbo", input="hello")
