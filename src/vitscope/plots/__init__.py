"""Figures: functions take arrays and table rows and return matplotlib figures.
:mod:`.common` holds the shared helpers (palette, the Agg backend, :func:`~.common.save`
with its atomic, timestamp-free writes); one module per family of figures:
:mod:`.attention`, :mod:`.heads` (offsets, offset-local heads), :mod:`.features`,
:mod:`.tasks` and :mod:`.training`. Callers import the module they use.
"""
