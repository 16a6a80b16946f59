"""``python -m langchain_disco.testing``: run the loopback server (see `server.main`)."""

from __future__ import annotations

import sys

from langchain_disco.testing.server import main

sys.exit(main())
