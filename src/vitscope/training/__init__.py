"""Train the demo's small ViTs on its synthetic data, each taught differently.

One module per piece: :mod:`.settings` (the ``models.<alias>.train`` config
entry), :mod:`.augment` (batched, seeded image augmentations), one module per
objective (:mod:`.supervised` ``fs``, :mod:`.contrastive` ``contrastive``,
:mod:`.mae` ``mae``; ``random`` is the untrained initialisation), :mod:`.loop`
(optimizer, schedule, the training loop) and :mod:`.run` (data in, checkpoint
out, as the ``train`` rule calls it).

Every objective trains the same timm encoder that :func:`vitscope.models.registry.create`
builds for the model entry, starting from the same seeded initialisation as
``weights: random``; only the encoder is saved, as a plain timm state dict in
safetensors (format ``timm``), so the workflow loads it exactly like a
downloaded checkpoint.
"""
