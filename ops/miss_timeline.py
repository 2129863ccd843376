"""Where a c=1 miss's time goes, stage by stage, from the kernel's own packet timestamps.

    sudo .venv/bin/python ops/miss_timeline.py [--requests 600]

Starts a fresh stack (redis-server, fake upstream, one worker, one front), sends misses one at a
time over one connection, and records every loopback packet with tcpdump (it needs tcpdump and
the right to capture: root or CAP_NET_RAW). A miss is eight messages in a row, each one stage's
end: the request reaching the front, the front's miss script reaching Redis, the job pushed to
the worker, the worker's upstream request, the upstream's answer, the worker's publication, the
answer pushed to the front, and the front's response. Each stage's time is the gap between two
of them: the receiving process's wake-up plus its work until it sends the next message (a write
may also run the next process before it returns, on the same core). Nothing in the gateway is
instrumented, so nothing is slowed but by tcpdump itself (a few µs per packet, the same for the
direct requests it is compared with).
"""

from __future__ import annotations

import argparse
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_agent.devstack import MASTER_KEY, DevStack

STAGES = (
    ("front, request in -> miss script out", "front"),
    ("Redis: the miss script -> job pushed to the worker", "redis"),
    ("worker: job in -> upstream request out", "worker"),
    ("upstream: request -> answer", "upstream"),
    ("worker: answer in -> publication out", "worker"),
    ("Redis: the publication -> answer pushed to the front", "redis"),
    ("front: answer in -> response out", "front"),
)
PACKET = re.compile(r"([\d.]+) IP 127\.0\.0\.1\.(\d+) > 127\.0\.0\.1\.(\d+): .*length (\d+)")


def send_requests(port: int, path: str, prefix: str, count: int) -> None:
    """`count` chat requests in a row on one connection, each in one write (as wrk sends them)."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(count):
            messages = [
                {"role": "system", "content": "You are a helpful assistant. " * 30},
                {"role": "user", "content": f"{prefix} {i} {time.time()}"},
            ]
            body = msgspec.json.encode({"model": "gpt-4o-mini", "messages": messages})
            head = (
                f"POST {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {MASTER_KEY}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            )
            sock.sendall(head.encode() + body)
            received = b""
            while b"\r\n\r\n" not in received or len(received.partition(b"\r\n\r\n")[2]) < _length(received):
                chunk = sock.recv(65536)
                if not chunk:
                    raise SystemExit("the connection closed mid-response")
                received += chunk


def _length(received: bytes) -> int:
    for line in received.partition(b"\r\n\r\n")[0].split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def packets(pcap: Path) -> Packets:
    """(time, source port, destination port) of every packet that carries data."""
    out = subprocess.run(["tcpdump", "-r", str(pcap), "-n", "-tt"], capture_output=True, text=True).stdout
    found = []
    for line in out.splitlines():
        match = PACKET.match(line)
        if match and int(match[4]) > 0:
            found.append((float(match[1]), int(match[2]), int(match[3])))
    return found


Packets = list[tuple[float, int, int]]


def direct_times(found: Packets, upstream: int, until: float) -> list[float]:
    """Request-to-response times of the requests sent straight to the upstream (before `until`)."""
    times, sent, client = [], 0.0, 0
    for t, src, dst in found:
        if t >= until:
            break
        if dst == upstream and not client:
            sent, client = t, src
        elif src == upstream and dst == client:
            times.append(t - sent)
            client = 0
    return times


def miss_stages(found: Packets, front: int, upstream: int, redis: int, since: float) -> list[list[float]]:
    """Per miss sent from `since` on, its eight message times (see the module's docstring)."""
    misses: list[list[float]] = []
    marks: list[float] = []
    client = sender = 0
    for t, src, dst in found:
        if t < since:
            continue
        if not marks:
            if dst == front:
                marks, client = [t], src
            continue
        step = len(marks)
        if step == 1 and dst == redis:  # the miss script
            marks.append(t)
            sender = src
        elif step == 2 and src == redis and dst != sender:  # the push to the worker
            marks.append(t)
        elif step == 3 and dst == upstream:
            marks.append(t)
        elif step == 4 and src == upstream:
            marks.append(t)
        elif step == 5 and dst == redis:  # the publication
            marks.append(t)
            sender = src
        elif step == 6 and src == redis and dst != sender:  # the push to the front
            marks.append(t)
        elif step == 7 and src == front and dst == client:
            misses.append([*marks, t])
            marks = []
    return misses


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=600)
    args = parser.parse_args()
    if shutil.which("tcpdump") is None:
        raise SystemExit("tcpdump is not installed (Debian: apt-get install tcpdump)")
    stack = DevStack(env_overrides={"LOG_LEVEL": "WARNING"})
    pcap = Path(tempfile.mkdtemp(prefix="edge-timeline-")) / "miss.pcap"
    try:
        stack.start_redis()
        stack.start_upstream()
        stack.start_worker("openai")
        front = stack.start_front(wait_path="/health/ready")
        assert stack.redis is not None
        ports = {
            "front": urlparse(front.url).port or 0,
            "upstream": urlparse(stack.upstream_url).port or 0,
            "redis": urlparse(stack.redis.url).port or 0,
        }
        send_requests(ports["front"], "/v1/chat/completions", "warm", 300)
        only_ours = " or ".join(f"tcp port {p}" for p in ports.values()).split()
        capture = subprocess.Popen(
            ["tcpdump", "-i", "lo", "-n", "-s", "96", "-B", "16384", "-w", str(pcap), *only_ours],
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(1)
        if capture.poll() is not None:
            raise SystemExit(f"tcpdump failed: {capture.stderr.read().strip() if capture.stderr else ''}")
        send_requests(ports["upstream"], "/v1/chat/completions", "direct", args.requests)
        misses_from = time.time()  # tcpdump's clock (-tt) is the wall clock
        send_requests(ports["front"], "/v1/chat/completions", "miss", args.requests)
        time.sleep(1)
        capture.terminate()
        capture.wait()
    finally:
        stack.stop()
    found = packets(pcap)
    direct = direct_times(found, ports["upstream"], misses_from)
    misses = miss_stages(found, ports["front"], ports["upstream"], ports["redis"], misses_from)
    if not misses or not direct:
        raise SystemExit("no complete miss was captured")
    print(f"{len(misses)} misses, {len(direct)} direct requests; p50 in µs")
    for i, (stage, _) in enumerate(STAGES):
        print(f"  {stage:54s} {statistics.median(m[i + 1] - m[i] for m in misses) * 1e6:6.0f}")
    total = statistics.median(m[-1] - m[0] for m in misses) * 1e6
    straight = statistics.median(direct) * 1e6
    print(f"  {'the miss, request in -> response out':54s} {total:6.0f}")
    print(f"  {'the upstream alone (a request sent straight to it)':54s} {straight:6.0f}")
    print(f"  {'added by the gateway':54s} {total - straight:6.0f}")


if __name__ == "__main__":
    main()
