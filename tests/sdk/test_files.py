"""/v1/files through the official SDK against a server with a state directory
of its own: upload, paginated list, retrieve, byte-for-byte download, delete;
OpenAI-shaped 4xx for bad input with nothing half-written; and kill -9 in the
middle of concurrent uploads."""
import json
import os
import random
import socket
import threading

import httpx
import openai
import pytest

from platform_server import Hearth

KEY = "sk-hearth-files-suite"
MAX_FILE = 64 * 1024

CHAT_JSONL = "\n".join(
    json.dumps({"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}) for i in range(3)
) + "\n"


@pytest.fixture(scope="module")
def hearth(tmp_path_factory):
    h = Hearth(tmp_path_factory.mktemp("files-state"), api_key=KEY, args=["--max-file-size", str(MAX_FILE)]).start()
    yield h
    h.stop()


@pytest.fixture(scope="module")
def client(hearth):
    return openai.OpenAI(base_url=f"{hearth.base}/v1", api_key=KEY, max_retries=0, timeout=60)


def blob_names(hearth):
    files = hearth.state_dir / "files"
    return sorted(p.name for p in files.iterdir() if p.is_file() and not p.name.startswith(".")), sorted(os.listdir(files / "tmp"))


def assert_openai_error(err, status, param=None):
    assert err.status_code == status, err
    body = err.response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    assert body["error"]["type"] == "invalid_request_error", body
    if param:
        assert body["error"]["param"] == param, body
    return body["error"]


def test_upload_list_retrieve_download_delete(client, hearth, contract):
    binary = bytes(random.Random(7).randrange(256) for _ in range(50_000))
    uploads = [
        ("train.jsonl", CHAT_JSONL.encode(), "fine-tune"),
        ("pc.jsonl", b'{"prompt": "2+2=", "completion": "4"}\n', "fine-tune"),
        ("blob.bin", binary, "user_data"),
        ("requests.jsonl", b'{"custom_id": "1"}\n', "batch"),
        ("notes.txt", "caf\u00e9 \u2615\n".encode(), "assistants"),
    ]
    made = []
    for name, data, purpose in uploads:
        raw = client.files.with_raw_response.create(file=(name, data), purpose=purpose)
        contract.validate("OpenAIFile", raw.http_response.json())
        f = raw.parse()
        assert (f.filename, f.bytes, f.purpose, f.status, f.object) == (name, len(data), purpose, "processed", "file")
        made.append((f.id, data))
    ids = [i for i, _ in made]

    # The SDK follows `after` cursors page by page (limit=2: three pages).
    listed = [f.id for f in client.files.list(limit=2, order="asc") if f.id in ids]
    assert listed == ids, "ascending, every file once"
    page = client.files.list(limit=2)
    assert len(page.data) == 2 and page.has_more
    newest_first = [f.id for f in client.files.list(limit=2) if f.id in ids]
    assert newest_first == ids[::-1]
    tuned = [f.id for f in client.files.list(purpose="fine-tune")]
    assert set(ids[:2]) <= set(tuned) and not set(ids[2:]) & set(tuned)

    for file_id, data in made:
        assert client.files.retrieve(file_id).id == file_id
        assert client.files.content(file_id).content == data, "byte for byte"

    deleted = client.files.delete(ids[2])
    assert (deleted.id, deleted.deleted) == (ids[2], True)
    assert ids[2] not in blob_names(hearth)[0], "deleting removes the bytes"
    with pytest.raises(openai.NotFoundError) as e:
        client.files.delete(ids[2])
    assert "No such File object" in assert_openai_error(e.value, 404, "id")["message"]
    for call in (client.files.retrieve, client.files.content):
        with pytest.raises(openai.NotFoundError) as e:
            call("file-doesnotexist")
        assert_openai_error(e.value, 404, "id")


def test_bad_uploads_leave_nothing(client, hearth):
    before = blob_names(hearth)
    count = len(list(client.files.list()))
    with pytest.raises(openai.BadRequestError) as e:
        client.files.create(file=("x.jsonl", CHAT_JSONL.encode()), purpose="fine-tuning")
    assert "is not one of" in assert_openai_error(e.value, 400, "purpose")["message"]

    bad = CHAT_JSONL + '{"messages": [{"role": "user", "content": "only a question"}]}\n'
    with pytest.raises(openai.BadRequestError) as e:
        client.files.create(file=("bad.jsonl", bad.encode()), purpose="fine-tune")
    assert "Line 4" in assert_openai_error(e.value, 400, "file")["message"]
    with pytest.raises(openai.BadRequestError) as e:
        client.files.create(file=("bad.jsonl", b'{"prompt": "a", "completion": "b"}\nnot json\n'), purpose="fine-tune")
    assert "Line 2" in assert_openai_error(e.value, 400, "file")["message"]

    with pytest.raises(openai.APIStatusError) as e:
        client.files.create(file=("big.bin", b"x" * (MAX_FILE + 1)), purpose="user_data")
    assert "Maximum content size limit" in assert_openai_error(e.value, 413, "file")["message"]

    # A multipart body cut off in the middle of the file (no closing boundary).
    boundary = "hearthboundary"
    head = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nuser_data\r\n"
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"cut.bin\"\r\n\r\n"
    ).encode() + b"y" * 5000
    with socket.create_connection(("127.0.0.1", hearth.port)) as s:
        s.sendall(
            (
                f"POST /v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nConnection: close\r\n"
                f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len(head)}\r\n\r\n"
            ).encode()
            + head
        )
        s.settimeout(30)
        answer = s.recv(65536).decode(errors="replace")
    assert answer.startswith("HTTP/1.1 400"), answer
    assert '"type":"invalid_request_error"' in answer, answer

    r = httpx.post(f"{hearth.base}/v1/files", headers={"Authorization": f"Bearer {KEY}"}, files={"purpose": (None, "batch")})
    assert r.status_code == 400 and r.json()["error"]["param"] == "file", r.text

    assert len(list(client.files.list())) == count
    assert blob_names(hearth) == before, "no stray bytes, no temporary files"


