"""DAVIS label propagation: J&F evaluation and the propagation step (:mod:`.evaluation`),
the run over a sequence that writes the propagated masks (:mod:`.propagation`), and the
dense features of every block from a model's own forward pass (:mod:`.dense`).
"""
