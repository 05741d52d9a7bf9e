"""Robustness: attacks in pixel space (:mod:`.attacks`), common corruptions (:mod:`.corruptions`)
and per-domain robust accuracy (:mod:`.evaluate`).

Everything works on pixels ``[B, 3, H, W]`` in [0, 1], reaching a model through its own
normalization, so an epsilon is a budget in image space. Import from the submodules.
"""
