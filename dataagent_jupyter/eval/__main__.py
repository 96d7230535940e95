"""Entry point of ``python -m dataagent_jupyter.eval``."""

import sys

from .cli import main

sys.exit(main())
