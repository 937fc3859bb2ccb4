"""Writes small calibration files for hand-written IR test modules (run from anywhere):

- small_calib_2x4x4.npz: `x` of 16 samples [2, 4, 4], uniform in [-1, 1) (seed 7), for
  modules with one f32[1,2,4,4] input (compiler/tests/quant_cli.rs).
"""

from pathlib import Path

import numpy as np

here = Path(__file__).resolve().parent
rng = np.random.default_rng(7)
np.savez(here / "small_calib_2x4x4.npz", x=rng.uniform(-1, 1, (16, 2, 4, 4)).astype(np.float32))