def test_kill9_during_uploads_keeps_answered_files_whole(tmp_path):
    """20 concurrent uploads, the server killed -9 while they are in flight,
    restarted: every upload answered 200 is there, whole; nothing else is."""
    h = Hearth(tmp_path / "state", api_key=KEY).start()
    payloads = {f"up{i}.bin": os.urandom(random.Random(i).randrange(200_000, 2_000_000)) for i in range(20)}
    answered = {}
    lock = threading.Lock()
    started = threading.Barrier(21)

    def upload(name):
        started.wait()
        try:
            r = httpx.post(
                f"{h.base}/v1/files",
                headers={"Authorization": f"Bearer {KEY}"},
                data={"purpose": "user_data"},
                files={"file": (name, payloads[name])},
                timeout=60,
            )
            if r.status_code == 200:
                with lock:
                    answered[name] = r.json()["id"]
        except httpx.HTTPError:
            pass

    threads = [threading.Thread(target=upload, args=(n,)) for n in payloads]
    for t in threads:
        t.start()
    started.wait()
    # Wait for some (not all) answers, then kill.
    for _ in range(400):
        with lock:
            if len(answered) >= 3:
                break
        threading.Event().wait(0.01)
    h.kill9()
    for t in threads:
        t.join()
    h.stop()
    assert len(answered) < len(payloads), "the kill came while uploads were in flight"

    h.start()
    try:
        c = openai.OpenAI(base_url=f"{h.base}/v1", api_key=KEY, max_retries=0)
        kept = {f.id: f for f in c.files.list()}
        for name, file_id in answered.items():
            assert file_id in kept, f"{name} was answered 200 but is gone"
            assert c.files.content(file_id).content == payloads[name], f"{name} is not intact"
        for f in kept.values():
            # An upload answered a moment before the kill may have lost its
            # answer on the way; it is still whole.
            assert c.files.content(f.id).content == payloads[f.filename]
        names, tmp = blob_names(h)
        assert names == sorted(kept), "no bytes without a record"
        assert tmp == [], "no temporary files"
    finally:
        h.stop()
