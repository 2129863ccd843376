import pytest


def pytest_collection_modifyitems(items):
    # Unit tests first: they fail fast and need no processes.
    items.sort(key=lambda item: "integration" in str(item.fspath))


@pytest.fixture
def anyio_backend():
    return "asyncio"
