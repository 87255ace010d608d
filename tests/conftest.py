import sys
from pathlib import Path

# Let test modules import helpers from each other (e.g. `from test_train import blobs`).
sys.path.insert(0, str(Path(__file__).parent))
