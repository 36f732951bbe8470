import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from selrope.experiments.parallel import available_cpus, run_parallel


def test_results_come_back_in_job_order_and_workers_split_the_cores():
    jobs = [(str, {"object": i}) for i in range(4)] + [(torch.get_num_threads, {})] * 2
    workers = min(2, available_cpus())
    results = run_parallel(jobs, max_workers=workers)  # one spawned pool: imports cost seconds
    assert results[:4] == ["0", "1", "2", "3"]
    expected_threads = max(1, available_cpus() // workers) if workers > 1 else None
    if expected_threads is not None:
        assert results[4:] == [expected_threads] * 2


def test_one_worker_runs_inline_in_order():
    jobs = [(str, {"object": i}) for i in range(5)]
    assert run_parallel(jobs, max_workers=1) == ["0", "1", "2", "3", "4"]
    assert run_parallel([]) == []


WORKER_SCRIPT = """
import os, sys, time
from selrope.experiments.parallel import run_parallel

def job(path):
    with open(path + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.replace(path + ".tmp", path)
    time.sleep(120)

if __name__ == "__main__":
    run_parallel([(job, {"path": p}) for p in sys.argv[1:]], max_workers=2)
"""


def _running(pid: int) -> bool:
    """Whether pid is a live process (a zombie awaiting its reaper counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads process states from /proc")
def test_workers_end_when_the_parent_is_killed(tmp_path):
    script = tmp_path / "grid.py"
    script.write_text(WORKER_SCRIPT)
    pid_files = [tmp_path / "a.pid", tmp_path / "b.pid"]
    parent = subprocess.Popen([sys.executable, str(script), *map(str, pid_files)])
    try:
        deadline = time.monotonic() + 120
        while not all(p.exists() for p in pid_files):
            assert time.monotonic() < deadline, "the workers never started"
            assert parent.poll() is None, "the parent exited early"
            time.sleep(0.2)
        workers = [int(p.read_text()) for p in pid_files]
        assert all(_running(pid) for pid in workers)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 15
        while any(_running(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_running(pid) for pid in workers), "orphaned workers kept running"
    finally:
        parent.kill()
        for pid_file in pid_files:
            if pid_file.exists() and _running(int(pid_file.read_text())):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
