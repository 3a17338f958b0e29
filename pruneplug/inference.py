r"""Models deployed for CPU inference: frozen and compiled, sized on disk, fed fixed batches.

What :mod:`pruneplug.quantize` builds its int8 models on, and the float baseline they are
compared with, so that latencies compare like with like:

* :class:`CompiledForInference` / :func:`compile_for_inference` - a model compiled by
  TorchInductor with its weights **frozen** (constants of the generated code, pre-packed for
  oneDNN), every call under ``torch.inference_mode``. Freezing is switched on per call
  (``torch._inductor.config.freezing``), never globally;
* :func:`float_copy` - an eval-mode CPU copy with ``torch.nn.utils.prune`` masks made
  permanent (a pruned weight is a plain zero);
* :func:`size_on_disk` - the bytes ``torch.save`` writes for a model's weights;
* :func:`predict` - outputs in batches of one fixed size (the last one padded), because a
  compiled model compiles once per input shape (seconds each).

Compiling needs a C++ compiler (:func:`check_cxx_compiler` refuses early, naming the fix).
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch._dynamo.exc import BackendCompilerFailed

from .plumbing import copy_model, evaluation_mode, model_device, remove_masks

#: Loggers whose one-time notices during export and compilation name this machine's paths and
#: say nothing about the model ("No CUDA runtime is found", torchao registering an Enum).
_TOOLCHAIN_LOGGERS = ("torch.utils.cpp_extension", "torch.utils._pytree")


@contextmanager
def quiet_toolchain() -> Iterator[None]:
    """Without the compiler toolchain's notices (:data:`_TOOLCHAIN_LOGGERS`, and Inductor's
    "To copy construct from a tensor" warning about its own code): in a notebook they would be
    stored output that differs from machine to machine. Errors still come through."""
    loggers = [logging.getLogger(name) for name in _TOOLCHAIN_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message="To copy construct from a tensor", category=UserWarning
            )
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _inference_compile_context() -> AbstractContextManager[Any]:
    """What every call of a frozen compiled model runs under: freezing on, for this call only."""
    import torch._inductor.config as inductor_config

    return cast(AbstractContextManager[Any], inductor_config.patch(freezing=True))


def _graph_module(module: nn.Module) -> nn.Module:
    """``module`` as a ``torch.fx.GraphModule`` sharing its weights (``module`` itself when it is
    one, or when ``torch.fx`` cannot trace it)."""
    if isinstance(module, torch.fx.GraphModule):
        return module
    try:
        return torch.fx.symbolic_trace(module)
    except Exception:  # fx raises many types for untraceable code; compile the module as is
        return module


class CompiledForInference(nn.Module):
    """An inference-only model on the CPU, compiled by TorchInductor with its weights frozen.

    Every call runs under ``torch.inference_mode`` (outputs are inference tensors, which autograd
    refuses) with Inductor's ``freezing`` switched on for that call: the weights become
    constants of the compiled code, which is what lets Inductor pre-pack them for oneDNN and,
    for an int8 model, lower quantize/dequantize patterns to int8 kernels. Each input shape
    compiles once (a few seconds on first use; see the module docstring). Inputs on another
    device are moved to the CPU, outputs moved back.

    ``train(True)`` is refused: the weights are constants of compiled code. Train the float
    model and deploy it again.
    """

    def __init__(self, module: nn.Module, *, compiled: bool = True) -> None:
        super().__init__()
        self.module = module
        self.compiled = compiled
        # made on first call: a compiled *function* (the bound forward), so that nn.Module does
        # not register a second copy of ``module`` (as ``torch.compile(module)`` would be)
        self._forward: Callable[..., Tensor] | None = None
        for tensor in module.parameters():
            tensor.requires_grad_(False)
        self.training = False

    def __getstate__(self) -> dict[str, Any]:
        # a copy (deepcopy, pickle) compiles its own module again, not the original's
        return {**self.__dict__, "_forward": None}

    def forward(self, inputs: Tensor) -> Tensor:
        if not isinstance(inputs, Tensor):
            raise TypeError(f"{type(self).__name__} takes a tensor, got {type(inputs).__name__}")
        with torch.inference_mode(), _inference_compile_context(), quiet_toolchain():
            try:
                return self._run()(inputs.cpu()).to(inputs.device)
            except BackendCompilerFailed as error:  # InductorError is one too
                first = str(error).strip().splitlines()[0] if str(error).strip() else ""
                raise RuntimeError(
                    f"torch.compile could not compile {type(self).__name__} for inputs "
                    f"{tuple(inputs.shape)} ({type(error).__name__}: {first}); build it with "
                    "compiled=False to run the graph uncompiled"
                ) from error

    def _run(self) -> Callable[..., Tensor]:
        if self._forward is None:
            forward = self.module.forward
            if self.compiled:
                # the forward of a GraphModule is code of its own; compiling ``Sequential.forward``
                # of model after model would fill one code object's cache of compiled variants
                # (8), after which PyTorch silently runs the rest uncompiled
                forward = torch.compile(_graph_module(self.module).forward, dynamic=False)
            self._forward = forward
        return self._forward

    def train(self, mode: bool = True) -> CompiledForInference:
        if mode:
            raise RuntimeError(
                f"{type(self).__name__} is for inference only (its weights are constants of "
                "compiled code): train the float model, then quantise or deploy it again"
            )
        self.training = False
        return self


def check_model(model: Any, function: str) -> nn.Module:
    """``model`` itself, or the module inside a ``torch.compile`` wrapper; refuse the rest."""
    if isinstance(model, CompiledForInference):
        raise TypeError(
            f"{function}: {type(model).__name__} is already deployed for inference; pass the "
            "float model it was made from"
        )
    if not isinstance(model, nn.Module):
        raise TypeError(f"{function} needs a torch.nn.Module, got {type(model).__name__}")
    original = getattr(model, "_orig_mod", None)  # torch.compile(model) wraps the model
    return original if isinstance(original, nn.Module) else model


def check_count(name: str, value: Any) -> None:
    """Refuse anything but a whole number >= 1 for ``name``, naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r}: give a whole number >= 1")


