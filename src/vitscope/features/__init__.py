"""What the models represent: CKA, feature-space and minibatch (:mod:`.cka`), KMeans
clustering scores of images and objects (:mod:`.clustering`), and the per-object token
weights of COCO instance masks (:mod:`.objects`). Callers import the module they use
(``from vitscope.features import cka``); nothing is re-exported here.
"""
