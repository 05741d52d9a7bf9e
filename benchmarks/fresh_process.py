"""Run one measurement of a benchmark script in a fresh Python process (its memory figures start from nothing).

    if run_child(measure):        # at the top of main(): this process is a child; it printed its result
        return
    row = in_fresh_process(__file__, {"count": 1000})   # in the parent: the child's ``measure(**kwargs)``
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

FLAG = "--child"


def in_fresh_process(script: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``script``'s child function called with ``kwargs`` in a new interpreter; its JSON result."""
    out = subprocess.run([sys.executable, script, FLAG, json.dumps(kwargs)], check=True, capture_output=True,
                         text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def run_child(measure: Callable[..., dict[str, Any]]) -> bool:
    """In a child started by :func:`in_fresh_process`: print ``measure(**kwargs)`` as JSON and return True."""
    if len(sys.argv) > 2 and sys.argv[1] == FLAG:
        print(json.dumps(measure(**json.loads(sys.argv[2]))))
        return True
    return False


def old_checkout(repo: Path, rev: str, tmp: Path) -> Path:
    """``rev`` of the git checkout ``repo`` as files (``git archive``) in ``tmp/old``: the code a benchmark compares
    against, loaded in its own processes beside this checkout's."""
    old = tmp / "old"
    old.mkdir()
    subprocess.run(f"git -C {repo} archive {rev} | tar -x -C {old}", shell=True, check=True)
    return old
