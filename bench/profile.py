"""`python -m bench.profile`: a wall-clock profile of one service while
clients place orders. Starts the same stack as `python -m bench`, keeps
`--clients` kept-connection clients placing orders, and samples the chosen
service with py-spy (`--idle`: sleeping and waiting count, which is where
latency hides), then prints where the samples fell: inclusive and leaf frames,
with the place_order latency measured meanwhile.

    .venv/bin/python -m bench.profile --service order --seconds 20 --out /tmp/order.txt
"""
from __future__ import annotations

from shared.green import patch

patch()  # before every other import

import argparse  # noqa: E402
import contextlib  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402

import eventlet  # noqa: E402

from bench import saga  # noqa: E402
from bench.stats import distribution  # noqa: E402
from tests.chaos.harness import Infra  # noqa: E402

FRAME = re.compile(r"^(?P<func>.+?) \((?P<file>[^():]+)(?::\d+)?\)$")


def frame_key(frame: str) -> str:
    """`sendall (eventlet/greenio/base.py:123)` → `sendall (eventlet/greenio/base.py)`."""
    match = FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = match["file"]
    for marker in ("site-packages/", "/work/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{match['func']} ({path})"


def summarise(collapsed: str, top: int = 30) -> dict:
    """Inclusive and leaf sample counts per frame from py-spy's raw (collapsed) output."""
    inclusive: Counter = Counter()
    leaf: Counter = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [frame_key(f) for f in stack.split(";")[1:]]  # first: the process/thread
        for key in set(frames):
            inclusive[key] += n
        if frames:
            leaf[frames[-1]] += n
    pct = (lambda n: round(100 * n / total, 1)) if total else (lambda n: 0)
    return {"samples": total,
            "inclusive": [(pct(n), k) for k, n in inclusive.most_common(top)],
            "leaf": [(pct(n), k) for k, n in leaf.most_common(top)]}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.splitlines()[0])
    parser.add_argument("--service", default="order")
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--out", help="keep py-spy's collapsed stacks here")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args(argv)
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    # stdout carries the summary only: the harness's progress lines go to stderr.
    with contextlib.redirect_stdout(sys.stderr):
        latencies, summary = profile(args, spy)
    print(f"place_order while sampling ({args.clients} client(s)): {distribution(latencies)}")
    print(f"{summary['samples']} samples of {args.service}, wall clock (--idle)")
    print("\ninclusive % (frame on the stack)")
    for pct, key in summary["inclusive"]:
        print(f"  {pct:5.1f}  {key}")
    print("\nleaf % (frame running or waiting)")
    for pct, key in summary["leaf"]:
        print(f"  {pct:5.1f}  {key}")


def profile(args, spy: str) -> tuple[list[float], dict]:
    with tempfile.TemporaryDirectory(prefix="shop-profile-") as tmp:
        base = Path(tmp)
        infra = Infra.start(base, private_broker=False)
        try:
            suite = saga.Saga(infra, base)
            try:
                saga.one_client(suite, 30)  # warm: connections, read models, caches
                latencies: list[float] = []
                running = True

                def client() -> None:
                    rpc = suite.shop.rpc(timeout=30)
                    try:
                        while running:
                            latencies.append(suite.place(rpc))
                    finally:
                        rpc.close()

                threads = [eventlet.spawn(client) for _ in range(args.clients)]
                out = Path(args.out) if args.out else base / "profile.txt"
                pid = suite.shop.suite.procs[args.service].pid
                saga.log(f"py-spy --idle on {args.service} (pid {pid}) for {args.seconds} s")
                proc = subprocess.Popen([spy, "record", "--pid", str(pid), "--duration", str(args.seconds),
                                         "--idle", "--nonblocking", "--rate", str(args.rate),
                                         "--format", "raw", "--output", str(out)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                while proc.poll() is None:
                    eventlet.sleep(0.2)
                running = False
                for thread in threads:
                    thread.wait()
                if proc.returncode != 0:
                    sys.exit(f"py-spy failed: {proc.stderr.read().decode(errors='replace')[-800:]}")
                summary = summarise(out.read_text(), args.top)
            finally:
                suite.close()
        finally:
            infra.stop()
    return latencies, summary


if __name__ == "__main__":
    main()
