"""``python -m diversity_callbacks``: the ``diversity-callbacks`` command line."""

import sys

from diversity_callbacks.cli import main

if __name__ == "__main__":  # importing this module (docs tools, doctest collection) runs nothing
    sys.exit(main())
