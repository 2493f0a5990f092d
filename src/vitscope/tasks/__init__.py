"""Downstream tasks per block (protocols.md, section 5), from the dumps only.

- :mod:`.knn`: weighted k-NN classification (DINO protocol).
- :mod:`.retrieval`: revisited Oxford/Paris mAP and mP@k.
- :mod:`.table`: the best block per model and task ("No single winner").
"""
