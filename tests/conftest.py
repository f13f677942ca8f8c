"""Shared test setup: one thread (tiny models on a busy 2-core box run far faster so),
and the repo root on sys.path so tests can `import model`, `import data.world`, ..."""
import os
import sys

import torch

torch.set_num_threads(1)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
