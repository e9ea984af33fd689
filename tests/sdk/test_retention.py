"""The retention policy, proven: with a fresh $HEARTH_HOME and TMPDIR, audio
and moderation requests carrying a unique marker leave it in no file; a chat
request's marker is in the request log (so the search does see the store),
unless its key is zero-retention; `hearth retention purge` removes old entries."""
import os
import subprocess
import time
import uuid
from pathlib import Path

import openai
import pytest

from platform_server import SMOL, Hearth

MODELS = (SMOL, "hearth-moderation-1", "whisper-base")


def files_containing(root: Path, marker: bytes):
    """Every regular file under root (not following links) whose bytes hold marker."""
    hits = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in filenames + dirnames:
            if marker in name.encode():
                hits.append(os.path.join(dirpath, name))
        for name in filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            with open(path, "rb") as f:
                if marker in f.read():
                    hits.append(path)
    return hits


@pytest.fixture()
def fresh(tmp_path):
    home, tmp = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    tmp.mkdir()
    models = Path(os.environ.get("HEARTH_TEST_MODELS") or Path(os.environ.get("HEARTH_HOME", Path.home() / ".cache" / "hearth")) / "models")
    (home / "models").symlink_to(models.resolve())
    h = Hearth(home, models=MODELS, env={"HEARTH_HOME": str(home), "TMPDIR": str(tmp)})
    yield h, home, tmp
    h.stop()


def test_audio_and_moderations_write_nothing(fresh, tmp_path):
    h, home, tmp = fresh
    h.start()
    zdr = h.cli("keys", "create", "--name", "zdr", "--zero-retention").strip()
    key = h.cli("keys", "create", "--name", "plain").strip()
    client = openai.OpenAI(base_url=f"{h.base}/v1", api_key=key, max_retries=0, timeout=120)
    secret = f"zq{uuid.uuid4().hex}"  # never to be written anywhere
    logged = f"lg{uuid.uuid4().hex}"  # kept by the request log

    speech = tmp_path / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(speech), "Good morning, the marker test is running."], check=True)
    with open(speech, "rb") as f:
        client.audio.transcriptions.create(model="whisper-1", file=(f"{secret}.wav", f.read()), prompt=f"Context {secret}")
    with open(speech, "rb") as f:
        client.audio.translations.create(model="whisper-1", file=(f"{secret}.wav", f.read()), prompt=secret)
    client.moderations.create(model="omni-moderation-latest", input=f"I will hurt you {secret}")
    client.moderations.create(model="omni-moderation-latest", input=[f"a {secret}", f"b {secret}"])
    zclient = openai.OpenAI(base_url=f"{h.base}/v1", api_key=zdr, max_retries=0, timeout=120)
    zclient.chat.completions.create(model=SMOL, messages=[{"role": "user", "content": f"Repeat {secret}"}], max_tokens=4)
    client.chat.completions.create(model=SMOL, messages=[{"role": "user", "content": f"Repeat {logged}"}], max_tokens=4)
    h.stop()  # everything the server buffers is on disk

    searched = [home, tmp]
    assert files_containing(home, logged.encode()), "the request log keeps text endpoints' inputs (and the search sees it)"
    for root in searched:
        assert files_containing(root, secret.encode()) == [], f"the marker was written under {root}"
    # Usage of the audio and moderation requests was counted, without content.
    usage = h.cli("usage", "--days", "1")
    assert "/v1/audio/transcriptions" in usage and "/v1/moderations" in usage, usage


def test_server_zero_retention_and_purge(fresh):
    h, home, tmp = fresh
    h.models = (SMOL,)
    h.args = ["--zero-retention"]
    h.start()
    client = openai.OpenAI(base_url=f"{h.base}/v1", api_key="unused", max_retries=0, timeout=120)
    marker = f"zr{uuid.uuid4().hex}"
    r = client.chat.completions.create(model=SMOL, messages=[{"role": "user", "content": marker}], max_tokens=3)
    assert r.usage.total_tokens > 0
    h.stop()
    assert files_containing(home, marker.encode()) == [] and files_containing(tmp, marker.encode()) == []
    assert SMOL in h.cli("usage", "--days", "1"), "usage is still counted"

    # Without the mode, the entry is logged; a purge with a zero-day period removes it.
    h.args = []
    h.start()
    client = openai.OpenAI(base_url=f"{h.base}/v1", api_key="unused", max_retries=0, timeout=120)
    client.chat.completions.create(model=SMOL, messages=[{"role": "user", "content": "hello"}], max_tokens=3)
    h.stop()
    time.sleep(1.1)
    assert "purged 1 request log entries" in h.cli("retention", "purge", "--days", "0")
    assert "purged 0 request log entries" in h.cli("retention", "purge", "--days", "0")


def test_kill9_keeps_the_request_log_of_answered_requests(tmp_path):
    """Concurrent chat requests, the server killed -9 while they run: every
    answered request has its log entry, whole; no entry is half-written."""
    import sqlite3
    import threading

    import httpx

    h = Hearth(tmp_path / "state")
    h.start()
    markers = [f"m{i}x{uuid.uuid4().hex[:8]}" for i in range(12)]
    answered = {}
    lock = threading.Lock()

    def ask(marker):
        try:
            r = httpx.post(
                f"{h.base}/v1/chat/completions",
                json={"model": SMOL, "messages": [{"role": "user", "content": f"Say {marker}"}], "max_tokens": 24},
                timeout=60,
            )
            if r.status_code == 200:
                with lock:
                    answered[marker] = r.json()["id"]
        except httpx.HTTPError:
            pass

    threads = [threading.Thread(target=ask, args=(m,)) for m in markers]
    for t in threads:
        t.start()
    for _ in range(3000):
        with lock:
            if len(answered) >= 2:
                break
        time.sleep(0.01)
    h.kill9()
    for t in threads:
        t.join()
    h.stop()
    assert 0 < len(answered) < len(markers), "the kill came while requests were running"
    with sqlite3.connect(tmp_path / "state" / "hearth.db") as db:
        rows = db.execute("SELECT request, response FROM request_log").fetchall()
    import json

    for request, response in rows:
        json.loads(request)
        assert json.loads(response)["object"] == "chat.completion", "no half-written entry"
    for marker, chat_id in answered.items():
        assert any(marker in req and chat_id in resp for req, resp in rows), f"answered request {marker} is not in the log"
