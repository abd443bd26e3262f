"""Shared fixtures: tiny ESM-2 checkpoints, synthetic labelled data, a trained tiny model and
its exported bundle (built once per test session)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