def check_cxx_compiler(function: str) -> None:
    """Refuse early, with the fix, when Inductor has no C++ compiler to build CPU kernels."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        get_cpp_compiler()
    except ImportError:  # a torch without this helper: compiling will tell
        return
    except Exception as error:
        raise RuntimeError(
            f"{function}: torch.compile needs a C++ compiler to build the int8 CPU kernels and "
            f"found none ({error}). Install one (e.g. `apt-get install g++`, or set CXX), or pass "
            "compiled=False for a model that simulates int8 in float (same outputs, slow)"
        ) from error


def float_copy(model: nn.Module) -> nn.Module:
    """An eval-mode CPU copy of ``model`` with ``torch.nn.utils.prune`` masks made permanent.

    What quantisation and :func:`size_on_disk` start from: the masks are multiplied into the
    weights (``prune.remove``), so a pruned weight is a plain zero, and batch norm uses its
    running statistics. ``model`` itself is not touched.
    """
    return remove_masks(copy_model(model)).cpu().eval()


def compile_for_inference(model: nn.Module) -> CompiledForInference:
    """A float copy of ``model`` deployed as an :class:`Int8Model` is: frozen, compiled.

    The copy is in eval mode with masks made permanent; batch norm is left to Inductor (which
    folds it into the convolution when freezing). Use it as the float baseline when comparing
    latencies with int8 models, so that both get the same compiler and the same freezing.
    """
    model = check_model(model, "compile_for_inference")
    check_cxx_compiler("compile_for_inference")
    return CompiledForInference(float_copy(model), compiled=True)


def size_on_disk(model: nn.Module) -> int:
    """Bytes that ``torch.save`` writes for ``model``'s weights (its ``state_dict``).

    What is counted, so that dense, pruned, int8 and pruned + int8 models compare fairly:

    * a float model: its ``state_dict`` - parameters and buffers (batch-norm statistics too)
      as stored, float32 for a float32 model; a structured-pruned model is smaller because its
      tensors are. Masks of ``torch.nn.utils.prune`` are made permanent in a copy first (the
      stored tensor is the dense weight with zeros; unstructured zeros take as many bytes as
      any other value - only structured pruning or a sparse format saves space);
    * an :class:`Int8Model`: the ``state_dict`` of its converted graph, which holds only what
      the graph uses: int8 weights (1 byte per weight), a float32 scale and an int64 zero point
      per output channel, float32 biases. Activation scales are constants in the graph's code
      and not counted (two numbers per quantised tensor);
    * a :class:`CompiledForInference` or ``torch.compile``-d model: the model it wraps.

    The serialisation's own overhead (zip headers and the pickled key names, a few hundred
    bytes per tensor) is included, as it is on disk. The model's code is not (a state dict is
    loaded into a model built by code).
    """
    if isinstance(model, CompiledForInference):
        state = model.module.state_dict()
    else:
        state = float_copy(check_model(model, "size_on_disk")).state_dict()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getbuffer().nbytes


def predict(model: Callable[[Tensor], Tensor], inputs: Tensor, *, batch_size: int = 256) -> Tensor:
    """``model``'s outputs for ``inputs``, computed in batches of exactly ``batch_size``.

    The last batch is padded with zeros to ``batch_size`` and the padding's outputs dropped, so
    a compiled model (which compiles once per input shape) compiles once. Runs under
    ``torch.no_grad``, a module in eval mode (each sub-module's mode restored afterwards): in
    training mode batch norm would mix the padding into the outputs and its statistics. A
    module's inputs go where it is; the outputs come back where ``inputs`` are.
    """
    check_count("batch_size", batch_size)
    if not isinstance(inputs, Tensor) or inputs.dim() == 0 or len(inputs) == 0:
        raise ValueError("predict needs a non-empty tensor of inputs (N x ...)")
    outputs = []
    modes = evaluation_mode(model) if isinstance(model, nn.Module) else nullcontext()
    device = model_device(model) if isinstance(model, nn.Module) else inputs.device
    with modes, torch.no_grad():
        for chunk in inputs.to(device).split(batch_size):
            n = len(chunk)
            if n < batch_size:
                padding = chunk.new_zeros((batch_size - n, *chunk.shape[1:]))
                chunk = torch.cat([chunk, padding])
            outputs.append(model(chunk)[:n])
    return torch.cat(outputs).to(inputs.device)
