"""Where the models attend: attention metrics of the dumps (:mod:`.metrics`: distance,
CLS maps, AAAM, entropy), per-head summaries (:mod:`.heads`: offset-local heads, the
CLS-head choice), CLS-attention saliency against object masks (:mod:`.saliency`) and
the attention maps of exemplar images (:mod:`.exemplars`). Callers import the module
they use (``from vitscope.attention import metrics``); nothing is re-exported here.
"""
