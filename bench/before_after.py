"""Two hearth binaries on the same GGUF, alternated request by request: a refactor's
"behaviour and speed unchanged" check that needs no llama.cpp. Reuses bench.py's client.

  python3 bench/before_after.py --before OLD_BINARY [--after target/release/hearth]

Prints one row per measurement (best and median of --reps, each binary) and the
after/before ratio of the medians.
"""
import argparse
import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import TEXT, Server, decode_rate, load_avg, log, stream_completion  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", required=True)
    ap.add_argument("--after", default="target/release/hearth")
    ap.add_argument("--hearth-home", default=os.environ.get("HEARTH_HOME", "/tmp/hearth-home"))
    ap.add_argument("--models", default="smollm2-135m-instruct-q4_1,qwen2.5-coder-0.5b-instruct-q4_k_m")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--decode-tokens", type=int, default=96)
    ap.add_argument("--port", type=int, default=18580)
    args = ap.parse_args()
    env = dict(os.environ, HEARTH_HOME=args.hearth_home, RAYON_NUM_THREADS=str(args.threads))
    # About 500 prompt tokens on both models' tokenizers; identical text for both binaries.
    long_prompt = TEXT * 5
    print(f"load average at start: {' '.join(load_avg())}")
    print("| model | measurement | before (best / median) | after (best / median) | after/before (medians) |")
    print("|---|---|---|---|---|")
    for model in args.models.split(","):
        servers = [
            # Each its own state directory: the binaries' database schemas may differ.
            Server(name, [binary, "--state-dir", tempfile.mkdtemp(prefix=f"hearth-{name}-"), "serve", "--port", str(port), "--models", model, "--max-batch", "16"], port, env)
            for name, binary, port in [("before", args.before, args.port), ("after", args.after, args.port + 1)]
        ]
        try:
            rows = {
                "decode, short prompt tok/s": lambda s: decode_rate(*stream_completion(s.port, model, "The history of computing", args.decode_tokens, [])),
                "decode at ~500 context tok/s": lambda s: decode_rate(*stream_completion(s.port, model, long_prompt, args.decode_tokens, [])),
                # A varying first word defeats the prefix cache: this is prefill.
                "TTFT ~500-token prompt s": lambda s: (lambda t0, times: times[0] - t0)(*stream_completion(s.port, model, f"{os.urandom(4).hex()} {long_prompt}", 1, [])),
            }
            for label, fn in rows.items():
                vals = {s.name: [] for s in servers}
                for rep in range(args.reps):
                    # Alternate which goes first, so neither always runs on a warmer machine.
                    for s in servers if rep % 2 == 0 else servers[::-1]:
                        vals[s.name].append(fn(s))
                best = max if label.endswith("tok/s") else min
                b, a = vals["before"], vals["after"]
                log(f"{model} {label}: before {[round(v, 3) for v in b]} after {[round(v, 3) for v in a]}")
                ratio = statistics.median(a) / statistics.median(b)
                print(f"| {model} | {label} | {best(b):.3f} / {statistics.median(b):.3f} | {best(a):.3f} / {statistics.median(a):.3f} | {ratio:.3f} |", flush=True)
        finally:
            for s in servers:
                s.stop()
    print(f"load average at end: {' '.join(load_avg())}")


if __name__ == "__main__":
    main()
