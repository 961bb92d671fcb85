"""`python -m weathernote.topology up|status|down`."""

import sys

from weathernote.topology.cli import main

sys.exit(main())
