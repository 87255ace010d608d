import sys
from pathlib import Path

import pytest

# Let test modules import helpers from each other (e.g. `from test_train import blobs`).
sys.path.insert(0, str(Path(__file__).parent))


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (``-n 2``, README's test command), the tests that use the PostgreSQL
    server run on one worker, one after another: side by side, their workers' connection pools
    and MLflow servers exceed the server's max_connections (100 by default)."""
    for item in items:
        if {"pg_server", "pg_url"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.xdist_group("postgres"))
