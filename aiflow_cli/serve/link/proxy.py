"""An emulated link: a TCP proxy that gives each direction a rate and a one-way delay.

The kernel here has no ``netem``, so aiflow shapes the link itself, as a proxy between any client
and any server (it knows nothing of HTTP). Each direction is a store-and-forward pipe: bytes are
serialised at the current rate, one after the other (a queue shared by every connection in that
direction, as on one radio link), then delivered ``delay`` later::

    start = max(arrival, link busy until);  busy until = start + bytes / rate(start)
    delivered at busy until + delay

The rate may follow a trace over time (CSV lines ``seconds,rate``, e.g. ``10,0.25MB/s``; the last
rate holds). Memory is bounded: at most ``MAX_IN_FLIGHT`` bytes wait in a direction.

A chunk waits for its delivery time with ``asyncio.sleep``, so the loop keeps serving every other
connection meanwhile. The proxy's loop uses the ``select`` selector: epoll and poll take their
timeout in whole milliseconds and wake up to 1 ms late, which would add up to 1 ms to every
delivery; ``select`` takes microseconds (the proxy has a handful of sockets, far below its limit).
"""

from __future__ import annotations

import asyncio
import bisect
import csv
import io
import selectors
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from aiflow_cli.errors import ConfigError, InputError

__all__ = ["LinkShape", "read_trace", "LinkProxy", "start_link_thread", "link_loop"]

CHUNK = 16 * 1024
MAX_IN_FLIGHT = 8 * 2**20


@dataclass
class LinkShape:
    rate_bytes_per_s: float
    delay_ms: float = 0.0
    trace: list[tuple[float, float]] = field(default_factory=list)  # (seconds from start, bytes/s)

    def __post_init__(self) -> None:
        if not (self.rate_bytes_per_s > 0 and self.rate_bytes_per_s < float("inf")):
            raise InputError(f"link rate must be a finite positive number, got {self.rate_bytes_per_s}")
        if not (0 <= self.delay_ms < 60_000):
            raise InputError(f"link delay must be between 0 and 60 s, got {self.delay_ms} ms")

    def rate_at(self, seconds: float) -> float:
        if not self.trace:
            return self.rate_bytes_per_s
        i = bisect.bisect_right([t for t, _ in self.trace], seconds) - 1
        return self.trace[i][1] if i >= 0 else self.rate_bytes_per_s


def read_trace(path: Path) -> list[tuple[float, float]]:
    """``seconds,rate`` lines (rate as 0.5MB/s, 2Mbit/s, or bytes/s); one clear error per bad line."""
    from aiflow_cli.schemas.loading import read_text
    from aiflow_cli.split.links import parse_rate

    text = read_text(Path(path), "rate trace")
    points: list[tuple[float, float]] = []
    for n, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or row[0].strip().startswith("#") or row[0].strip().lower() in ("seconds", "time"):
            continue
        if len(row) != 2:
            raise ConfigError(f"{path}: line {n}: expected 'seconds,rate'", "for example: 10,0.25MB/s")
        try:
            seconds = float(row[0])
        except ValueError:
            raise ConfigError(f"{path}: line {n}: '{row[0][:20]}' is not a time in seconds") from None
        rate_text = row[1].strip()
        try:
            rate = parse_rate(rate_text if not rate_text.replace(".", "", 1).isdigit() else f"{rate_text}B/s")
        except InputError as exc:
            raise ConfigError(f"{path}: line {n}: {exc.message}", exc.hint) from None
        if not (0 <= seconds < 1e7) or (points and seconds <= points[-1][0]):
            raise ConfigError(f"{path}: line {n}: times must start at 0 or later and increase")
        points.append((seconds, rate))
    if not points:
        raise ConfigError(f"{path}: no 'seconds,rate' lines", "for example: 0,2MB/s")
    return points


def link_loop() -> asyncio.AbstractEventLoop:
    """An event loop whose timers keep to about 0.1 ms (see the module's docstring)."""
    return asyncio.SelectorEventLoop(selectors.SelectSelector())


def run_on_link_loop(main: Any) -> None:
    """``asyncio.run(main)`` on a :func:`link_loop`: afterwards the connections still open are
    cancelled and finished, so nothing is left pending when the loop closes."""
    loop = link_loop()
    asyncio.set_event_loop(loop)

    async def finish() -> None:
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await loop.shutdown_asyncgens()

    try:
        loop.run_until_complete(main)
    finally:
        loop.run_until_complete(finish())
        asyncio.set_event_loop(None)
        loop.close()


