#!/usr/bin/env bash
# Sourced by the other scripts: makes libtorch 2.11.0 available and exports what `tch` needs.
#
# If LIBTORCH is set, that installation is used as it is. Otherwise a virtual environment with
# torch==2.11.0 from PyPI is created once in a cache folder outside the repository (shared by every
# clone, keyed by the torch version) and the build links against the libtorch inside it.
# The same venv also provides the Python references the tests run (torch, numpy, safetensors, ftfy,
# scikit-learn).
# It sets no shell options, so sourcing it leaves the caller's shell as it was.

CCMA_TORCH_VERSION=2.11.0
CCMA_CACHE="${CCMA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ccma}"
CCMA_VENV="${CCMA_VENV:-$CCMA_CACHE/torch-$CCMA_TORCH_VERSION}"
CCMA_PY_PACKAGES=(numpy safetensors ftfy regex pillow tensorboard transformers pyyaml scikit-learn)
# Headers the NCCL part of the c10d shim (csrc/) compiles against, beside those torch's CUDA 13
# wheels already bring (the CUDA runtime's and NCCL's): nvcc's host configuration and CCCL.
CCMA_CUDA_HEADERS=("nvidia-cuda-crt==13.0.*" "nvidia-cuda-cccl==13.0.*")

ccma_python_ready() {
  [ -x "$CCMA_VENV/bin/python" ] &&
    "$CCMA_VENV/bin/python" -c "import torch, numpy, safetensors, ftfy, regex, PIL, tensorboard, transformers, yaml, sklearn; assert torch.__version__.split('+')[0] == '$CCMA_TORCH_VERSION'" 2>/dev/null &&
    "$CCMA_VENV/bin/python" -c "import importlib.metadata as m; m.version('nvidia-cuda-crt'); m.version('nvidia-cuda-cccl')" 2>/dev/null
}

if ! ccma_python_ready; then
  echo "ccma: setting up Python $CCMA_TORCH_VERSION torch environment in $CCMA_VENV (once; several GB)" >&2
  mkdir -p "$CCMA_CACHE" &&
    python3 -m venv "$CCMA_VENV" &&
    "$CCMA_VENV/bin/python" -m pip install --quiet --upgrade pip &&
    "$CCMA_VENV/bin/python" -m pip install --quiet "torch==$CCMA_TORCH_VERSION" "${CCMA_PY_PACKAGES[@]}" "${CCMA_CUDA_HEADERS[@]}" &&
    ccma_python_ready || { echo "ccma: could not set up the torch environment in $CCMA_VENV" >&2; return 1 2>/dev/null || exit 1; }
fi

export PATH="$CCMA_VENV/bin:$PATH"
export CCMA_PYTHON="$CCMA_VENV/bin/python"
if [ -n "${LIBTORCH:-}" ]; then
  export LD_LIBRARY_PATH="$LIBTORCH/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
else
  export LIBTORCH_USE_PYTORCH=1
  torch_lib="$("$CCMA_PYTHON" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
  export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
