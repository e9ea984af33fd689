"""Keys made by the CLI, rate limits with OpenAI's 429 and headers, and usage
read back through the organization usage API, with the official SDK against
a server with a state directory of its own."""
import os
import subprocess
import time
import uuid

import httpx
import openai
import pytest

from platform_server import SMOL, Hearth

STATIC = "sk-hearth-static-key"


@pytest.fixture(scope="module")
def hearth(tmp_path_factory):
    h = Hearth(tmp_path_factory.mktemp("keys-state"), api_key=STATIC).start()
    yield h
    h.stop()


def sdk(hearth, key):
    return openai.OpenAI(base_url=f"{hearth.base}/v1", api_key=key, max_retries=0, timeout=120)


def test_cli_keys_work_and_revoked_keys_fail_at_once(hearth):
    key = hearth.cli("keys", "create", "--name", "cli-key").strip()
    assert key.startswith("sk-hearth-")
    listed = hearth.cli("keys", "list")
    assert "cli-key" in listed and key not in listed, "the list never shows a secret"
    assert [m.id for m in sdk(hearth, key).models.list()], "a CLI key works"
    assert sdk(hearth, STATIC).models.list(), "configured keys keep working"
    with pytest.raises(openai.AuthenticationError):
        sdk(hearth, "sk-hearth-" + "0" * 64).models.list()
    hearth.cli("keys", "revoke", "cli-key")
    with pytest.raises(openai.AuthenticationError) as e:
        sdk(hearth, key).models.list()
    assert e.value.response.json()["error"]["code"] == "invalid_api_key"
    assert "revoked" in hearth.cli("keys", "list")


def _wait_for_fresh_minute(hearth, key):
    """Starts the test early in a rate window, so the window cannot turn over mid-test."""
    r = httpx.get(f"{hearth.base}/v1/models", headers={"Authorization": f"Bearer {key}"})
    left = int(r.headers["x-ratelimit-reset-requests"].rstrip("s"))
    if left < 20:
        time.sleep(left + 1)
        httpx.get(f"{hearth.base}/v1/models", headers={"Authorization": f"Bearer {key}"})


def test_rate_limit_429_and_headers(hearth):
    key = hearth.cli("keys", "create", "--name", "limited", "--rpm", "4", "--tpm", "100000").strip()
    client = sdk(hearth, key)
    _wait_for_fresh_minute(hearth, key)  # the first of the 4 requests
    remaining = []
    for _ in range(3):
        raw = client.models.with_raw_response.list()
        h = raw.headers
        assert h["x-ratelimit-limit-requests"] == "4" and h["x-ratelimit-limit-tokens"] == "100000"
        assert h["x-ratelimit-reset-requests"].endswith("s") and h["x-ratelimit-reset-tokens"].endswith("s")
        remaining.append(int(h["x-ratelimit-remaining-requests"]))
    assert remaining == [2, 1, 0]
    with pytest.raises(openai.RateLimitError) as e:
        client.models.list()
    err = e.value.response.json()["error"]
    assert err["code"] == "rate_limit_exceeded" and err["type"] == "requests", err
    assert "Rate limit reached" in err["message"] and "requests per min (RPM): Limit 4" in err["message"], err
    assert e.value.response.headers["x-ratelimit-remaining-requests"] == "0"
    # Another key has its own minute.
    assert sdk(hearth, STATIC).models.with_raw_response.list().headers["x-ratelimit-limit-requests"] == "10000"


def test_token_limit(hearth):
    key = hearth.cli("keys", "create", "--name", "few-tokens", "--tpm", "5").strip()
    client = sdk(hearth, key)
    _wait_for_fresh_minute(hearth, key)
    client.chat.completions.create(model=SMOL, messages=[{"role": "user", "content": "Hello there"}], max_tokens=3)
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model=SMOL, messages=[{"role": "user", "content": "Hi"}], max_tokens=3)
    err = e.value.response.json()["error"]
    assert err["type"] == "tokens" and "tokens per min (TPM)" in err["message"], err


