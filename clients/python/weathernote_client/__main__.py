"""`python -m weathernote_client`: the `weathernote-client` command."""

import sys

from weathernote_client.cli import main

sys.exit(main())
