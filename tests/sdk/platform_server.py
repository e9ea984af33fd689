"""A `hearth serve` of its own for the platform tests (files, keys, usage,
rate limits, retention): its own state directory, chosen models and flags,
and the `hearth` CLI pointed at the same state."""
import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
BINARY = Path(os.environ.get("HEARTH_BIN", REPO / "target" / "release" / "hearth"))
READY_TIMEOUT_S = 240
SMOL = "smollm2-135m-instruct-q4_1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Hearth:
    def __init__(self, state_dir, models=(SMOL,), args=(), api_key=None, env=None):
        self.state_dir = Path(state_dir)
        self.models = models
        self.args = list(args)
        self.api_key = api_key
        self.env = {k: v for k, v in os.environ.items() if k not in ("HEARTH_API_KEYS", "HEARTH_API_KEYS_FILE", "HEARTH_CATALOG")}
        self.env.update(env or {})
        self.proc = None
        self.log = None

    def cli(self, *args) -> str:
        """Runs `hearth --state-dir DIR ARGS`; returns its stdout."""
        out = subprocess.run(
            [str(BINARY), "--state-dir", str(self.state_dir), *args], env=self.env, capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0, f"hearth {' '.join(args)}: {out.stderr}"
        return out.stdout

    def start(self):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile(prefix="hearth-platform-", suffix=".log", delete=False)
        cmd = [str(BINARY), "--state-dir", str(self.state_dir), "serve", "--port", str(self.port), "--models", ",".join(self.models)]
        if self.api_key:
            cmd += ["--api-key", self.api_key]
        self.proc = subprocess.Popen(cmd + self.args, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env)
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"hearth serve exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if httpx.get(f"{self.base}/v1/models", headers=headers, timeout=5).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError(f"hearth serve did not answer within {READY_TIMEOUT_S}s:\n{self.output()}")
            time.sleep(0.2)

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace") if self.log else ""

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.log:
            os.unlink(self.log.name)
            self.log = None
