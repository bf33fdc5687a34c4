"""Fused EAD sampling kernels (installed as ``ead_vllm.kernels``).

``ead_sample`` applies the per-row, per-position EAD temperature and samples
in one pass over the vocabulary, returning the token, its annealed and base
log-probabilities, the temperature and the entropy (:class:`EADSample`).
Backends: Triton (GPU), numba (CPU), torch (reference). ``ead_tau`` is the
one fp32 definition of the schedule every backend samples at, and
``prepare`` compiles the kernels ahead of the first request. Importing this
package imports neither triton, numba nor vLLM.
"""

from ead_vllm.kernels.api import EADSample, ead_sample, prepare
from ead_vllm.kernels.schedule import ead_tau

__all__ = ["EADSample", "ead_sample", "ead_tau", "prepare"]
