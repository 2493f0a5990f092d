"""Models: the registry of architectures and checkpoint formats (:mod:`.registry`: spec,
build, geometry, loading and checking weights), the zoo of released checkpoints
(:mod:`.zoo`), the device choice (:mod:`.devices`) and one module per original release
layout (:mod:`.formats`). Callers import the module they use
(``from vitscope.models import registry``); nothing is re-exported here.
"""
