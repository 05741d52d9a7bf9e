"""Fake ``polygraphy.comparator.RunResults``: loads the JSON the fake ``polygraphy`` CLI writes."""
from __future__ import annotations

import json

import numpy as np


class RunResults:
    def __init__(self, lst: list) -> None:
        self.lst = lst

    @staticmethod
    def load(path: str) -> RunResults:
        with open(path) as f:
            data = json.load(f)
        return RunResults([(data["runner"], [{"logits": np.asarray(x, np.float32)} for x in data["iterations"]])])

    def items(self):
        return iter(self.lst)
