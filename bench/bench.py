"""hearth vs llama.cpp's OpenAI server on the same GGUF, same thread count, same client.

Both servers run side by side; every measurement alternates between them (hearth, then
llama.cpp, repeated), so load from other programs on the machine hits both alike.
Writes BENCHMARKS.md (or --out). Needs llama-cpp-python with its server extras in the
interpreter given by --llama-python. Run through bench/text.sh.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import http.client

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report import write_section  # noqa: E402

TEXT = (
    "The history of computing is a story of people trying to make machines do arithmetic "
    "faster than they could by hand. Early mechanical calculators used gears and levers; "
    "later, relays and vacuum tubes replaced them, and finally transistors made it possible "
    "to put millions of switches on a single chip. Each step brought new ideas about how "
    "programs should be written, how memory should be organised and how results should be "
    "checked. Today a phone holds more computing power than the machines that once filled "
    "whole buildings, and the same questions about speed, correctness and cost remain. "
)


def log(*a):
    print(*a, file=sys.stderr, flush=True)


class Tok:
    """llama.cpp's own tokenizer for the GGUF: builds prompts of an exact token length."""

    def __init__(self, gguf):
        from llama_cpp import Llama

        self.llm = Llama(model_path=gguf, vocab_only=True, verbose=False)

    def prompt(self, n_tokens):
        ids = []
        while len(ids) < n_tokens:
            ids += self.llm.tokenize(TEXT.encode(), add_bos=False)
        text = self.llm.detokenize(ids[:n_tokens]).decode("utf-8", "ignore")
        return text

    def count(self, text):
        return len(self.llm.tokenize(text.encode(), add_bos=False))

    def stop_ids(self):
        ids = {self.llm.token_eos()}
        for s in ["<|im_end|>", "<|endoftext|>", "<end_of_turn>", "<|eot_id|>"]:
            t = self.llm.tokenize(s.encode(), add_bos=False, special=True)
            if len(t) == 1:
                ids.add(t[0])
        return sorted(i for i in ids if i >= 0)


def stream_completion(port, model, prompt, max_tokens, ban):
    """One streamed /v1/completions request. Returns (start, [arrival time of each chunk])."""
    body = json.dumps({
        "model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
        "stream": True, "logit_bias": {str(i): -100 for i in ban},
    })
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    t0 = time.perf_counter()
    conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        raise RuntimeError(f"port {port}: HTTP {resp.status}: {resp.read()[:300]}")
    times = []
    buf = b""
    while True:
        chunk = resp.read1(65536)
        if not chunk:
            break
        now = time.perf_counter()
        buf += chunk
        while b"\n\n" in buf:
            event, buf = buf.split(b"\n\n", 1)
            for line in event.split(b"\n"):
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    continue
                obj = json.loads(data)
                ch = obj.get("choices") or []
                if ch and ch[0].get("text") is not None:
                    times.append(now)
    conn.close()
    return t0, times


class Server:
    def __init__(self, name, cmd, port, env=None):
        self.name, self.port = name, port
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                     stderr=open(f"/tmp/bench-{name}-{port}.log", "w"))
        deadline = time.time() + 300
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited; see /tmp/bench-{name}-{port}.log")
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                c.request("GET", "/v1/models")
                if c.getresponse().status == 200:
                    return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"{name} did not start")

    def peak_rss_mib(self):
        """Peak resident memory of the server and its children."""
        total = 0
        pids = [self.proc.pid]
        try:
            out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True)
            pids += [int(p) for p in out.stdout.split()]
        except OSError:
            pass
        for pid in pids:
            try:
                for line in open(f"/proc/{pid}/status"):
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1])
            except OSError:
                pass
        return total / 1024

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def decode_rate(t0, times):
    """Generated tokens per second after the first token (the decode phase)."""
    if len(times) < 3:
        return float("nan")
    return (len(times) - 1) / (times[-1] - times[0])


class Busy:
    """A process that keeps one core busy (a competing build, another server...)."""

    def __enter__(self):
        self.p = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(0.5)
        return self

    def __exit__(self, *a):
        self.p.kill()
        self.p.wait()


def load_avg():
    return open("/proc/loadavg").read().split()[:3]


