#!/usr/bin/env python3
"""Writes tests/bad_input/cases.json: bad requests to every endpoint, each with
the exact status and error body hearth answers (tests/e2e_bad_input.rs replays
them). The requests are built here; the expected answers are recorded from a
running server (`--record URL`) and then reviewed by hand: a case is kept only
if its status is OpenAI's for that mistake and its body names the mistake.

  hearth serve --port 8099 --models smollm2-135m-instruct-q4_1,all-minilm-l6-v2,hearth-moderation-1,whisper-tiny.en
  python3 scripts/bad_input_cases.py --record http://127.0.0.1:8099
"""
import argparse, base64, json, struct, sys, urllib.request, urllib.error, uuid

SMOL = "smollm2-135m-instruct-q4_1"
MINILM = "all-minilm-l6-v2"
WHISPER = "whisper-tiny.en"
CHAT, COMP, EMB, MOD = "/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/moderations"
TRANS, TRANSL = "/v1/audio/transcriptions", "/v1/audio/translations"

cases = []

def json_case(name, path, body, method="POST"):
    case = {"name": name, "method": method, "path": path, "json": body}
    # A long list is stored as one item and a count (the replay expands it).
    for key, value in (body.items() if isinstance(body, dict) else []):
        if isinstance(value, list) and len(value) > 50 and all(v == value[0] for v in value):
            case["json"] = dict(body, **{key: None})
            case["fill"] = {"field": key, "item": value[0], "times": len(value)}
    cases.append(case)

def raw_case(name, path, raw, method="POST", content_type="application/json"):
    cases.append({"name": name, "method": method, "path": path, "raw": raw, "content_type": content_type})

def multipart_case(name, path, fields, file=None, files=None):
    form = {"fields": fields, "file": file}
    if files:
        form["files"] = files  # [{"field", "name", "base64", optional "pad_to": bytes}]
    cases.append({"name": name, "method": "POST", "path": path, "multipart": form})

