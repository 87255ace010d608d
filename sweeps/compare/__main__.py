"""`python -m sweeps.compare`: the `linear-compare` command."""
import sys

from .cli import main

sys.exit(main())
