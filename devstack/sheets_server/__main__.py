"""``python -m devstack.sheets_server``: run the stand-in (or ``dump``)."""

import sys

from devstack.sheets_server.server import main

sys.exit(main())
