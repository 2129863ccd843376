"""The real model (all-MiniLM-L6-v2, fp32 ONNX) on the labelled set: no near miss is ever served;
the paraphrase hit rate is reported (and held above a floor, so a regression shows)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from edge_workers.semantic.embedder import Embedder
from edge_workers.semantic.guard import agree, features
from edge_workers.semantic.model_files import check_graph
from shared.semantic_config import SemanticSettings

PAIRS = yaml.safe_load((Path(__file__).parents[1] / "data" / "semantic_pairs.yaml").read_text())
THRESHOLD = SemanticSettings().threshold


@pytest.fixture(scope="module")
def embedder(semantic_model_dir: Path) -> Embedder:
    return Embedder(semantic_model_dir)


def _served(embedder: Embedder, cached: str, asked: str) -> tuple[bool, float]:
    """Whether the cache would serve `cached`'s answer to `asked`, and their similarity."""
    a, b = embedder.embed(cached), embedder.embed(asked)
    assert a is not None and b is not None
    similarity = float(a @ b)
    return similarity >= THRESHOLD and agree(features(cached), features(asked)), similarity


def test_the_labelled_set_is_big_enough() -> None:
    assert len(PAIRS["paraphrase"]) >= 40 and len(PAIRS["near_miss"]) >= 40


def test_the_onnx_graph_matches_the_numpy_reference(semantic_model_dir: Path) -> None:
    model = (semantic_model_dir / "model.onnx").read_bytes()
    assert check_graph(model, semantic_model_dir) < 1e-5


def test_vectors_are_unit_length_and_deterministic(embedder: Embedder) -> None:
    v = embedder.embed("What is the capital of France?")
    assert v is not None and v.shape == (384,) and v.dtype == np.float32
    assert abs(float(np.linalg.norm(v)) - 1) < 1e-5
    assert np.array_equal(v, embedder.embed("What is the capital of France?"))


def test_messages_longer_than_the_model_reads_are_not_embedded(embedder: Embedder) -> None:
    assert embedder.embed("word " * 300) is None


def test_no_near_miss_is_ever_served(embedder: Embedder) -> None:
    served = [(a, b, s) for a, b in PAIRS["near_miss"] for ok, s in [_served(embedder, a, b)] if ok]
    served += [(b, a, s) for a, b in PAIRS["near_miss"] for ok, s in [_served(embedder, b, a)] if ok]
    assert served == []


def test_the_threshold_alone_would_serve_near_misses(embedder: Embedder) -> None:
    """Why the guard exists: most of these near misses are above the threshold."""
    above = [a for a, b in PAIRS["near_miss"] if _served(embedder, a, b)[1] >= THRESHOLD]
    assert len(above) >= len(PAIRS["near_miss"]) // 2


def test_paraphrase_hit_rate(embedder: Embedder, capsys: pytest.CaptureFixture[str]) -> None:
    hits = sum(_served(embedder, a, b)[0] for a, b in PAIRS["paraphrase"])
    rate = hits / len(PAIRS["paraphrase"])
    with capsys.disabled():
        print(f"\nsemantic cache: {hits}/{len(PAIRS['paraphrase'])} paraphrases served ({rate:.0%})")
    assert rate >= 0.6
