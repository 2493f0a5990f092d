"""Extraction: one forward pass per image, every block recorded into a dump.
:mod:`.hooks` holds the forward hooks and their recorder, :mod:`.reductions` the
on-device reductions they call (Gram matrices, sink statistics, object pooling),
:mod:`.fused` the one-pass Triton attention reductions, and :mod:`.run` the options,
the image order, the pass loop with its writer, the warm-up and the heap settings.
Callers import the module they use (``from vitscope.extract import run``).
"""
