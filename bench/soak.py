#!/usr/bin/env python3
"""Soak test (not CI): mixed traffic against a running hearth for a while,
with clients that disconnect mid-request, slow clients and abusive requests.

At the end it asserts: no 5xx, every well-formed request answered (200, or 429
with retry-after when the queue was full), and the server's RSS within a stated
margin of its RSS after warm-up. Standard library only.

  hearth serve --port 8090 --models smollm2-135m-instruct-q4_1,all-minilm-l6-v2,hearth-moderation-1,whisper-tiny.en &
  python3 bench/soak.py --url http://127.0.0.1:8090 --pid $! --minutes 30
"""
import argparse, base64, json, random, socket, struct, sys, threading, time, urllib.error, urllib.parse, urllib.request

SMOL, MINILM, WHISPER = "smollm2-135m-instruct-q4_1", "all-minilm-l6-v2", "whisper-tiny.en"


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def wav(seconds, rate=16000, tone=True):
    n = int(seconds * rate)
    import math
    samples = b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / rate)) if tone else 0) for i in range(n))
    return b"RIFF" + struct.pack("<I", 36 + len(samples)) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16) + b"data" + struct.pack("<I", len(samples)) + samples


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {}
        self.problems = []

    def add(self, kind, status, detail=""):
        with self.lock:
            self.counts[(kind, status)] = self.counts.get((kind, status), 0) + 1
            if status >= 500 or status == 0:
                self.problems.append(f"{kind}: {status} {detail[:200]}")


def post(url, path, body, headers=None, timeout=600):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data, method="POST", headers=headers or {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()
    except Exception as e:  # connection refused or reset: the server is in trouble
        return 0, {}, str(e).encode()


def multipart(fields, filename, data):
    boundary = "soakboundary%d" % random.randrange(10**9)
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n\r\n'.encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def well_formed(url, stats, rng, audio):
    kind = rng.choice(["chat", "completion", "embed", "moderate", "audio"])
    if kind == "chat":
        body = {"model": SMOL, "messages": [{"role": "user", "content": f"Tell me about {rng.choice(['tea', 'rivers', 'owls'])}."}], "max_tokens": rng.randint(1, 40)}
        status, headers, text = post(url, "/v1/chat/completions", body)
    elif kind == "completion":
        body = {"model": SMOL, "prompt": "Once upon a time", "max_tokens": rng.randint(1, 30), "n": rng.randint(1, 3)}
        status, headers, text = post(url, "/v1/completions", body)
    elif kind == "embed":
        status, headers, text = post(url, "/v1/embeddings", {"model": MINILM, "input": ["a sentence to embed"] * rng.randint(1, 64)})
    elif kind == "moderate":
        status, headers, text = post(url, "/v1/moderations", {"input": ["hello there", ""] * rng.randint(1, 8)})
    else:
        data, headers = multipart([("model", WHISPER)], "a.wav", audio)
        status, headers, text = post(url, "/v1/audio/transcriptions", data, headers)
    if status == 429 and not headers.get("retry-after"):
        status = 0  # a 429 must say when to retry
    ok = status in (200, 429)
    stats.add(kind, status if ok or status >= 500 or status == 0 else 1000 + status, text.decode(errors="replace"))


def abusive(url, stats, rng):
    kind = rng.choice(["disconnect", "slow_headers", "slow_body", "never_fits", "bad_wav", "huge_moderation"])
    host, port = urllib.parse.urlparse(url).hostname, urllib.parse.urlparse(url).port
    if kind == "disconnect":
        # A long generation, abandoned after a moment.
        s = socket.create_connection((host, port))
        body = json.dumps({"model": SMOL, "prompt": "Write a long essay.", "max_tokens": 500, "stream": rng.random() < 0.5}).encode()
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        time.sleep(rng.uniform(0.1, 2))
        s.close()
        stats.add(kind, 200)
        return
    if kind in ("slow_headers", "slow_body"):
        s = socket.create_connection((host, port))
        s.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\n" + (b"Content-Length: 100\r\n\r\n{" if kind == "slow_body" else b""))
        s.settimeout(120)
        try:
            while s.recv(4096):
                pass
            stats.add(kind, 200)  # closed by the server
        except socket.timeout:
            stats.add(kind, 0, "still open after 120 s")
        s.close()
        return
    if kind == "never_fits":
        status, _, text = post(url, "/v1/chat/completions", {"model": SMOL, "messages": [{"role": "user", "content": "x"}], "n": 128, "max_tokens": 1})
    elif kind == "bad_wav":
        header = b"RIFF" + struct.pack("<I", 1036) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, rng.choice([0, 1, 4_000_000]), 2, 2, 16) + b"data" + struct.pack("<I", 1000) + bytes(1000)
        data, headers = multipart([("model", WHISPER)], "x.wav", header)
        status, _, text = post(url, "/v1/audio/transcriptions", data, headers)
    else:
        status, _, text = post(url, "/v1/moderations", {"input": [""] * 300})
    stats.add(kind, 200 if status == 400 else (status if status >= 500 else 1000 + status), text.decode(errors="replace"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--pid", type=int, required=True, help="the hearth process, for its RSS")
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--clients", type=int, default=6)
    ap.add_argument("--rss-margin", type=float, default=0.25, help="allowed growth over the warm-up RSS (fraction)")
    args = ap.parse_args()
    stats, audio = Stats(), wav(4)
    # Warm-up: one of each, so lazily built state (caches, pools) exists before the baseline.
    rng = random.Random(0)
    for _ in range(10):
        well_formed(args.url, stats, rng, audio)
    time.sleep(2)
    baseline = rss_mib(args.pid)
    deadline = time.time() + args.minutes * 60

    def client(seed):
        rng = random.Random(seed)
        while time.time() < deadline:
            if rng.random() < 0.3:
                abusive(args.url, stats, rng)
            else:
                well_formed(args.url, stats, rng, audio)

    threads = [threading.Thread(target=client, args=(i + 1,)) for i in range(args.clients)]
    for t in threads:
        t.start()
    peak = baseline
    while any(t.is_alive() for t in threads):
        time.sleep(5)
        peak = max(peak, rss_mib(args.pid))
    time.sleep(10)  # let abandoned work finish
    end = rss_mib(args.pid)
    for (kind, status), n in sorted(stats.counts.items()):
        print(f"{kind:16} {status:5} {n}")
    print(f"RSS after warm-up {baseline:.0f} MiB, peak {peak:.0f} MiB, end {end:.0f} MiB (margin {args.rss_margin:.0%})")
    bad = [k for k in stats.counts if k[1] >= 1000]
    failed = stats.problems or bad or end > baseline * (1 + args.rss_margin)
    for p in stats.problems[:20]:
        print("problem:", p)
    for k in bad:
        print("unexpected status:", k[0], k[1] - 1000)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
