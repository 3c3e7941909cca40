"""A step's MLflow run ends with the truth: FINISHED when the step finished, FAILED when it raised, KILLED
when SIGTERM (what Kubernetes and `timeout` send) or SIGINT stopped it; never RUNNING for ever."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
from mlflow import MlflowClient

STEP = """
import sys, time
from pathlib import Path
from videossl import tracking
from videossl.config import TrackingConfig

store, ready, how = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
with tracking.run(TrackingConfig(uri=store, artifacts=None, experiment="status"), "step") as active:
    ready.write_text(active.info.run_id)  # the run exists: the test may signal now
    if how == "raise":
        raise RuntimeError("the step failed")
    if how == "wait":
        for _ in range(600):  # a step at work, logging as it goes
            import mlflow
            mlflow.log_metric("beat", 1.0)
            time.sleep(0.1)
"""


@pytest.mark.parametrize("how, sig, status", [("finish", None, "FINISHED"), ("raise", None, "FAILED"),
                                              ("wait", signal.SIGTERM, "KILLED"), ("wait", signal.SIGINT, "KILLED")])
def test_the_run_ends_with_what_happened_to_the_step(how, sig, status, tmp_path):
    store = f"sqlite:///{tmp_path}/mlruns.db"
    ready = tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, "-c", STEP, store, str(ready), how], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        if sig is not None:
            deadline = time.monotonic() + 120  # a generous bound: the event is the file, not the time
            while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert ready.exists(), proc.communicate()[1][-2000:]
            proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert (proc.returncode == 0) == (how == "finish"), err[-2000:]
    run = MlflowClient(tracking_uri=store).get_run(ready.read_text())
    assert run.info.status == status
    assert run.info.end_time is not None


def test_an_interrupt_a_library_swallows_still_ends_the_run_killed(tmp_path):
    """A Ctrl-C caught inside a library call (the step then goes on to its end) still ends the run KILLED
    and stops the process with an error: the step did not finish as asked."""
    import os

    from videossl import tracking
    from videossl.config import TrackingConfig

    store = f"sqlite:///{tmp_path}/mlruns.db"
    # Ctrl-C as a foreground process has it: a job started in the background of a script (nohup ... &)
    # inherits SIGINT ignored, and Python then installs no handler of its own
    outside = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(tracking.Terminated, match="signal 2 arrived while the step ran"):
            with tracking.run(TrackingConfig(uri=store, artifacts=None, experiment="status"), "step") as active:
                try:  # what a library that catches KeyboardInterrupt does
                    os.kill(os.getpid(), signal.SIGINT)
                    time.sleep(5)  # the signal lands here, as an exception the "library" swallows
                except KeyboardInterrupt:
                    pass
        assert MlflowClient(tracking_uri=store).get_run(active.info.run_id).info.status == "KILLED"
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is given back
    finally:
        signal.signal(signal.SIGINT, outside)