def chat(**extra):
    body = {"model": SMOL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
    body.update(extra)
    return body

def comp(**extra):
    body = {"model": SMOL, "prompt": "Hi", "max_tokens": 1}
    body.update(extra)
    return body

def without(body, key):
    body = dict(body)
    body.pop(key, None)
    return body

# --- chat: every field with a wrong type, a value out of range, a bad shape.
wrong_types = {
    "temperature": ["hot", [1], {"a": 1}, True], "top_p": ["x", [0.5]], "n": ["2", 1.5, [1]],
    "max_tokens": ["ten", 1.5, [1]], "stream": ["yes", 1], "presence_penalty": ["p"], "frequency_penalty": ["f"],
    "logit_bias": [[1, 2], "x"], "logprobs": ["true", 1], "top_logprobs": ["3"], "seed": ["s", 1.5],
    "user": [1, ["u"]], "stop": [5, {"a": 1}], "messages": ["Hi", {"role": "user"}, 7],
    "max_completion_tokens": ["x"], "stream_options": ["x", [1]], "tools": ["x", {"a": 1}],
}
for field, values in wrong_types.items():
    for v in values:
        json_case(f"chat {field} = {json.dumps(v)}", CHAT, chat(**{field: v}))
ranges = {
    "temperature": [2.01, -0.1, 1e9], "top_p": [1.01, -0.5], "n": [0, -1, 129], "max_tokens": [-1, -100],
    "presence_penalty": [2.5, -2.5], "frequency_penalty": [3, -3], "top_logprobs": [21, -1],
}
for field, values in ranges.items():
    for v in values:
        extra = {field: v}
        if field == "top_logprobs":
            extra["logprobs"] = True
        json_case(f"chat {field} = {v}", CHAT, chat(**extra))
for name, messages in [
    ("empty messages", []), ("message not an object", ["Hi"]), ("unknown role", [{"role": "wizard", "content": "Hi"}]),
    ("role a number", [{"role": 1, "content": "Hi"}]), ("content a number", [{"role": "user", "content": 5}]),
    ("content part without type", [{"role": "user", "content": [{"text": "Hi"}]}]),
    ("content part unknown type", [{"role": "user", "content": [{"type": "video", "video": "x"}]}]),
    ("content part text not a string", [{"role": "user", "content": [{"type": "text", "text": 1}]}]),
    ("missing content", [{"role": "user"}]), ("missing role", [{"content": "Hi"}]),
    ("tool message without tool_call_id", [{"role": "tool", "content": "x"}]),
    ("assistant tool_calls not a list", [{"role": "assistant", "content": None, "tool_calls": "x"}]),
    ("null message", [None]), ("nested list", [[{"role": "user", "content": "Hi"}]]),
]:
    json_case(f"chat {name}", CHAT, chat(messages=messages))
for name, extra in [
    ("five stop strings", {"stop": ["a", "b", "c", "d", "e"]}), ("stop list of numbers", {"stop": [1, 2]}),
    ("logit_bias value 101", {"logit_bias": {"10": 101}}), ("logit_bias value -101", {"logit_bias": {"10": -101}}),
    ("logit_bias key not a number", {"logit_bias": {"ten": 1}}), ("logit_bias value a string", {"logit_bias": {"10": "x"}}),
    ("logit_bias id outside the vocabulary", {"logit_bias": {"99999999": 1}}),
    ("top_logprobs without logprobs", {"top_logprobs": 2}), ("stream_options without stream", {"stream_options": {"include_usage": True}}),
    ("tools entry without function", {"tools": [{"type": "function"}]}), ("tool type unknown", {"tools": [{"type": "magic", "function": {"name": "f"}}]}),
    ("tool_choice unknown string", {"tool_choice": "sometimes"}), ("response_format unknown type", {"response_format": {"type": "yaml"}}),
    ("response_format a string", {"response_format": "json"}), ("max_tokens beyond the window", {"max_tokens": 10_000_000}),
    ("unknown model", {"model": "no-such-model"}), ("model a number", {"model": 5}), ("model empty", {"model": ""}),
    ("embedding model on chat", {"model": MINILM}), ("whisper on chat", {"model": WHISPER}),
    ("n beyond capacity", {"n": 100}),
]:
    json_case(f"chat {name}", CHAT, chat(**extra))
json_case("chat missing model", CHAT, without(chat(), "model"))
json_case("chat missing messages", CHAT, without(chat(), "messages"))
json_case("chat body a list", CHAT, [chat()])
json_case("chat body a string", CHAT, "hello")
json_case("chat body null", CHAT, None)

# --- completions.
for field, values in {
    "prompt": [42, None, True, {"a": 1}, [1, "a"], [[1], "a"], [1.5], [[]], []], "echo": ["yes"], "best_of": ["2", 1.5],
    "logprobs": ["3", True, 1.5], "suffix": [5, ["s"]], "temperature": ["t"], "max_tokens": ["m"], "n": ["n"], "stream": ["s"], "stop": [7],
}.items():
    for v in values:
        json_case(f"completions {field} = {json.dumps(v)}", COMP, comp(**{field: v}))
for name, extra in [
    ("logprobs 6", {"logprobs": 6}), ("logprobs -1", {"logprobs": -1}), ("best_of 0", {"best_of": 0}), ("best_of 21", {"best_of": 21}),
    ("best_of below n", {"n": 3, "best_of": 2}), ("best_of with stream", {"best_of": 2, "n": 1, "stream": True}),
    ("n 129", {"n": 129}), ("token id outside the vocabulary", {"prompt": [99999999]}), ("negative token id", {"prompt": [-1]}),
    ("token ids in lists, one outside", {"prompt": [[1, 2], [99999999]]}), ("empty string prompt list", {"prompt": [""]}),
    ("max_tokens beyond the window", {"max_tokens": 10_000_000}), ("prompts × best_of beyond capacity", {"prompt": ["a"] * 10, "best_of": 8}),
    ("100 prompts", {"prompt": ["a"] * 100}), ("unknown model", {"model": "nope"}), ("embedding model on completions", {"model": MINILM}),
    ("temperature 2.5", {"temperature": 2.5}), ("top_p 2", {"top_p": 2}), ("logit_bias 200", {"logit_bias": {"1": 200}}),
    ("five stops", {"stop": ["a", "b", "c", "d", "e"]}), ("echo with suffix", {"echo": True, "suffix": "x"}),
]:
    json_case(f"completions {name}", COMP, comp(**extra))
json_case("completions missing prompt", COMP, without(comp(), "prompt"))
json_case("completions missing model", COMP, without(comp(), "model"))
json_case("completions body a number", COMP, 5)

# --- edits.
EDITS = "/v1/edits"
def edit(**extra):
    body = {"model": SMOL, "input": "What day of the wek is it?", "instruction": "Fix the spelling mistakes."}
    body.update(extra)
    return body
for field, values in {
    "instruction": [5, None, ["x"]], "input": [5, ["a"], {"a": 1}], "n": ["2", 1.5], "temperature": ["t"], "top_p": ["p"], "model": [5],
}.items():
    for v in values:
        json_case(f"edits {field} = {json.dumps(v)}", EDITS, edit(**{field: v}))
for name, extra in [
    ("n 0", {"n": 0}), ("n 21", {"n": 21}), ("temperature 2.5", {"temperature": 2.5}), ("top_p -0.1", {"top_p": -0.1}),
    ("unknown field max_tokens", {"max_tokens": 5}), ("stream", {"stream": True}), ("unknown model", {"model": "no-such-model"}),
    ("embedding model on edits", {"model": MINILM}), ("chat-only name on edits", {"model": "gpt-3.5-turbo"}),
    ("deprecated text-davinci-edit-001", {"model": "text-davinci-edit-001"}), ("deprecated code-davinci-edit-001", {"model": "code-davinci-edit-001"}),
    ("input over the window", {"input": "word " * 9000}),
]:
    json_case(f"edits {name}", EDITS, edit(**extra))
json_case("edits missing instruction", EDITS, without(edit(), "instruction"))
json_case("edits missing model", EDITS, without(edit(), "model"))
json_case("edits body a list", EDITS, [edit()])

# --- embeddings.
def emb(**extra):
    body = {"model": MINILM, "input": "hello"}
    body.update(extra)
    return body
for name, inp in [
    ("empty string", ""), ("empty list", []), ("list with an empty string", ["a", ""]), ("empty token list", [[]]),
    ("mixed strings and numbers", ["a", 1]), ("numbers then strings", [1, "a"]), ("float token", [1.5]), ("negative token", [-1]),
    ("token outside the vocabulary", [99999999]), ("nested too deep", [[[1]]]), ("null", None), ("object", {"a": 1}), ("number", 3),
    ("true", True), ("null in list", [None]), ("2049 strings", ["a"] * 2049), ("2049 token lists", [[1]] * 2049),
    ("over the window", "word " * 2000), ("token list over the window", [1000] * 600),
    ("over 300k tokens", [[2000] * 200] * 1600),
]:
    json_case(f"embeddings input {name}", EMB, emb(input=inp))
for name, extra in [
    ("encoding_format unknown", {"encoding_format": "hex"}), ("encoding_format a number", {"encoding_format": 1}),
    ("dimensions 0", {"dimensions": 0}), ("dimensions -1", {"dimensions": -1}), ("dimensions 385", {"dimensions": 385}),
    ("dimensions a string", {"dimensions": "10"}), ("dimensions fractional", {"dimensions": 1.5}), ("user a number", {"user": 5}),
    ("unknown model", {"model": "nope"}), ("chat model on embeddings", {"model": SMOL}), ("model a list", {"model": [MINILM]}),
    ("unknown field", {"colour": "blue"}),
]:
    json_case(f"embeddings {name}", EMB, emb(**extra))
json_case("embeddings missing input", EMB, {"model": MINILM})
json_case("embeddings missing model", EMB, {"input": "hello"})

# --- moderations.
for name, body in [
    ("missing input", {}), ("input a number", {"input": 5}), ("input null", {"input": None}), ("input empty list", []),
    ("input list of numbers", {"input": [1, 2]}), ("input list mixing strings and parts", {"input": ["a", {"type": "text", "text": "b"}]}),
    ("image part", {"input": [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}),
    ("text part without text", {"input": [{"type": "text"}]}), ("text part with a number", {"input": [{"type": "text", "text": 5}]}),
    ("part of unknown type", {"input": [{"type": "audio"}]}), ("257 inputs", {"input": ["a"] * 257}),
    ("unknown model", {"input": "x", "model": "nope"}), ("chat model on moderations", {"input": "x", "model": SMOL}),
    ("model a number", {"input": "x", "model": 7}),
]:
    json_case(f"moderations {name}", MOD, body if isinstance(body, dict) else {"input": body})

# --- models.
for path in ["/v1/models/no-such-model", "/v1/models/%FF", "/v1/models/%C3%28", "/v1/models/a%2Fb", "/v1/models/gpt-4-0314"]:
    cases.append({"name": f"GET {path}", "method": "GET", "path": path})

# --- the HTTP layer: routes, methods, bodies.
for method, path in [("GET", CHAT), ("DELETE", "/v1/models"), ("PUT", EMB), ("GET", "/v1/nothing"), ("POST", "/v2/chat/completions"), ("GET", "/v1"), ("PATCH", MOD)]:
    cases.append({"name": f"{method} {path}", "method": method, "path": path})
for name, path, raw in [
    ("truncated JSON", CHAT, '{"model": "x", "messages": ['), ("not JSON", COMP, "hello"), ("empty body", EMB, ""),
    ("trailing garbage", MOD, '{"input": "x"} extra'), ("invalid UTF-8", CHAT, None), ("JSON with a BOM", MOD, '\ufeff{"input": "x"}'),
    ("duplicate braces", EMB, "{{}}"), ("a lone number", COMP, "12"),
]:
    if raw is None:
        cases.append({"name": f"body {name}", "method": "POST", "path": path, "raw_base64": base64.b64encode(b'{"model": "\xff\xfe"}').decode(), "content_type": "application/json"})
    else:
        raw_case(f"body {name}", path, raw)
cases.append({"name": "body over 4 MiB", "method": "POST", "path": CHAT, "raw_repeat": {"text": "a", "times": 4 * 1024 * 1024 + 1}, "content_type": "application/json"})

# --- audio (multipart).
def wav(rate, channels, nbytes, bits=16, block_align=None):
    block = block_align if block_align is not None else channels * bits // 8
    data = b"\0" * nbytes
    fmt = struct.pack("<HHIIHH", 1, channels, rate, (rate * block) & 0xFFFFFFFF, block, bits)
    return b"RIFF" + struct.pack("<I", 36 + nbytes) + b"WAVEfmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", nbytes) + data

def file_b64(name, data):
    return {"name": name, "base64": base64.b64encode(data).decode()}

ok_wav = wav(16000, 1, 6400)
base_fields = [["model", WHISPER]]
for name, fields, file in [
    ("missing file", base_fields, None), ("missing model", [], file_b64("a.wav", ok_wav)),
    ("unknown model", [["model", "nope"]], file_b64("a.wav", ok_wav)), ("chat model on audio", [["model", SMOL]], file_b64("a.wav", ok_wav)),
    ("empty file", base_fields, file_b64("a.wav", b"")), ("text named .mp3", base_fields, file_b64("a.mp3", b"not audio at all\n" * 40)),
    ("wav rate 0", base_fields, file_b64("a.wav", wav(0, 1, 3200))), ("wav rate 1 Hz", base_fields, file_b64("a.wav", wav(1, 1, 1200))),
    ("wav rate 4 MHz", base_fields, file_b64("a.wav", wav(4_000_000, 1, 3200))), ("wav 0 channels", base_fields, file_b64("a.wav", wav(16000, 0, 3200))),
    ("wav 300 channels", base_fields, file_b64("a.wav", wav(16000, 300, 3200))), ("wav block align 0", base_fields, file_b64("a.wav", wav(16000, 1, 3200, block_align=0))),
    ("wav 200 bits", base_fields, file_b64("a.wav", wav(16000, 1, 3200, bits=200))), ("wav without fmt", base_fields, file_b64("a.wav", b"RIFF\x04\x00\x00\x00WAVE")),
    ("wav shorter than 0.1 s", base_fields, file_b64("a.wav", wav(16000, 1, 1000))), ("random bytes", base_fields, file_b64("a.bin", bytes(range(256)) * 16)),
    ("response_format xml", base_fields + [["response_format", "xml"]], file_b64("a.wav", ok_wav)),
    ("temperature 1.5", base_fields + [["temperature", "1.5"]], file_b64("a.wav", ok_wav)),
    ("temperature not a number", base_fields + [["temperature", "warm"]], file_b64("a.wav", ok_wav)),
    ("language unknown", base_fields + [["language", "xx"]], file_b64("a.wav", ok_wav)),
    ("language not en on an English model", base_fields + [["language", "de"]], file_b64("a.wav", ok_wav)),
    ("timestamp granularity unknown", base_fields + [["response_format", "verbose_json"], ["timestamp_granularities[]", "sentence"]], file_b64("a.wav", ok_wav)),
]:
    multipart_case(f"transcriptions {name}", TRANS, fields, file)
multipart_case("translations on an English-only model", TRANSL, base_fields, file_b64("a.wav", ok_wav))
multipart_case("translations missing file", TRANSL, [["model", "whisper-base"]], None)
raw_case("transcriptions as JSON", TRANS, json.dumps({"model": WHISPER}))
raw_case("transcriptions multipart without boundary", TRANS, "--x\r\n", content_type="multipart/form-data")

# --- images. The corpus's server has no image model: every request that passes the
# checks gets the "no image model is configured" answer, which is a case of its own.
import zlib
GEN, EDIT, VAR = "/v1/images/generations", "/v1/images/edits", "/v1/images/variations"

def png(width, height, mode="RGBA", alpha=255):
    """A minimal PNG (8-bit, no filter) of one colour; mode RGB or RGBA."""
    channels, color_type = (4, 6) if mode == "RGBA" else (3, 2)
    pixel = bytes([90, 120, 200, alpha][:channels])
    raw = b"".join(b"\0" + pixel * width for _ in range(height))
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")

def part(field, name, data, pad_to=None):
    p = {"field": field, "name": name, "base64": base64.b64encode(data).decode()}
    if pad_to:
        p["pad_to"] = pad_to
    return p

for name, body in [
    ("missing prompt", {"n": 1}), ("prompt too long", {"prompt": "a" * 1001}), ("prompt not a string", {"prompt": 5}),
    ("n 0", {"prompt": "an otter", "n": 0}), ("n 11", {"prompt": "an otter", "n": 11}), ("n \"two\"", {"prompt": "an otter", "n": "two"}),
    ("size 100x100", {"prompt": "an otter", "size": "100x100"}), ("size 256", {"prompt": "an otter", "size": 256}),
    ("response_format png", {"prompt": "an otter", "response_format": "png"}), ("unknown field", {"prompt": "an otter", "quality": "hd"}),
    ("seed negative", {"prompt": "an otter", "seed": -1}),
    ("without an image model", {"prompt": "an otter", "size": "256x256", "response_format": "b64_json"}),
    ("dall-e-2 without an image model", {"prompt": "an otter", "model": "dall-e-2"}),
]:
    json_case(f"images generations {name}", GEN, body)
raw_case("images generations as text", GEN, "an otter", content_type="text/plain")

rgba_hole = png(64, 64, "RGBA", alpha=0)
rgba_full = png(64, 64, "RGBA")
rgb = png(64, 64, "RGB")
for name, fields, files in [
    ("missing image", [["prompt", "a hat"]], [part("mask", "mask.png", rgba_hole)]),
    ("missing prompt", [], [part("image", "otter.png", rgba_hole)]),
    ("image not a PNG", [["prompt", "a hat"]], [part("image", "otter.gif", b"GIF89a" + bytes(64))]),
    ("image truncated PNG", [["prompt", "a hat"]], [part("image", "otter.png", rgba_hole[:60])]),
    ("image not square", [["prompt", "a hat"]], [part("image", "otter.png", png(64, 32, "RGBA", alpha=0))]),
    ("image over 4 MB", [["prompt", "a hat"]], [part("image", "otter.png", rgba_hole, pad_to=4 * 1024 * 1024 + 1)]),
    ("RGB image without a mask", [["prompt", "a hat"]], [part("image", "otter.png", rgb)]),
    ("mask not a PNG", [["prompt", "a hat"]], [part("image", "otter.png", rgb), part("mask", "mask.jpg", b"\xff\xd8\xff\xe0" + bytes(64))]),
    ("mask size mismatch", [["prompt", "a hat"]], [part("image", "otter.png", rgb), part("mask", "mask.png", png(32, 32, "RGBA", alpha=0))]),
    ("mask without alpha", [["prompt", "a hat"]], [part("image", "otter.png", rgb), part("mask", "mask.png", rgb)]),
    ("n 11", [["prompt", "a hat"], ["n", "11"]], [part("image", "otter.png", rgba_hole)]),
    ("size 300x300", [["prompt", "a hat"], ["size", "300x300"]], [part("image", "otter.png", rgba_hole)]),
    ("without an image model", [["prompt", "a hat"], ["size", "256x256"]], [part("image", "otter.png", rgb), part("mask", "mask.png", rgba_hole)]),
]:
    multipart_case(f"images edits {name}", EDIT, fields, None, files)
for name, fields, files in [
    ("missing image", [["n", "1"]], []),
    ("image not a PNG", [], [part("image", "otter.webp", b"RIFF\0\0\0\0WEBPVP8 " + bytes(32))]),
    ("image not square", [], [part("image", "otter.png", png(16, 64, "RGB"))]),
    ("with a prompt", [["prompt", "a hat"]], [part("image", "otter.png", rgb)]),
    ("with a mask", [], [part("image", "otter.png", rgb), part("mask", "mask.png", rgba_hole)]),
    ("response_format gif", [["response_format", "gif"]], [part("image", "otter.png", rgb)]),
    ("without an image model", [["response_format", "url"]], [part("image", "otter.png", rgba_full)]),
]:
    multipart_case(f"images variations {name}", VAR, fields, None, files)
cases.append({"name": "images generations GET", "method": "GET", "path": GEN})
cases.append({"name": "images file that never existed", "method": "GET", "path": "/v1/images/files/0123456789abcdef0123456789abcdef.png"})


def send(base, case):
    url = base + case["path"]
    data, headers = None, {}
    if "json" in case:
        body = case["json"]
        if "fill" in case:
            body = dict(body, **{case["fill"]["field"]: [case["fill"]["item"]] * case["fill"]["times"]})
        data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
    elif "raw" in case:
        data, headers["Content-Type"] = case["raw"].encode(), case["content_type"]
    elif "raw_base64" in case:
        data, headers["Content-Type"] = base64.b64decode(case["raw_base64"]), case["content_type"]
    elif "raw_repeat" in case:
        data, headers["Content-Type"] = (case["raw_repeat"]["text"] * case["raw_repeat"]["times"]).encode(), case["content_type"]
    elif "multipart" in case:
        boundary = uuid.uuid4().hex
        parts = []
        for k, v in case["multipart"]["fields"]:
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode())
        f = case["multipart"]["file"]
        if f:
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{f["name"]}"\r\nContent-Type: application/octet-stream\r\n\r\n'.encode() + base64.b64decode(f["base64"]) + b"\r\n")
        for f in case["multipart"].get("files", []):
            data = base64.b64decode(f["base64"])
            data += bytes(max(0, f.get("pad_to", 0) - len(data)))
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{f["field"]}"; filename="{f["name"]}"\r\nContent-Type: application/octet-stream\r\n\r\n'.encode() + data + b"\r\n")
        data = b"".join(parts) + f"--{boundary}--\r\n".encode()
        headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
    req = urllib.request.Request(url, data=data, method=case["method"], headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--record", metavar="URL", required=True)
    ap.add_argument("--out", default="tests/bad_input/cases.json")
    ap.add_argument("--only", metavar="PREFIX", help="record only the cases whose names start with PREFIX; the others are kept from --out as they are")
    args = ap.parse_args()
    if args.only:
        with open(args.out) as f:
            kept = [c for c in json.load(f)["cases"] if not c["name"].startswith(args.only)]
        cases[:] = kept + [c for c in cases if c["name"].startswith(args.only)]
    names = [c["name"] for c in cases]
    assert len(names) == len(set(names)), [n for n in names if names.count(n) > 1]
    for case in cases:
        if "status" in case:
            continue  # kept from --out (--only)
        status, text = send(args.record, case)
        case["status"] = status
        try:
            case["body"] = json.loads(text)
        except ValueError:
            case["body"] = text
        print(status, case["name"], "|", text[:150], file=sys.stderr)
    # What the server accepts is not bad input (e.g. a null prompt, which OpenAI
    # reads as <|endoftext|>): reported, not kept.
    for case in [c for c in cases if c["status"] < 400]:
        print("accepted, dropped:", case["name"], file=sys.stderr)
    cases[:] = [c for c in cases if c["status"] >= 400]
    with open(args.out, "w") as f:
        json.dump({"cases": cases}, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"{len(cases)} cases", file=sys.stderr)
