"""`Role`: which of the two endpoints, the device (`local`) or the server (`remote`)."""

from __future__ import annotations

from typing import Literal

Role = Literal["local", "remote"]
