"""`python -m cebench ...` is the `cebench` command."""

import sys

from cebench.cli import main

sys.exit(main())
