#!/usr/bin/env python3
"""Batch throughput: the same N chat completions (gpt-3.5-turbo, temperature 0) sent to
one `hearth serve` (a) as one /v1/batches job and (b) concurrently over HTTP, C at a
time, rounds interleaved (batch, concurrent, batch, concurrent, ...).

(a) is timed from the upload of the batch file to the download of its output file
(polling the batch every 0.2 s); (b) from the first request sent to the last answer
read. Both check that all N answers came back with status 200 and count their
completion tokens. Writes the batches section of BENCHMARKS.md. Standard library only;
run through bench/batches/run.sh.
"""
import argparse
import http.client
import json
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
from report import write_section  # noqa: E402

TOPICS = [
    "rivers", "bread", "violins", "glaciers", "libraries", "harbours", "festivals", "volcanoes",
    "bees", "trains", "owls", "maps", "tea", "comets", "forests", "bridges",
]
ASKS = ["Tell me one fact about {}.", "Write a short sentence about {}.", "Why do people like {}?", "Describe {} in a few words."]


def bodies(n, max_tokens):
    return [
        {
            "model": "gpt-3.5-turbo",
            "messages": [{"role": "user", "content": ASKS[(i // len(TOPICS)) % len(ASKS)].format(TOPICS[i % len(TOPICS)])}],
            "max_tokens": max_tokens,
            "temperature": 0,
        }
        for i in range(n)
    ]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, binary, port, state_dir):
        self.port = port
        env = dict(os.environ, HEARTH_STATE_DIR=state_dir)
        self.proc = subprocess.Popen([binary, "serve", "--port", str(port), "--models", "gpt-3.5-turbo"], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 180
        while time.time() < deadline:
            try:
                self.request("POST", "/v1/chat/completions", bodies(1, 4)[0])
                return
            except (OSError, RuntimeError):  # not listening yet, or 503 while loading
                time.sleep(0.3)
        raise SystemExit("hearth did not start")

    def request(self, method, path, body=None, raw=None, headers=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        data = raw if raw is not None else (json.dumps(body) if body is not None else None)
        conn.request(method, path, data, headers or {"Content-Type": "application/json"})
        resp = conn.getresponse()
        out = resp.read()
        conn.close()
        if resp.status != 200:
            raise RuntimeError(f"{method} {path}: {resp.status} {out[:300]!r}")
        return out

    def close(self):
        self.proc.terminate()
        self.proc.wait()


def run_batch(server, reqs):
    lines = "".join(json.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions", "body": b}) + "\n" for i, b in enumerate(reqs))
    boundary = uuid.uuid4().hex
    multipart = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n"
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"bench.jsonl\"\r\n"
        f"Content-Type: application/jsonl\r\n\r\n{lines}\r\n--{boundary}--\r\n"
    ).encode()
    started = time.perf_counter()
    file_id = json.loads(server.request("POST", "/v1/files", raw=multipart, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}))["id"]
    batch = json.loads(server.request("POST", "/v1/batches", {"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"}))
    while batch["status"] not in ("completed", "failed", "cancelled", "expired"):
        time.sleep(0.2)
        batch = json.loads(server.request("GET", f"/v1/batches/{batch['id']}"))
    if batch["status"] != "completed" or not batch.get("output_file_id"):
        raise RuntimeError(f"batch ended {batch['status']}: {batch.get('errors')}")
    out = server.request("GET", f"/v1/files/{batch['output_file_id']}/content").decode()
    seconds = time.perf_counter() - started
    answers = [json.loads(line) for line in out.splitlines() if line.strip()]
    ok = [a for a in answers if a["response"]["status_code"] == 200]
    if len(ok) != len(reqs):
        raise RuntimeError(f"{len(ok)} of {len(reqs)} batch answers succeeded")
    tokens = sum(a["response"]["body"]["usage"]["completion_tokens"] for a in ok)
    return seconds, tokens


def run_concurrent(server, reqs, concurrency):
    pending = list(enumerate(reqs))
    lock = threading.Lock()
    tokens, errors = [0], []

    def worker():
        while True:
            with lock:
                if not pending:
                    return
                _, body = pending.pop(0)
            try:
                usage = json.loads(server.request("POST", "/v1/chat/completions", body))["usage"]
                with lock:
                    tokens[0] += usage["completion_tokens"]
            except Exception as e:  # noqa: BLE001 — reported after the run
                errors.append(e)

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{len(errors)} concurrent requests failed: {errors[0]}")
    return seconds, tokens[0]


def cpu():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "?"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hearth", default=str(REPO / "target/release/hearth"))
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default=str(REPO / "BENCHMARKS.md"))
    args = ap.parse_args()
    reqs = bodies(args.requests, args.max_tokens)
    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as state:
        server = Server(args.hearth, free_port(), state)
        try:
            for r in range(args.rounds):
                for mode in ("batch", "concurrent"):
                    seconds, tokens = run_batch(server, reqs) if mode == "batch" else run_concurrent(server, reqs, args.concurrency)
                    row = (mode, r + 1, seconds, tokens, os.getloadavg()[0])
                    print(*row, flush=True)
                    rows.append(row)
        finally:
            server.close()
    load_after = os.getloadavg()
    lines = [
        "## Batches: one /v1/batches job vs the same requests sent concurrently",
        "",
        f"Written by `bench/batches/run.sh` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {cpu()}, "
        f"{os.cpu_count()} cores; load average {load_before[0]:.2f} before, {load_after[0]:.2f} after (the machine is shared).",
        "",
        f"{args.requests} chat completions (`gpt-3.5-turbo` → SmolLM2-135M-Instruct, one short question each, "
        f"`max_tokens` {args.max_tokens}, temperature 0) to one `hearth serve` (default options), "
        f"(a) as one batch: upload of the JSONL → batch polled every 0.2 s → output file read; "
        f"(b) over HTTP, {args.concurrency} requests in flight (one connection each). Rounds interleaved, same server.",
        "",
        "| mode | round | wall s | requests/s | completion tokens | tokens/s | load (1 min) |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode, r, seconds, tokens, load in rows:
        label = "one /v1/batches job" if mode == "batch" else f"HTTP, {args.concurrency} concurrent"
        lines.append(f"| {label} | {r} | {seconds:.1f} | {args.requests / seconds:.2f} | {tokens} | {tokens / seconds:.1f} | {load:.2f} |")
    write_section(args.out, "batches", "\n".join(lines))


if __name__ == "__main__":
    main()