def run_model(args, gguf, tok):
    ban = tok.stop_ids()
    hport, lport = args.port, args.port + 1
    env = dict(os.environ, HEARTH_HOME=args.hearth_home, RAYON_NUM_THREADS=str(args.threads))
    model_id = os.path.basename(gguf)[: -len(".gguf")]
    def llama_server(name, port, flash_attn):
        cfg = {
            "host": "127.0.0.1", "port": port, "interrupt_requests": False,
            "models": [{
                "model": gguf, "model_alias": model_id, "n_threads": args.threads,
                "n_threads_batch": args.threads, "n_ctx": 4096, "n_batch": 512,
                "flash_attn": flash_attn, "verbose": False,
            }],
        }
        cfg_file = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
        json.dump(cfg, cfg_file)
        cfg_file.close()
        cfg_files.append(cfg_file.name)
        return Server(name, [args.llama_python, "-m", "llama_cpp.server", "--config_file", cfg_file.name], port)

    cfg_files = []
    servers = [Server("hearth", [args.hearth, "serve", "--port", str(hport), "--models", model_id,
                                 "--max-batch", "16"], hport, env)]
    # llama.cpp at each flash-attention setting asked for; the report takes its best per row.
    for fa in LLAMA_SETTINGS[args.flash_attn]:
        servers.append(llama_server(f"llama.cpp fa={'on' if fa else 'off'}", lport + 3 * fa, fa))
    if args.hearth_baseline:
        servers.insert(1, Server("hearth-before", [args.hearth_baseline, "serve", "--port", str(hport + 2),
                                                   "--models", model_id, "--max-batch", "16"], hport + 2, env))
    res = {s.name: {} for s in servers}

    def each(label, fn):
        """Runs fn(server) alternately on both servers `reps` times; keeps the best value."""
        vals = {s.name: [] for s in servers}
        for _ in range(args.reps):
            for s in servers:
                v = fn(s)
                vals[s.name].append(v)
        for s in servers:
            best = max(vals[s.name]) if label.endswith("tok/s") else min(vals[s.name])
            res[s.name][label] = best
            log(f"  {model_id} {s.name:13} {label}: {best:.3f} (all: {[round(v, 3) for v in vals[s.name]]})")

    short = tok.prompt(8)
    p512 = tok.prompt(512)
    p2048 = tok.prompt(2048)
    itl = {s.name: [] for s in servers}

    def decode(prompt, n):
        def fn(s):
            t0, times = stream_completion(s.port, model_id, prompt, n, ban)
            itl[s.name] += [b - a for a, b in zip(times, times[1:])]
            return decode_rate(t0, times)
        return fn

    def ttft(prompt):
        def fn(s):
            # a varying first word defeats any prompt cache: this measures prefill
            t0, times = stream_completion(s.port, model_id, f"{time.time_ns()} " + prompt, 1, ban)
            return times[0] - t0
        return fn

    def aggregate(n_streams, n_tokens):
        def fn(s):
            out = [None] * n_streams

            def one(i):
                out[i] = stream_completion(s.port, model_id, f"Story {i}: " + short, n_tokens, ban)
            ts = [threading.Thread(target=one, args=(i,)) for i in range(n_streams)]
            t0 = time.perf_counter()
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            end = max(o[1][-1] for o in out)
            return sum(len(o[1]) for o in out) / (end - t0)
        return fn

    # warm up both (first request pays one-off costs)
    for s in servers:
        stream_completion(s.port, model_id, short, 8, ban)
    loads = [load_avg()]
    each("decode, empty context tok/s", decode(short, args.decode_tokens))
    each("decode at 512 context tok/s", decode(p512, args.decode_tokens))
    each("TTFT 512-token prompt s", ttft(p512))
    each("TTFT 2048-token prompt s", ttft(p2048))
    prefix_ttft = {}

    def shared_prefix(s):
        # A fresh 1,000-token prefix, then two requests that differ only after it.
        prefix = f"{time.time_ns()} " + tok.prompt(1000)
        first = stream_completion(s.port, model_id, prefix + " Question one: what is this about?", 1, ban)
        second = stream_completion(s.port, model_id, prefix + " Question two: who wrote it?", 1, ban)
        prefix_ttft[s.name] = (first[1][0] - first[0], second[1][0] - second[0])
        return prefix_ttft[s.name][1]
    each("TTFT, 1000-token shared prefix, 2nd request s", shared_prefix)
    for s in servers:
        res[s.name]["TTFT, 1000-token shared prefix, 1st request s"] = prefix_ttft[s.name][0]
    loads.append(load_avg())
    each("aggregate, 4 streams tok/s", aggregate(4, args.stream_tokens))
    each("aggregate, 16 streams tok/s", aggregate(16, args.stream_tokens))
    for s in servers:
        lat = sorted(itl[s.name])
        res[s.name]["inter-token p50 ms"] = 1000 * lat[len(lat) // 2]
        res[s.name]["inter-token p99 ms"] = 1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    with Busy():
        loads.append(load_avg())
        each("decode with a busy core tok/s", decode(short, args.decode_tokens))
    for s in servers:
        res[s.name]["peak RSS MiB"] = s.peak_rss_mib()
        s.stop()
    loads.append(load_avg())
    for f in cfg_files:
        os.unlink(f)
    res["prompt tokens"] = {512: tok.count(p512), 2048: tok.count(p2048)}
    res["load"] = loads
    return model_id, res


LLAMA_SETTINGS = {"off": [False], "on": [True], "both": [False, True]}


def lower_is_better(label):
    return label.endswith(" s") or label.endswith("ms") or label.endswith("MiB")


def best_llama(res, label):
    """llama.cpp's best value for a row over the flash-attention settings run, and which."""
    vals = [(v[label], name.split()[-1]) for name, v in res.items() if name.startswith("llama.cpp") and label in v]
    if not vals:
        return float("nan"), "?"
    return (min if lower_is_better(label) else max)(vals)


def ratio(label, h, l):
    if not l or not h:
        return float("nan")
    return l / h if lower_is_better(label) else h / l


def write_report(args, results, out):
    def sh(cmd):
        try:
            return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
        except OSError:
            return "?"
    cpu = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip()
    flags = sh("grep -m1 '^flags' /proc/cpuinfo")
    simd = [f for f in ["avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8"] if f" {f}" in flags]
    llama_ver = sh(f"{args.llama_python} -c 'import llama_cpp; print(llama_cpp.__version__)'")
    git = sh("git rev-parse --short HEAD")
    lines = [
        "## Text generation: hearth vs llama.cpp",
        "",
        f"Generated by `bash bench/text.sh` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        f"- machine: {cpu}, {os.cpu_count()} logical CPUs ({', '.join(simd)}), "
        f"{platform.system()} {platform.release()}",
        f"- hearth: git {git}; llama.cpp: llama-cpp-python {llama_ver} (`llama_cpp.server`, "
        f"interrupt_requests=false), run with flash attention {args.flash_attn}; "
        "each row takes llama.cpp's better setting (named in the row)",
        f"- threads: {args.threads} for both; each row is the best of {args.reps} runs, "
        "alternating hearth and llama.cpp; same streaming HTTP client (`/v1/completions`, "
        "greedy, end-of-sequence tokens banned by logit_bias so every run generates its full length)",
        f"- decode: {args.decode_tokens} generated tokens (rate after the first token); "
        f"aggregate: {args.stream_tokens} tokens per stream, all streams started at once",
        "- the busy-core row runs one extra process spinning on a core during single-stream decode",
        "- the machine is shared: load averages (1/5/15 min) during each model's run are listed; "
        "compare ratios, not absolute figures",
        "",
        "ratio = hearth / llama.cpp for throughput; llama.cpp / hearth for times and memory "
        "(above 1 = hearth better).",
        "",
    ]
    for model_id, res in results:
        h, b = res["hearth"], res.get("hearth-before")
        lines += [f"### {model_id}", "",
                  f"prompt lengths (llama.cpp tokenizer): {res['prompt tokens']}; "
                  f"load averages: {' → '.join('/'.join(x) for x in res['load'])}", ""]
        if b:
            lines += ["| test | hearth | llama.cpp (best) | ratio | hearth before | ratio before |",
                      "|---|---|---|---|---|---|"]
        else:
            lines += ["| test | hearth | llama.cpp (best) | ratio |", "|---|---|---|---|"]
        for label in h:
            lv, setting = best_llama(res, label)
            row = (f"| {label} | {h[label]:.3f} | {lv:.3f} ({setting}) | "
                   f"{ratio(label, h[label], lv):.2f}× |")
            if b:
                row += f" {b[label]:.3f} | {ratio(label, b[label], lv):.2f}× |"
            lines.append(row)
        lines.append("")
    write_section(out, "text", "\n".join(lines))
    log(f"wrote {out}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hearth", default="target/release/hearth")
    ap.add_argument("--hearth-baseline", help="an older hearth binary to measure alongside (before/after)")
    ap.add_argument("--hearth-home", default=os.environ.get("HEARTH_HOME", "/tmp/hearth-home"))
    ap.add_argument("--llama-python", default=sys.executable)
    ap.add_argument("--models", default="smollm2-135m-instruct-q4_1,qwen2.5-coder-0.5b-instruct-q4_k_m")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--decode-tokens", type=int, default=96)
    ap.add_argument("--stream-tokens", type=int, default=32)
    ap.add_argument("--flash-attn", choices=sorted(LLAMA_SETTINGS), default="both",
                    help="llama.cpp's flash-attention setting(s) to run")
    ap.add_argument("--port", type=int, default=18480)
    ap.add_argument("--out", default="BENCHMARKS.md")
    args = ap.parse_args()
    results = []
    for m in args.models.split(","):
        gguf = os.path.join(args.hearth_home, "models", m + ".gguf")
        log(f"== {m}")
        results.append(run_model(args, gguf, Tok(gguf)))
        json.dump(results, open(args.out + ".json", "w"), indent=1, default=str)
    write_report(args, results, args.out)


if __name__ == "__main__":
    main()
