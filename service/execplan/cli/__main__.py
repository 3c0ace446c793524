"""`python -m execplan.cli ...` behaves like the `execplan` script."""

import sys

from execplan.cli import main

sys.exit(main())
