"""A stand-in for polygraphy's Python package (tests only): just what tensorrt_check.py reads."""
