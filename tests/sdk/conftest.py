"""Fixtures of the SDK suite: a real `hearth serve` (with an API key), the
official `openai` client pointed at it, and validators built from OpenAI's
2023 OpenAPI description.

Environment:
  HEARTH_BIN      the server binary (default: <repo>/target/release/hearth)
  HEARTH_HOME     the model cache the server reads (models already pulled)
  HEARTH_OPENAPI  the contract (default: <repo>/../shared/openapi/openai-2023-06.yaml)
"""
import copy
import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import jsonschema
import openai
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
API_KEY = "sk-hearth-sdk-suite"
READY_TIMEOUT_S = 240


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def server():
    """Starts the server once for the whole session; yields its base URL."""
    binary = Path(os.environ.get("HEARTH_BIN", REPO / "target" / "release" / "hearth"))
    if not binary.exists():
        pytest.fail(f"server binary {binary} missing: run `cargo build --release` (scripts/test.sh does)")
    port = _free_port()
    log = tempfile.NamedTemporaryFile(prefix="hearth-sdk-", suffix=".log", delete=False)
    proc = subprocess.Popen(
        [str(binary), "serve", "--host", "127.0.0.1", "--port", str(port), "--api-key", API_KEY],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={k: v for k, v in os.environ.items() if k not in ("HEARTH_API_KEYS", "HEARTH_API_KEYS_FILE", "HEARTH_CATALOG")},
    )
    base = f"http://127.0.0.1:{port}"

    def output() -> str:
        return Path(log.name).read_text(errors="replace")

    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            pytest.fail(f"hearth serve exited with {proc.returncode} before answering:\n{output()}")
        try:
            r = httpx.get(f"{base}/v1/models", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=5)
            if r.status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"hearth serve did not answer within {READY_TIMEOUT_S}s:\n{output()}")
        time.sleep(0.2)
    try:
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        os.unlink(log.name)


@pytest.fixture(scope="session")
def client(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key=API_KEY, max_retries=0, timeout=180)


@pytest.fixture(scope="session")
def http(server):
    """A raw HTTP client (for bodies and stream frames exactly as sent)."""
    with httpx.Client(base_url=server, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=180) as c:
        yield c


# --------------------------------------------------------------- the contract


def _openapi_path() -> Path:
    default = REPO.parent / "shared" / "openapi" / "openai-2023-06.yaml"
    return Path(os.environ.get("HEARTH_OPENAPI", default))


def _to_json_schema(node):
    """OpenAPI 3.0 → JSON Schema: `nullable: true` becomes a null alternative."""
    if isinstance(node, list):
        return [_to_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _to_json_schema(v) for k, v in node.items() if k not in ("nullable", "example")}
    if node.get("nullable") is True:
        if "type" in out:
            types = out["type"] if isinstance(out["type"], list) else [out["type"]]
            out["type"] = types + ["null"]
            if "enum" in out and None not in out["enum"]:
                out["enum"] = out["enum"] + [None]
        else:
            out = {"anyOf": [out, {"type": "null"}]}
    return out


def _make_nullable(schema: dict) -> dict:
    return {"anyOf": [schema, {"type": "null"}]}


class Contract:
    """Validators for the response schemas of the 2023 contract."""

    def __init__(self, spec: dict):
        self.schemas = _to_json_schema(spec["components"]["schemas"])
        # Stream chunks: OpenAI sends `finish_reason: null` on every chunk but
        # the last, and `usage: null` on every chunk but the last when
        # `stream_options.include_usage` is set; the 2023 schemas (written for
        # whole responses) do not allow those nulls, so chunk validation
        # relaxes exactly these two fields and nothing else.
        for name in ("CreateChatCompletionStreamResponse", "CreateCompletionResponse"):
            relaxed = copy.deepcopy(self.schemas[name])
            choice = relaxed["properties"]["choices"]["items"]
            choice["properties"]["finish_reason"] = _make_nullable(choice["properties"]["finish_reason"])
            if "usage" in relaxed["properties"]:
                relaxed["properties"]["usage"] = _make_nullable(relaxed["properties"]["usage"])
            self.schemas[name + "Chunk"] = relaxed
        # Completions with `echo` + `logprobs`: OpenAI reports `null` as the
        # logprob (and top_logprobs) of the first prompt token, which the 2023
        # schema's item types do not allow; this variant allows exactly that.
        echo = copy.deepcopy(self.schemas["CreateCompletionResponse"])
        logprobs = echo["properties"]["choices"]["items"]["properties"]["logprobs"]["properties"]
        for key in ("token_logprobs", "top_logprobs"):
            logprobs[key]["items"] = _make_nullable(logprobs[key]["items"])
        self.schemas["CreateCompletionResponseEcho"] = echo

    def validate(self, name: str, instance) -> None:
        assert name in self.schemas, f"no schema {name}"
        root = {"$ref": f"#/components/schemas/{name}", "components": {"schemas": self.schemas}}
        validator = jsonschema.Draft202012Validator(root)
        errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.path))
        assert not errors, f"{name}: " + "; ".join(
            f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors
        ) + f"\ninstance: {instance}"


@pytest.fixture(scope="session")
def contract() -> Contract:
    path = _openapi_path()
    if not path.exists():
        pytest.fail(f"OpenAPI contract not found at {path} (set HEARTH_OPENAPI)")
    with open(path) as f:
        return Contract(yaml.safe_load(f))