class _Direction:
    """One direction of the link: the serialisation queue every connection shares. Times are
    ``time.monotonic()``, the clock asyncio's loop reads too."""

    def __init__(self, shape: LinkShape, t0: float) -> None:
        self.shape, self.t0, self.busy_until, self.bytes = shape, t0, 0.0, 0

    def restart(self, t0: float) -> None:
        """The trace's time 0 (the proxy starts serving)."""
        self.t0, self.busy_until = t0, 0.0

    def schedule(self, now: float, nbytes: int) -> float:
        start = max(now, self.busy_until)
        self.busy_until = start + nbytes / self.shape.rate_at(start - self.t0)
        self.bytes += nbytes
        return self.busy_until + self.shape.delay_ms / 1e3


class LinkProxy:
    """Listen on ``listen``, forward to ``target``, shaping both directions."""

    def __init__(self, listen: tuple[str, int], target: tuple[str, int], up: LinkShape, down: LinkShape) -> None:
        self.listen, self.target = listen, target
        self.up_shape, self.down_shape = up, down
        self.up, self.down = _Direction(up, time.monotonic()), _Direction(down, time.monotonic())
        self.server: asyncio.AbstractServer | None = None
        self.port: int | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        now = time.monotonic()
        self.up.restart(now)
        self.down.restart(now)
        try:
            self.server = await asyncio.start_server(self._connection, self.listen[0], self.listen[1])
        except OSError as exc:
            raise InputError(f"cannot listen on {self.listen[0]}:{self.listen[1]} ({exc.strerror or exc})",
                             "choose a free port with --listen") from None
        self.port = self.server.sockets[0].getsockname()[1]

    async def _connection(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.close()
            return
        try:
            await asyncio.gather(self._pipe(client_r, server_w, self.up), self._pipe(server_r, client_w, self.down),
                                 return_exceptions=True)
        except asyncio.CancelledError:  # the proxy is stopping: end quietly (asyncio logs a cancelled handler)
            for w in (client_w, server_w):
                w.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, direction: _Direction) -> None:
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue(maxsize=MAX_IN_FLIGHT // CHUNK)

        async def pump() -> None:
            try:
                while data := await reader.read(CHUNK):
                    await queue.put((direction.schedule(time.monotonic(), len(data)), data))
            except (ConnectionError, OSError):
                pass
            await queue.put(None)

        async def deliver() -> None:
            try:
                while (item := await queue.get()) is not None:
                    due, data = item
                    if (wait := due - time.monotonic()) > 0:
                        await asyncio.sleep(wait)
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                writer.close()

        await asyncio.gather(pump(), deliver())

    def run(self, on_start: Callable[[], None] | None = None) -> None:
        """Serve until interrupted, on a loop of its own (:func:`link_loop`); ``on_start`` once listening."""
        run_on_link_loop(self.serve_forever(on_start))

    async def serve_forever(self, on_start: Callable[[], None] | None = None) -> None:
        await self.start()
        if on_start is not None:
            on_start()
        if self.server is None:
            raise RuntimeError("the proxy did not start")
        async with self.server:
            await self.server.serve_forever()

    def stop(self) -> None:
        """Stop accepting and close (from any thread)."""
        if self.loop is not None and self.server is not None:
            self.loop.call_soon_threadsafe(self.server.close)

    @property
    def bytes_up(self) -> int:
        return self.up.bytes

    @property
    def bytes_down(self) -> int:
        return self.down.bytes


def start_link_thread(target: tuple[str, int], up: LinkShape, down: LinkShape, listen: tuple[str, int] = ("127.0.0.1", 0)
                      ) -> tuple[LinkProxy, threading.Thread]:
    """Run a proxy in a daemon thread with its own event loop (for benchmarks and tests)."""
    proxy = LinkProxy(listen, target, up, down)
    ready = threading.Event()

    def run() -> None:
        async def main() -> None:
            await proxy.start()
            ready.set()
            if proxy.server is not None:
                try:
                    await proxy.server.serve_forever()
                except asyncio.CancelledError:
                    pass

        run_on_link_loop(main())

    thread = threading.Thread(target=run, daemon=True, name="aiflow-link")
    thread.start()
    if not ready.wait(10):
        raise RuntimeError("the link proxy did not start")
    time.sleep(0.01)
    return proxy, thread
