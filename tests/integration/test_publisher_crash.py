"""kill -9 of a publishing process: what it accepted still reaches the queue."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT
from tests.integration.support import declare_check_queue, drain, seq_of

pytestmark = pytest.mark.integration
N = 20_000


def _start(settings: str, accepted: str, rate: int) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.Popen(
        [sys.executable, "-m", "tests.integration.publish_proc", settings, str(N), accepted,
         str(rate)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_kill_9_mid_stream_loses_nothing(prefix, tmp_path, write_settings):
    queue = declare_check_queue(prefix)
    settings = write_settings()
    accepted = str(tmp_path / "accepted.txt")

    proc = _start(settings, accepted, rate=5000)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(2.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    with open(accepted) as f:
        first_run = {int(x) for x in f if x.strip()}
    assert 0 < len(first_run) < N, "the kill did not land mid-stream"

    # The restarted process replays its buffer and publishes what was never accepted.
    proc = _start(settings, accepted, rate=20000)
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, out[-3000:]
    assert out.strip().endswith("done")

    seqs = [seq_of(body) for body, _ in drain(queue)]
    missing = first_run - set(seqs)
    assert not missing, f"{len(missing)} accepted message(s) lost by the kill, e.g. {sorted(missing)[:10]}"
    assert set(seqs) == set(range(N))
