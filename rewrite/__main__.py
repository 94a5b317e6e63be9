"""`python -m rewrite ...`: the command line (rewrite/cli)."""

import sys

from rewrite.cli import main

if __name__ == '__main__':
    sys.exit(main())
