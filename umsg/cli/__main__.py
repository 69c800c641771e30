"""`python -m umsg.cli`: the same as the `umsg` command."""

import sys

from umsg.cli.main import main

sys.exit(main())
