"""The bottom layer: embedding spaces, manifests and atomic writes, uncertainty and rejection, the registry
helper, seed derivation, the version, logging/progress and the machine description.

Nothing here imports any other part of asymret, so every package above can use it without a cycle.
"""
