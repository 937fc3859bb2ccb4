"""The ResNet-20-style CIFAR model of gen_resnet20.py, 4x wider (issue 15's threading
benchmark): a 3x3 conv (64 channels), three stages of three basic blocks (64, 128, 256
channels; stride 2 at the start of stages 2 and 3, where the shortcut is a 1x1 conv +
BN), global average pooling and a 256 -> 10 Gemm. Input `input` float32 [1,3,32,32],
output `logits` [1,10]; opset 13. ~4.3 M parameters, ~650 M MACs.

    python3 bench/gen_resnet20_wide.py [OUT.onnx]     # default: bench/out/resnet20_wide.onnx
"""

import os
import runpy

os.environ["QCC_R20_WIDTH"] = "4"
runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen_resnet20.py"), run_name="__main__")
