"""Load on one server: N concurrent device clients for a fixed time, each sending real requests.

Starts ``aiflow serve-pair server`` on an export (embedded engine unless ``--engine``), then N
client threads, each with its own tritonclient connection, send the pair's framed wire tensors in
a loop until the time is up (every loop bounded by the deadline). The device halves run once
up front (the load is on the server). Prints requests, errors, throughput and p50/p90/p99.

    .venv/bin/python benchmarks/serve_load.py DIR [--clients 16] [--seconds 30] [--engine embedded]
"""

from __future__ import annotations

import argparse
import datetime
import platform
import threading
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("export", type=Path)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--engine", default="embedded")
    args = ap.parse_args()

    from aiflow_cli.serve.device.client import V2Client
    from aiflow_cli.serve.device.pairs import bench_inputs, load_device_pairs
    from aiflow_cli.serve.launch import ServerProcess
    from aiflow_cli.serve.launch import free_port as _free_port

    _, pairs = load_device_pairs(args.export, threads=1)
    pair = next(iter(pairs.values()))
    inputs, _, source = bench_inputs(16)
    framed = [pair.encode(x)[0] for x in inputs]
    server = ServerProcess(args.export, _free_port(), args.engine)
    server.wait_ready()
    latencies: list[list[float]] = [[] for _ in range(args.clients)]
    errors: list[list[str]] = [[] for _ in range(args.clients)]
    deadline = time.monotonic() + args.seconds

    def client(k: int) -> None:
        v2 = V2Client(server.url, retries=0)
        i = 0
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            result, _, error = v2.infer(pair.model, framed[(k + i) % len(framed)], [pair.output], f"{k}-{i}")
            latencies[k].append((time.perf_counter() - t0) * 1e3)
            if result is None:
                errors[k].append(error or "failed")
            i += 1
        v2.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(args.clients)]
    t0 = time.monotonic()
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(args.seconds + 60)
    finally:
        server.stop()
    wall = time.monotonic() - t0
    all_ms = np.array([x for lat in latencies for x in lat])
    n_err = sum(len(e) for e in errors)
    print(f"# serve-pair load: {args.clients} clients x {args.seconds:g} s on {pair.model} ({args.engine}); "
          f"{platform.processor() or platform.machine()}, {datetime.date.today().isoformat()}; inputs: {source}")
    print()
    print("| clients | seconds | requests | errors | requests/s | p50 ms | p90 ms | p99 ms |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| {args.clients} | {wall:.1f} | {len(all_ms)} | {n_err} | {len(all_ms) / wall:.1f} | "
          f"{np.percentile(all_ms, 50):.1f} | {np.percentile(all_ms, 90):.1f} | {np.percentile(all_ms, 99):.1f} |")
    if n_err:
        print("\nfirst errors:", sorted({e for errs in errors for e in errs})[:3])
    raise SystemExit(1 if n_err else 0)


if __name__ == "__main__":
    main()
