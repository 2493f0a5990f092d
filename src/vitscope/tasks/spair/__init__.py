"""SPair-71k keypoint transfer: the transfer and PCK (:mod:`.metric`, pure), the official
layout and the choice of pairs (:mod:`.data`), and the run of a model for the dense
features of every block (:mod:`.run`; SPair is the one task that needs no dump).
"""
