#!/usr/bin/env bash
# The GPU checks in one go (under 10 minutes on one H100/H200): the CUDA tests,
# then the training and inference benchmark on the GPU.
# Run from the repository root on a machine with CUDA and with sklat's
# dependencies importable (torch with CUDA, skorch, scikit-learn, pandas,
# safetensors, lightgbm, tabulate; transformers for the profiling tests).
set -euo pipefail
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
python -m pytest -q -p no:cacheprovider -o addopts="" tests/test_cuda.py tests/test_predict.py \
    tests/test_learning.py tests/test_profile.py
python benchmarks/speed.py --device cuda --positions 1048576 --skip memory
