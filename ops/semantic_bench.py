"""The semantic cache's own costs, in one process: embedding, the guard's features, the search,
and the memory the model and the index take.

    .venv/bin/python ops/semantic_bench.py [--vectors 10000,100000] [--embeds 300]

Needs the model (`edge-agent semantic fetch`). Each figure is a median over many runs; on a
shared machine, note the load average printed beside them.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from edge_workers.semantic.embedder import DIMENSIONS, Embedder
from edge_workers.semantic.guard import encode_features, features
from edge_workers.semantic.index import Entry, Index
from edge_workers.semantic.model_files import model_dir

PROMPTS = (
    "What is the capital of France?",
    "How do I reverse a list in Python?",
    "Give me a recipe for banana bread without eggs.",
    "Explain the difference between TCP and UDP in two sentences, with an example of each.",
)


def rss_mb() -> float:
    found = re.search(r"VmRSS:\s+(\d+)", Path("/proc/self/status").read_text())
    return int(found.group(1)) / 1024 if found else 0.0


def median_ms(run: Callable[[int], object], times: int) -> float:
    samples = []
    for i in range(times):
        started = time.perf_counter()
        run(i)
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vectors", default="10000,100000")
    parser.add_argument("--embeds", type=int, default=300)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f}")
    before = rss_mb()
    embedder = Embedder(model_dir())
    print(f"model loaded: +{rss_mb() - before:.0f} MB resident")
    for text in PROMPTS:
        embedder.embed(text)  # warm up
    embed = median_ms(lambda i: embedder.embed(PROMPTS[i % len(PROMPTS)]), args.embeds)
    print(f"embedding, short prompts: {embed:.2f} ms median")
    feats = median_ms(lambda i: features(PROMPTS[i % len(PROMPTS)]), 2000)
    print(f"guard features: {feats * 1000:.0f} µs median")
    rng = np.random.default_rng(0)
    for n in (int(v) for v in args.vectors.split(",")):
        index = Index(n)
        vectors = rng.standard_normal((n, DIMENSIONS)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        before = rss_mb()
        for i in range(n):
            entry = Entry(f"v1:ns:{i:064x}", encode_features(features(PROMPTS[i % 4])), 2**62, f"req_{i}")
            index.add(b"partition", vectors[i], entry)
        grown = rss_mb() - before
        query = vectors[n // 2].copy()
        search = median_ms(lambda _, index=index, query=query: index.search(b"partition", query, 0.9), 100)
        print(f"search, {n} vectors in one partition: {search:.3f} ms median; index +{grown:.0f} MB")


if __name__ == "__main__":
    main()
