"""all-MiniLM-L6-v2 on CPU: the `tokenizers` package and onnxruntime, no torch.

≈ 2.5-3 ms per short message on one core (fp32). A worker runs it in one thread of its own
(`edge_workers.semantic.cache`), never on its event loop; onnxruntime releases the GIL while it
computes. Loaded only where a semantic cache is configured (≈ 200 MB resident with it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edge_workers.semantic.model_files import MODEL, verify

# sentence-transformers' max_seq_length for this model: longer messages are not eligible
# (their tail would not count in the vector).
MAX_TOKENS = 256
DIMENSIONS = 384


def load_tokenizer(path: Path) -> Any:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_padding()  # the file pads to 128: one message needs no padding
    tokenizer.enable_truncation(MAX_TOKENS)
    return tokenizer


class Embedder:
    def __init__(self, directory: Path, threads: int = 1) -> None:
        import onnxruntime

        verify(directory)
        self.tokenizer = load_tokenizer(directory / "tokenizer.json")
        options = onnxruntime.SessionOptions()
        # One thread: the machine's other cores serve the worker's loop and other processes.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = onnxruntime.InferenceSession(
            str(directory / MODEL), options, providers=["CPUExecutionProvider"]
        )

    def embed(self, text: str) -> np.ndarray | None:
        """The unit vector of `text`; None when it is longer than the model reads."""
        encoding = self.tokenizer.encode(text)
        if encoding.overflowing:
            return None
        ids = np.array([encoding.ids], dtype=np.int64)
        mask = np.array([encoding.attention_mask], dtype=np.int64)
        vector: np.ndarray = self.session.run(None, {"input_ids": ids, "attention_mask": mask})[0][0]
        return vector
