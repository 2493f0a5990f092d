"""Downstream tasks per block (protocols.md, section 5).

- :mod:`.knn`: weighted k-NN classification (DINO protocol).
- :mod:`.retrieval`: revisited Oxford/Paris mAP and mP@k.
- :mod:`.spair`: SPair-71k keypoint transfer and PCK (pure); :mod:`.spair_data` reads the
  official layout and chooses the pairs; :mod:`.spair_run` runs a model for dense features
  of every block (SPair is the one task that needs no dump).
- :mod:`.table`: the best block per model and task ("No single winner").
"""
