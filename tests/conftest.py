import sys
from pathlib import Path

import pytest

# Let test modules import helpers from each other (e.g. `from test_train import blobs`).
sys.path.insert(0, str(Path(__file__).parent))


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(config, items):
    """Groups for pytest-xdist (``-n 2``, README's test command, ``--dist loadgroup``):

    - the tests that use the PostgreSQL server run on one worker, one after another: side by
      side, their workers' connection pools and MLflow servers exceed the server's
      max_connections (100 by default);
    - the tests of a module that use one of its ``SHARED_FIXTURES`` (module-scoped fixtures that
      run a sweep) run on one worker, so that the sweep runs once, not once per worker.
    """
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        module = getattr(item, "module", None)
        if {"pg_server", "pg_url"} & names:
            item.add_marker(pytest.mark.xdist_group("postgres"))
        elif module is not None and set(getattr(module, "SHARED_FIXTURES", ())) & names:
            item.add_marker(pytest.mark.xdist_group(module.__name__))
