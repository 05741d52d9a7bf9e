"""The offline stand-in teacher: a small CLIP trained on the suite's pretraining pool.

:mod:`~distill.teacher.bootstrap.presets` (the recipe, free of torch), :mod:`~distill.teacher.bootstrap.data`
(the image-text data), :mod:`~distill.teacher.bootstrap.model` (model, loss, epoch state) and
:mod:`~distill.teacher.bootstrap.train` (the loop: ``bootstrap_teacher``). Nothing is imported
here, so reading the presets does not load open_clip.
"""
