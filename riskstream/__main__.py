"""`python -m riskstream` is the `riskstream` command."""

import sys

from riskstream.command import main

sys.exit(main())
