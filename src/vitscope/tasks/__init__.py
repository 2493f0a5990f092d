"""Downstream tasks per block (docs/protocols.md#downstream-tasks).

- :mod:`.knn`: weighted k-NN classification (DINO protocol).
- :mod:`.retrieval`: revisited Oxford/Paris mAP and mP@k.
- :mod:`.spair`: SPair-71k keypoint transfer and PCK (pure, :mod:`.spair.metric`);
  :mod:`.spair.data` reads the official layout and chooses the pairs; :mod:`.spair.run`
  runs a model for dense features of every block (SPair is the one task that needs no dump).
- :mod:`.davis`: DAVIS label propagation (:mod:`.davis.evaluation`, :mod:`.davis.propagation`,
  :mod:`.davis.dense`).
- :mod:`.best_layers`: the best block per model and task ("No single winner").
"""
