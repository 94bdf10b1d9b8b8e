"""SIGINT and SIGTERM stop a command that is writing a folder within a second or so, and leave no
staging folder behind: the signal unwinds through ``staged_dir``, and a watchdog finishes the job
when a native call does not return in time."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import pytest

JOB = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from aiflow_cli.staging import stop_on_signals, staged_dir
    stop_on_signals()
    try:
        with staged_dir(Path(sys.argv[1]), force=False) as tmp:
            (tmp / "half.onnx").write_bytes(b"x" * 1000)
            print("ready", flush=True)
            if sys.argv[2] == "native":  # a long call that never returns to the interpreter in time
                import ctypes
                ctypes.CDLL(None).sleep.argtypes = [ctypes.c_uint]
                while True:
                    ctypes.CDLL(None).sleep(30)
            time.sleep(60)
    except KeyboardInterrupt:
        sys.exit(130)
""")


@pytest.mark.parametrize("work", ["python", "native"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_the_command_and_removes_its_staging_folder(tmp_path, sig, work):
    out = tmp_path / "pair"
    proc = subprocess.Popen([sys.executable, "-c", JOB, str(out), work], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".pair.tmp-")]
        sent = time.monotonic()
        proc.send_signal(sig)
        code = proc.wait(timeout=10)
        stopped_after = time.monotonic() - sent
    finally:
        proc.kill()
    assert code in (130, 128 + sig), code
    assert stopped_after < 5, stopped_after  # the watchdog's bound is 1 s; 5 leaves room for a loaded machine
    assert list(tmp_path.iterdir()) == [], "a staging folder was left behind"


def test_the_cli_installs_the_handlers(monkeypatch):
    from aiflow_cli.cli import main

    installed = {}
    monkeypatch.setattr(signal, "signal", lambda sig, handler: installed.setdefault(sig, handler))
    monkeypatch.setattr(main, "app", lambda: None)
    main.run()
    assert set(installed) == {signal.SIGINT, signal.SIGTERM}
