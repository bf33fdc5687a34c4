"""The OpenRLHF bridge's tests, with the real OpenRLHF 0.11.2 (the root conftest leaves
the folder out without OpenRLHF).

OpenRLHF's training modules import flash-attn, which needs CUDA: they are imported
here once, before this folder's modules, with flash-attn stubbed (CPU stub, see
``openrlhf_bridge.testing``), so the modules import OpenRLHF normally.
"""

from openrlhf_bridge.testing import import_openrlhf_training

import_openrlhf_training()
