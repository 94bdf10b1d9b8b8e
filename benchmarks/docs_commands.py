"""Run every shell command README.md prints, as printed, scaled down where a flag allows.

    .venv/bin/python benchmarks/docs_commands.py [--only TEXT] [--keep DIR] [--json OUT]

Each ```bash block of README.md is split into commands (backslash continuations joined). The two
set-up commands (``bash scripts/setup.sh && ...``) are run without their set-up half (the venv is
this one). Commands end with ``&`` start in the background (servers, links) and are stopped when
the block's commands are done (so do ``serve-pair server`` and ``link``, which the README runs
in terminals of their own); a command that talks to ``--server HOST:PORT`` waits for that
port first. Everything runs in a scratch folder holding links to ``profiles/`` and ``recipes/``, so
``pairs/``, ``out/``, ``spec/`` land there. Scaling (the reason is printed beside each command):
fewer requests, prompts, tokens, betas and epochs; ``SCALE`` lists each rule.

Prints a table (command, exit code, seconds, what was scaled) and exits 1 when a command failed.
Run it before every stop; a command too heavy for the suite lives here instead of in tests.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 1800  # one command
# (pattern, replacement, why): applied in order to each command's text
SCALE = [
    (r"--requests \d+", "--requests 5", "5 requests per link"),
    (r"--count \d+", "--count 3", "3 requests"),
    (r"--beta [0-9e.,-]+", "--beta 1.5e-5", "one beta"),
    (r"(aiflow split bottleneck \S+)", r"\1 --epochs 1", "one epoch"),
    (r"(serve-pair bench \S+ --speculative)", r"\1 --ks 1,2 --prompts 2 --new-tokens 16", "k 1-2, two prompts, 16 tokens"),
    (r"(serve-pair generate \S+)", r"\1 --max-new-tokens 8", "8 tokens"),
    (r"(serve-pair bench (?!.*--speculative)(?!.*--requests)\S+)", r"\1 --requests 5", "5 requests per link"),
]
SKIP = {"python -m pytest": "the suite itself: CI runs it"}


@dataclass
class Outcome:
    command: str
    code: int
    seconds: float
    scaled: str
    tail: str


def commands(readme: Path) -> list[list[str]]:
    """The README's ```bash blocks, each a list of commands (continuations joined)."""
    blocks = re.findall(r"```bash\n(.*?)```", readme.read_text(), re.S)
    out = []
    for block in blocks:
        text = block.replace("\\\n", " ")
        lines = [re.sub(r"\s+#.*$", "", line).strip() for line in text.splitlines()]
        out.append([re.sub(r"\s+", " ", line) for line in lines if line and not line.startswith("#")])
    return out


def scale(command: str) -> tuple[str, str]:
    why = []
    for pattern, repl, reason in SCALE:
        new = re.sub(pattern, repl, command)
        if new != command:
            command, why = new, [*why, reason]
    if "scripts/setup.sh &&" in command:
        command, why = command.split("&&", 1)[1].strip(), [*why, "set-up skipped (this venv)"]
    return command, ", ".join(why)


def _wait_for_port(command: str, seconds: float = 180) -> None:
    match = re.search(r"--server (\S+):(\d+)", command)
    if not match:
        return
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex((match.group(1), int(match.group(2)))) == 0:
                return
        time.sleep(0.5)


def run_block(block: list[str], cwd: Path, env: dict[str, str]) -> list[Outcome]:
    background: list[subprocess.Popen] = []
    outcomes = []
    try:
        for raw in block:
            command, why = scale(raw)
            skipped = next((reason for text, reason in SKIP.items() if text in command), None)
            if skipped:
                outcomes.append(Outcome(raw, 0, 0.0, f"not run: {skipped}", ""))
                continue
            if command.endswith("&") or re.search(r"serve-pair (server|link) ", command):  # runs until stopped
                proc = subprocess.Popen(command.rstrip("& "), shell=True, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True)
                background.append(proc)
                outcomes.append(Outcome(raw, 0, 0.0, why + (", " if why else "") + "in the background", ""))
                continue
            _wait_for_port(command)
            t0 = time.perf_counter()
            try:
                done = subprocess.run(command, shell=True, cwd=cwd, env=env, capture_output=True, text=True,
                                      timeout=TIMEOUT_S)
                code, tail = done.returncode, (done.stderr or done.stdout)[-600:]
            except subprocess.TimeoutExpired:
                code, tail = 124, f"timed out after {TIMEOUT_S} s"
            outcomes.append(Outcome(raw, code, round(time.perf_counter() - t0, 1), why, tail))
            print(f"[{code}] {time.perf_counter() - t0:6.1f}s  {command}", flush=True)
    finally:
        for proc in background:
            os.killpg(proc.pid, 15)
            proc.wait(10)
    return outcomes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="run only the blocks holding this text")
    parser.add_argument("--keep", type=Path, help="run in this folder (kept) instead of a temporary one")
    parser.add_argument("--json", type=Path, help="write the outcomes here")
    args = parser.parse_args()
    env = dict(os.environ)
    env["PATH"] = f"{REPO / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    with tempfile.TemporaryDirectory(prefix="aiflow-docs-") as tmp:
        cwd = args.keep or Path(tmp)
        cwd.mkdir(parents=True, exist_ok=True)
        for name in ("profiles", "recipes", "scripts", ".venv"):
            if not (cwd / name).exists():
                (cwd / name).symlink_to(REPO / name)
        outcomes: list[Outcome] = []
        for block in commands(REPO / "README.md"):
            if args.only and not any(args.only in c for c in block):
                continue
            outcomes += run_block(block, cwd, env)
    print("\n| command | exit | seconds | scaled |\n|---|---|---|---|")
    for o in outcomes:
        print(f"| `{shlex.quote(o.command)[:110]}` | {o.code} | {o.seconds:g} | {o.scaled or '-'} |")
    failed = [o for o in outcomes if o.code != 0]
    for o in failed:
        print(f"\nFAILED: {o.command}\n{o.tail}", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps([asdict(o) for o in outcomes], indent=1) + "\n")
    print(f"\n{len(outcomes) - len(failed)} of {len(outcomes)} commands exited 0")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
