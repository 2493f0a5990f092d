"""Checkpoint formats, one module per original release layout.

Importing this package registers every format in
:data:`vitscope.models.FORMATS`.
"""

from . import timm_state  # noqa: F401
