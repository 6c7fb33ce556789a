"""What ships: the bundle format (bundle.py) and the Python runtime that loads it (runtime.py)."""
