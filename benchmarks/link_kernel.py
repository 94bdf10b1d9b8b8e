"""aiflow's link proxy against real kernel shaping (``tc tbf`` on a veth pair into a network namespace).

Needs root, ``ip netns`` and ``tc`` (this kernel has no ``netem``, so the comparison is on rate
alone: the proxy runs with no delay). For each rate and message size, a client sends the message
to a sink that answers one byte once it has all of it; the time from the first byte sent to the
answer is the transfer time, on a connection kept open (as a device keeps its connection to a
server). The same sink is reached once through ``tc tbf`` (in the namespace)
and once through aiflow's proxy (on loopback). Both shape the payload rate: tbf is set 1514/1448
higher, since it counts Ethernet, IP and TCP headers and the proxy counts what TCP delivers. Prints a table; exits 1 when any pair of medians
differs by more than 5%. Creates namespace ``aiflow-bench`` and removes it at the end.

    sudo .venv/bin/python benchmarks/link_kernel.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import datetime
import socket
import statistics
import subprocess
import sys
import time

NS, HOST_IF, NS_IF = "aiflow-bench", "aiflow-h", "aiflow-n"
FRAME, PAYLOAD = 1514, 1448  # Ethernet frame of a full TCP segment with timestamps, and its payload
HOST_IP, NS_IP = "10.77.0.1", "10.77.0.2"
SINK = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(8)
while True:
    c, _ = s.accept()
    with c:
        while True:
            head = b""
            while len(head) < 8:
                part = c.recv(8 - len(head))
                if not part:
                    break
                head += part
            if len(head) < 8:
                break
            need, got = int.from_bytes(head, "big"), 0
            while got < need:
                chunk = c.recv(min(65536, need - got))
                if not chunk:
                    break
                got += len(chunk)
            c.sendall(b"k")
"""


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


def setup(rate: float) -> None:
    teardown()
    sh("ip", "netns", "add", NS)
    sh("ip", "link", "add", HOST_IF, "type", "veth", "peer", "name", NS_IF)
    sh("ip", "link", "set", NS_IF, "netns", NS)
    sh("ip", "addr", "add", f"{HOST_IP}/24", "dev", HOST_IF)
    sh("ip", "link", "set", HOST_IF, "up")
    sh("ip", "netns", "exec", NS, "ip", "addr", "add", f"{NS_IP}/24", "dev", NS_IF)
    sh("ip", "netns", "exec", NS, "ip", "link", "set", NS_IF, "up")
    sh("ip", "netns", "exec", NS, "ip", "link", "set", "lo", "up")
    # tbf counts link-layer bytes; a full TCP segment carries 1448 payload bytes in a 1514-byte frame.
    # Shape the wire so that the *payload* rate is `rate`, as the proxy does.
    bits = f"{int(rate * 8 * FRAME / PAYLOAD)}bit"
    sh("tc", "qdisc", "add", "dev", HOST_IF, "root", "tbf", "rate", bits, "burst", "16kb", "latency", "400ms")
    sh("ip", "netns", "exec", NS, "tc", "qdisc", "add", "dev", NS_IF, "root", "tbf", "rate", bits, "burst", "16kb",
       "latency", "400ms")


def teardown() -> None:
    subprocess.run(["ip", "netns", "del", NS], capture_output=True)
    subprocess.run(["ip", "link", "del", HOST_IF], capture_output=True)


def transfer_ms(sock: socket.socket, size: int) -> float:
    """One message over an open connection (as a served device keeps its connection alive)."""
    payload = size.to_bytes(8, "big") + b"x" * size
    t0 = time.perf_counter()
    sock.sendall(payload)
    sock.recv(1)
    return (time.perf_counter() - t0) * 1e3


def median_ms(addr: tuple[str, int], size: int, repeats: int) -> float:
    with socket.create_connection(addr, timeout=60) as sock:
        transfer_ms(sock, 1000)  # warm the connection (and TCP's window) first
        return statistics.median(transfer_ms(sock, size) for _ in range(repeats))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rates", default="0.5,1,2", help="MB/s")
    ap.add_argument("--sizes", default="20000,100000,500000", help="bytes")
    args = ap.parse_args()
    from aiflow_cli.serve.link.proxy import LinkShape, start_link_thread

    rows, worst = [], 0.0
    local = subprocess.Popen([sys.executable, "-c", SINK, "127.0.0.1", "9901"])
    time.sleep(0.5)
    try:
        for rate_mb in map(float, args.rates.split(",")):
            rate = rate_mb * 1e6
            setup(rate)
            sink = subprocess.Popen(["ip", "netns", "exec", NS, sys.executable, "-c", SINK, NS_IP, "9902"])
            time.sleep(0.5)
            proxy, _ = start_link_thread(("127.0.0.1", 9901), LinkShape(rate, 0.0), LinkShape(rate, 0.0))
            try:
                for size in map(int, args.sizes.split(",")):
                    kernel = median_ms((NS_IP, 9902), size, args.repeats)
                    ours = median_ms(("127.0.0.1", proxy.port), size, args.repeats)
                    diff = (ours - kernel) / kernel
                    worst = max(worst, abs(diff))
                    rows.append((rate_mb, size, size / rate * 1e3, kernel, ours, diff))
            finally:
                proxy.stop()
                sink.terminate()
                teardown()
    finally:
        local.terminate()
    print(f"# link: aiflow proxy vs tc tbf (veth into a network namespace), {datetime.date.today().isoformat()}, "
          f"median of {args.repeats}")
    print()
    print("| rate | message | bytes / rate | tc tbf | aiflow proxy | difference |")
    print("|---:|---:|---:|---:|---:|---:|")
    for rate_mb, size, ideal, kernel, ours, diff in rows:
        print(f"| {rate_mb:g} MB/s | {size:,} B | {ideal:.1f} ms | {kernel:.1f} ms | {ours:.1f} ms | {diff * 100:+.1f}% |")
    print(f"\nworst difference {worst * 100:.1f}% (limit 5%)")
    raise SystemExit(0 if worst <= 0.05 else 1)


if __name__ == "__main__":
    main()
