"""Files in and out: image datasets and their indexes (:mod:`.datasets`), model-input
preprocessing (:mod:`.preprocess`), the HDF5 dumps (:mod:`.dumps`), CSV/NPZ tables
(:mod:`.tables`), dataset fingerprints (:mod:`.fingerprint`), restricted unpickling
(:mod:`.safe_pickle`), DAVIS-layout videos (:mod:`.video`) and the demo's synthetic
images and videos (:mod:`.synthetic`, :mod:`.synthetic_video`). Callers import the
module they use (``from vitscope.io import dumps``); nothing is re-exported here, and
importing this package imports no torch.
"""