def test_usage_totals_equal_the_responses(hearth):
    admin = hearth.cli("keys", "create", "--name", "admin", "--admin").strip()
    key = hearth.cli("keys", "create", "--name", "metered").strip()
    key_id = next(line.split()[0] for line in hearth.cli("keys", "list").splitlines() if " metered " in line)
    client = sdk(hearth, key)
    start = int(time.time()) - 5
    prompt = completion = requests = 0
    for content in ["Say hi", "Count to three", "Name a colour"]:
        r = client.chat.completions.create(model=SMOL, messages=[{"role": "user", "content": content}], max_tokens=8)
        prompt += r.usage.prompt_tokens
        completion += r.usage.completion_tokens
        requests += 1
    r = client.completions.create(model=SMOL, prompt="Once upon a time", max_tokens=6)
    prompt += r.usage.prompt_tokens
    completion += r.usage.completion_tokens
    requests += 1
    stream = client.chat.completions.create(
        model=SMOL, messages=[{"role": "user", "content": "Tell me a joke"}], max_tokens=8, stream=True, stream_options={"include_usage": True}
    )
    usage = [c.usage for c in stream if c.usage]
    assert len(usage) == 1
    prompt += usage[0].prompt_tokens
    completion += usage[0].completion_tokens
    requests += 1
    # A stream that did not ask for usage gets none (it is still metered).
    plain = list(client.chat.completions.create(model=SMOL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4, stream=True))
    assert plain and all(c.usage is None for c in plain) and all(c.choices for c in plain)

    with pytest.raises(openai.PermissionDeniedError):
        client.get("/organization/usage/completions", cast_to=object, options={"params": {"start_time": start}})
    page = sdk(hearth, admin).get(
        "/organization/usage/completions",
        cast_to=object,
        options={"params": {"start_time": start, "bucket_width": "1d", "group_by": ["api_key_id", "model"]}},
    )
    assert page["object"] == "page" and page["data"][0]["object"] == "bucket"
    mine = [res for b in page["data"] for res in b["results"] if res["api_key_id"] == key_id]
    assert len(mine) == 1, page
    res = mine[0]
    assert res["object"] == "organization.usage.completions.result" and res["model"] == SMOL
    assert res["num_model_requests"] == requests + 1, "the usage-less stream counts as a request"
    assert res["input_tokens"] >= prompt and res["output_tokens"] >= completion
    # Exactly: the streamed request without usage is the only one not summed here.
    extra_in, extra_out = res["input_tokens"] - prompt, res["output_tokens"] - completion
    assert 0 < extra_in < 80 and 0 < extra_out <= 4, res
    assert key_id in hearth.cli("usage", "--days", "1")


def test_usage_counts_exact_for_embeddings_free_key(hearth):
    """A key's usage equals the sum of its responses' usage, exactly."""
    admin = hearth.cli("keys", "create", "--name", "admin2", "--admin").strip()
    key = hearth.cli("keys", "create", "--name", "exact").strip()
    key_id = next(line.split()[0] for line in hearth.cli("keys", "list").splitlines() if " exact " in line)
    client = sdk(hearth, key)
    start = int(time.time()) - 5
    total_in = total_out = 0
    for n in range(1, 4):
        r = client.chat.completions.create(model=SMOL, messages=[{"role": "user", "content": "word " * n}], max_tokens=n)
        total_in += r.usage.prompt_tokens
        total_out += r.usage.completion_tokens
    page = sdk(hearth, admin).get(
        "/organization/usage/completions", cast_to=object, options={"params": {"start_time": start, "group_by": "api_key_id"}}
    )
    mine = [res for b in page["data"] for res in b["results"] if res["api_key_id"] == key_id]
    assert [(m["input_tokens"], m["output_tokens"], m["num_model_requests"]) for m in mine] == [(total_in, total_out, 3)]


def test_replicas_share_keys_and_limits_on_postgres(tmp_path):
    """Two servers on one PostgreSQL database: one minute's requests are
    counted together, and a key revoked through either fails on both at once."""
    url = os.environ.get("HEARTH_TEST_DATABASE_URL")
    if not url:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but HEARTH_TEST_DATABASE_URL is not set (scripts/test.sh starts PostgreSQL)")
        pytest.skip("HEARTH_TEST_DATABASE_URL not set: run scripts/test.sh")
    name = f"hearth_sdk_{uuid.uuid4().hex[:12]}"
    subprocess.run(["psql", url, "-q", "-c", f"CREATE DATABASE {name}"], check=True)
    db = url.rsplit("/", 1)[0] + "/" + name
    replicas = [Hearth(tmp_path / f"replica{i}", env={"HEARTH_DATABASE_URL": db}) for i in range(2)]
    try:
        for r in replicas:
            r.start()
        a, b = replicas
        key = a.cli("keys", "create", "--name", "shared", "--rpm", "4").strip()
        _wait_for_fresh_minute(a, key)
        left = [int(sdk(r, key).models.with_raw_response.list().headers["x-ratelimit-remaining-requests"]) for r in (b, a, b)]
        assert left == [2, 1, 0], "one count for both replicas"
        with pytest.raises(openai.RateLimitError):
            sdk(a, key).models.list()
        other = b.cli("keys", "create", "--name", "other").strip()
        assert sdk(a, other).models.list() and sdk(b, other).models.list(), "a key made through one replica works on both"
        b.cli("keys", "revoke", "other")
        for r in replicas:
            with pytest.raises(openai.AuthenticationError):
                sdk(r, other).models.list()
    finally:
        for r in replicas:
            r.stop()
        subprocess.run(["psql", url, "-q", "-c", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"], check=False)
