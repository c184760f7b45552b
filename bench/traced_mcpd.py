"""mcpd under tracemalloc, for `bench/scale.py --profile`.

    python bench/traced_mcpd.py [mcpd's arguments]

Runs the daemon as `mcpd` would, tracing every Python allocation and timing
every garbage collection. On SIGUSR1 it writes the largest allocation sites
(by file, then by line) and the collections so far (count, total and longest
pause per generation, objects tracked) to the file named by
$MCPD_TRACEMALLOC_OUT (written whole, then renamed into place). Memory that C
code allocates itself (OpenSSL's, say) is not traced: compare the traced total
with VmRSS.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import time
import tracemalloc
from pathlib import Path
from types import FrameType
from typing import Any

TOP = 25
# Per generation: collections, seconds in them, the longest one.
gc_pauses = {generation: [0, 0.0, 0.0] for generation in range(3)}
_started = [0.0]


def timed_collections(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started[0] = time.perf_counter()
        return
    took = time.perf_counter() - _started[0]
    counts = gc_pauses[info["generation"]]
    counts[0] += 1
    counts[1] += took
    counts[2] = max(counts[2], took)


def dump(signum: int, frame: FrameType | None) -> None:
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__)]
    )
    lines = [f"traced total: {sum(s.size for s in snapshot.statistics('filename')) / 1024:.0f} KiB"]
    lines.append(f"objects tracked by the collector: {len(gc.get_objects())}")
    lines += [
        f"gc generation {generation}: {n} collections, {total * 1000:.0f} ms in all, "
        f"longest {longest * 1000:.1f} ms"
        for generation, (n, total, longest) in gc_pauses.items()
    ]
    for key in ("filename", "lineno"):
        lines.append(f"--- by {key}")
        lines += [str(stat) for stat in snapshot.statistics(key)[:TOP]]
    target = Path(os.environ["MCPD_TRACEMALLOC_OUT"])
    partial = target.with_suffix(".partial")
    partial.write_text("\n".join(lines) + "\n")
    partial.rename(target)


if __name__ == "__main__":
    tracemalloc.start()
    gc.callbacks.append(timed_collections)
    signal.signal(signal.SIGUSR1, dump)
    from mcpd.cli import main

    sys.exit(main())
