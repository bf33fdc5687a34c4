"""Test-only: runner V2 with interpreted Triton in child interpreters (see interpreted_triton)."""

import interpreted_triton

interpreted_triton.activate_if_requested()
