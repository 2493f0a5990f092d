"""Checkpoint formats, one module per original release layout.

Importing this package registers every format in
:data:`vitscope.models.registry.FORMATS`.
"""

from . import (  # noqa: F401
    augreg_npz,
    beit,
    dino,
    mae,
    mocov3,
    openai_clip,
    timm_state,
)
