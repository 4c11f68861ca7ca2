"""``python -m diversity_callbacks``: the ``diversity-callbacks`` command line."""

import sys

from diversity_callbacks.cli import main

sys.exit(main())
