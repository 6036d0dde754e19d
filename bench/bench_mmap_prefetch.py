"""CPU per IVF search of a persisted index: read into memory, mapped with faiss's default
prefetch threads, and mapped with them off (what nlp/index.py does), interleaved.

    .venv/bin/python -m bench.bench_mmap_prefetch [--items 100000] [--rounds 3]

The index is the shape serve persists (IndexIVFScalarQuantizer, float16, 512-d, inner
product), over clustered random unit vectors; each search is 2 query rows, k=50, nprobe 32,
as a page view's. CPU is the calling thread's (`time.thread_time`), so the prefetch
threads' own CPU is not even counted; minor page faults are the process's.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt

DIM = 512


def build(path: Path, n: int) -> npt.NDArray[np.float32]:
    """Write an IVF float16 index over n clustered unit vectors; return query rows."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((300, DIM)).astype(np.float32)
    x = (centres[rng.integers(0, 300, n)] + 0.5 * rng.standard_normal((n, DIM))
         ).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    quantizer: Any = faiss.IndexFlatIP(DIM)
    index: Any = faiss.IndexIVFScalarQuantizer(quantizer, DIM, max(16, int(4 * n ** 0.5)),
                                               faiss.ScalarQuantizer.QT_fp16,
                                               faiss.METRIC_INNER_PRODUCT)
    index.train(x[: min(n, 50_000)])
    index.add(x)
    faiss.write_index(index, str(path))
    q: npt.NDArray[np.float32] = x[rng.integers(0, n, 400)] + np.float32(0.1)
    return q


def cpu_per_search(index: Any, q: npt.NDArray[np.float32], searches: int = 150
                   ) -> tuple[float, int]:
    """Return (ms of this thread's CPU per search, minor page faults in all)."""
    params = faiss.SearchParametersIVF()
    params.nprobe = 32
    for i in range(20):
        index.search(q[i : i + 2], 50, params=params)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t0 = time.thread_time()
    for i in range(searches):
        index.search(q[i : i + 2], 50, params=params)
    took = (time.thread_time() - t0) / searches * 1000
    return took, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--items", type=int, default=100_000)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    faiss.omp_set_num_threads(1)  # as serve runs it
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ivf.faiss"
        q = build(path, args.items)
        read = faiss.read_index(str(path))
        mapped = faiss.read_index(str(path), faiss.IO_FLAG_MMAP)
        ivf: Any = faiss.extract_index_ivf(mapped)
        lists: Any = faiss.downcast_InvertedLists(ivf.invlists)
        default_threads = int(lists.prefetch_nthread)
        print(f"{args.items} items, {type(lists).__name__}, prefetch_nthread "
              f"{default_threads} by default")
        print("| round | read: ms CPU / search | mapped, prefetch on | mapped, prefetch off |")
        print("|---|---|---|---|")
        for r in range(args.rounds):
            cells = []
            for index, threads in ((read, None), (mapped, default_threads), (mapped, 0)):
                if threads is not None:
                    lists.prefetch_nthread = threads
                ms, faults = cpu_per_search(index, q)
                cells.append(f"{ms:.3f} ({faults} faults)")
            print(f"| {r + 1} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
