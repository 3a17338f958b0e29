r"""Int8 models for CPU inference: post-training quantisation and quantisation-aware training.

Quantisation stores a float tensor :math:`x` as 8-bit integers with an affine map (Jacob et al.,
"Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-Only Inference",
CVPR 2018):

.. math::
    q = \mathrm{clamp}(\mathrm{round}(x / s) + z,\ q_{\min},\ q_{\max}), \qquad
    \hat{x} = s\,(q - z),

with scale :math:`s > 0` and zero point :math:`z`. A layer then multiplies integers and adds
them in int32, and only its output is rescaled: four times less weight memory and traffic than
float32, and the int8 dot-product instructions of current CPUs (VNNI, AMX).

This module uses PyTorch's maintained path for it, **PT2E** ("PyTorch 2 Export" quantisation,
now in torchao): the model is captured by :func:`torch.export.export`,
``X86InductorQuantizer`` decides what to quantise (``prepare_pt2e`` inserts observers), a few
batches calibrate the observers, ``convert_pt2e`` writes the result as a graph of
quantize/dequantize ops around float Conv2d/Linear ops with the weights stored as int8, and
``torch.compile`` (TorchInductor) matches those patterns and lowers them to oneDNN's int8
kernels (``onednn.qconv_pointwise``, ``onednn.qlinear_pointwise``). The quantiser's default
configuration, used here:

* weights: int8 in [-128, 127], **per output channel, symmetric** (:math:`z = 0`, one scale
  per channel from its largest magnitude), so one channel's outlier does not cost the others
  precision;
* activations: uint8 in [0, 255], per tensor, affine, scale and zero point from a histogram
  observer over the calibration batches;
* batch norm after a convolution is folded into it first (eval mode), so nothing is left of it.

Two things decide whether the result is really int8 and not float code that only simulates it
(which gives the same numbers, slowly), and both are done here: Inductor lowers the patterns only
when it **freezes** the weights (``torch._inductor.config.freezing``), and it freezes them only
for calls without autograd. :class:`Int8Model` runs every call under ``torch.inference_mode``
with freezing switched on for that call alone (the global configuration is left as it is). To
see the kernels, ``torch._inductor.utils.run_and_get_code(model, x)`` returns the generated code
(it resets ``torch.compile``'s caches first); the tests read it.

* :func:`post_training_quantize` - calibrate on a few batches and convert (seconds; no training);
* :func:`quantization_aware_training` - the recovery when post-training quantisation loses too
  much: the model trains for a few epochs with every quantised tensor *fake-quantised* in the
  forward pass (rounded as int8 would round it, while gradients pass straight through), so the
  weights learn to live with the rounding (``prepare_qat_pt2e``; training is
  :func:`pruneplug.engine.train`);
* and from :mod:`pruneplug.inference`, which the int8 models are built on:
  :func:`~pruneplug.inference.size_on_disk` (bytes a model's weights take when saved, to compare
  dense, pruned, int8 and pruned + int8 models), :func:`~pruneplug.inference.compile_for_inference`
  (the same deployment - frozen, compiled, inference mode - for a float model, so that latencies
  compare like with like) and :func:`~pruneplug.inference.predict` (outputs in fixed-size
  batches, the last one padded, so that a compiled model compiles once).

Structured-pruned models (``pruneplug.get_pruner("structured")``) are ordinary, smaller models
and quantise as they are. Models that carry ``torch.nn.utils.prune`` masks are quantised after
the masks are made permanent in a copy (zeros stay zeros in int8). The model passed in is never
modified, also when a call fails.

**Limits.** Runs on CPU (the int8 model and its inputs are on the CPU; inputs elsewhere are
moved there and outputs moved back). Quantises ``Conv2d`` and ``Linear`` (what the X86 quantiser
annotates); other layers run in float between them. The forward pass must be traceable by
``torch.export`` (no Python branches on tensor values). Compiling needs a C++ compiler and takes
a few seconds per input shape: Inductor compiles the int8 model for each batch shape it sees
(dynamic shapes are not used - with frozen int8 convolutions they fail in torch 2.14), so feed
a fixed batch size (:func:`predict` pads), and at most ``torch._dynamo.config.recompile_limit``
(8) shapes compile before PyTorch falls back to the uncompiled, simulated graph.

References: Jacob et al., CVPR 2018 (above); PyTorch, "PT2E Quantization"
(https://docs.pytorch.org/ao/stable/pt2e_quantization/index.html) and "PyTorch 2 Export
Quantization with X86 Backend through Inductor"
(https://docs.pytorch.org/ao/stable/tutorials_source/pt2e_quant_x86_inductor.html).
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import islice
from types import SimpleNamespace
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.nn.utils import prune
from torch.utils.data import DataLoader, Dataset

from . import engine
from .deploy import fold_batchnorm
from .engine import History
from .inference import (
    CompiledForInference,
    check_count,
    check_cxx_compiler,
    check_model,
    float_copy,
    quiet_toolchain,
)

#: Calibration data: a tensor of inputs, a Dataset or DataLoader of (input, target) samples, or
#: any iterable of (inputs, targets) batches or of input batches.
CalibrationData = Tensor | Dataset | DataLoader | Iterable[Any]


class Int8Model(CompiledForInference):
    """An int8 model made by :func:`post_training_quantize` or :func:`quantization_aware_training`.

    Attributes:
        module: the converted PT2E graph (a ``torch.fx.GraphModule``): quantize/dequantize ops
            around float Conv2d/Linear ops, holding only what the graph uses - int8 weights,
            their per-channel scales and zero points, float biases. Activation scales and zero
            points are constants in the graph's code. Print ``module.graph`` to read it.
        compiled: whether calls run Inductor's compiled code (oneDNN int8 kernels) or the
            graph as it is (float arithmetic that simulates int8 exactly, slowly - for
            inspection, or where no C++ compiler is available).
        history: the training history of quantisation-aware training (``None`` after
            post-training quantisation).
    """

    def __init__(
        self, module: torch.fx.GraphModule, *, compiled: bool, history: History | None = None
    ) -> None:
        super().__init__(module, compiled=compiled)
        self.history = history

    def int8_weights(self) -> dict[str, Tensor]:
        """The int8 weight tensors of the graph, by attribute name."""
        return {k: v for k, v in self.module.state_dict().items() if v.dtype == torch.int8}


# --------------------------------------------------------------------------- checks and inputs


def _input_batches(data: CalibrationData, max_batches: int, batch_size: int) -> list[Tensor]:
    """The inputs of the first ``max_batches`` batches of ``data``, on the CPU."""
    if isinstance(data, Tensor):
        if data.dim() == 0 or len(data) == 0:
            raise ValueError(
                f"no calibration data: the tensor has shape {tuple(data.shape)}; give a few "
                "hundred training inputs (N x ...), e.g. splits.train.tensors[0][:512]"
            )
        batches: Iterable[Any] = data.split(batch_size)
    elif isinstance(data, Dataset):  # samples, map-style or iterable: batch them
        batches = DataLoader(data, batch_size=batch_size, shuffle=False)
    elif isinstance(data, str | bytes) or not isinstance(data, Iterable | DataLoader):
        raise TypeError(
            f"calibration data must be a tensor of inputs, a Dataset or DataLoader, or an "
            f"iterable of (inputs, targets) batches; got {type(data).__name__}"
        )
    else:
        batches = data
    inputs: list[Tensor] = []
    for i, batch in enumerate(islice(iter(batches), max_batches)):
        x = batch[0] if isinstance(batch, tuple | list) and batch else batch
        if not isinstance(x, Tensor) or x.dim() == 0 or len(x) == 0:
            raise TypeError(
                f"calibration batch {i} is a {type(batch).__name__} without a non-empty input "
                "tensor: give batches as (inputs, targets) pairs or as input tensors"
            )
        inputs.append(x.detach().cpu())
    if not inputs:
        raise ValueError(
            "no calibration data: the data yielded no batch. Post-training quantisation needs "
            "a few batches of typical inputs (a few hundred samples of the training set) to "
            "choose the activations' scales"
        )
    return inputs


def _export_example(x: Tensor) -> Tensor:
    """An example batch of at least 2 samples: export would fix a batch size of 1 as a constant."""
    return torch.cat([x, x]) if len(x) == 1 else x


# --------------------------------------------------------------------------- model preparation


def _masked_tensor_names(model: nn.Module) -> set[str]:
    """Qualified names (``"fc1.weight"``) of the tensors that ``torch.nn.utils.prune`` masks."""
    return {
        f"{name}.{hook._tensor_name}" if name else hook._tensor_name
        for name, module in model.named_modules()
        for hook in module._forward_pre_hooks.values()
        if isinstance(hook, prune.BasePruningMethod)
    }


def _keep_pruned_weights_zero(graph: torch.fx.GraphModule, names: set[str]) -> None:
    """Zero the gradient of every pruned (zero) entry of the tensors ``names`` of ``graph``.

    The masks are gone from the exported graph; with a zero gradient a zero weight stays zero
    under SGD (with momentum and weight decay) and Adam, so training keeps the sparsity.
    """
    for name, parameter in graph.named_parameters():
        if name in names:
            keep = parameter.detach() != 0
            parameter.register_hook(lambda grad, keep=keep: grad * keep)


def _export(
    model: nn.Module, example: Tensor, function: str, *, strict: bool
) -> torch.fx.GraphModule:
    """``torch.export`` of ``model`` with a dynamic batch size, as a GraphModule."""
    batch = torch.export.Dim("batch")
    try:
        exported = torch.export.export(
            model, (example,), dynamic_shapes=({0: batch},), strict=strict
        )
    except Exception as error:  # export raises many types for code it cannot trace
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ValueError(
            f"{function}: torch.export could not capture {type(model).__name__} with input "
            f"{tuple(example.shape)} ({type(error).__name__}: {first}). Quantisation needs a "
            "forward pass without Python branches on tensor values (.item(), if x.sum() > 0) "
            "and with a free batch size; rewrite those parts with torch ops (torch.where, "
            "torch.cond) or quantise the sub-module that exports"
        ) from error
    return exported.module()


def _pt2e() -> SimpleNamespace:
    """torchao's PT2E functions, imported on first use (importing torchao takes about 2 s)."""
    with quiet_toolchain():
        from torchao.quantization import pt2e  # type: ignore[import-untyped]
        from torchao.quantization.pt2e import quantize_pt2e  # type: ignore[import-untyped]
        from torchao.quantization.pt2e.quantizer import (  # type: ignore[import-untyped]
            x86_inductor_quantizer as x86,
        )

    return SimpleNamespace(
        prepare=quantize_pt2e.prepare_pt2e,
        prepare_qat=quantize_pt2e.prepare_qat_pt2e,
        convert=quantize_pt2e.convert_pt2e,
        allow_train_eval=pt2e.allow_exported_model_train_eval,
        to_eval=pt2e.move_exported_model_to_eval,
        quantizer=x86.X86InductorQuantizer,
        config=x86.get_default_x86_inductor_quantization_config,
    )


def _quantizer(*, is_qat: bool, reduce_range: bool) -> Any:
    """The X86 Inductor quantiser with its default configuration (see the module docstring)."""
    pt2e = _pt2e()
    return pt2e.quantizer().set_global(pt2e.config(is_qat=is_qat, reduce_range=reduce_range))


def _prepared(
    model: nn.Module, example: Tensor, function: str, *, is_qat: bool, reduce_range: bool
) -> torch.fx.GraphModule:
    """``model`` exported and prepared by the X86 quantiser (observers or fake quantisers in).

    The quantiser finds its patterns (conv-add-relu, ...) through the source of each node.
    Non-strict export, tried first (it traces more Python), gives every call of a module that
    is used at several places (ResNet's ReLU) the same source, which the quantiser refuses;
    strict export (TorchDynamo) names each call apart, so it is the second try.
    """
    pt2e = _pt2e()
    prepare = pt2e.prepare_qat if is_qat else pt2e.prepare
    quantizer = _quantizer(is_qat=is_qat, reduce_range=reduce_range)
    try:
        return cast(
            torch.fx.GraphModule,
            prepare(_export(model, example, function, strict=False), quantizer),
        )
    except Exception as first:
        try:
            graph = _export(model, example, function, strict=True)
        except ValueError:
            raise first from None
        try:
            return cast(torch.fx.GraphModule, prepare(graph, quantizer))
        except Exception as error:
            raise RuntimeError(
                f"{function}: torchao's X86 quantiser could not prepare "
                f"{type(model).__name__} ({type(error).__name__}: {error}); quantise the "
                "sub-modules it can prepare, or report the model to torchao"
            ) from error


def _converted(
    prepared: torch.fx.GraphModule, model: nn.Module, function: str
) -> torch.fx.GraphModule:
    """``convert_pt2e`` with int8 weights folded in, keeping only what the graph uses."""
    converted = _pt2e().convert(prepared, fold_quantize=True)
    # a fresh GraphModule copies only the attributes the graph reads: the float weights that
    # the int8 constants replaced (and dead batch-norm state) are left behind
    graph_module = torch.fx.GraphModule(converted, converted.graph)
    if not any(t.dtype == torch.int8 for t in graph_module.state_dict().values()):
        raise ValueError(
            f"{function}: nothing in {type(model).__name__} was quantised: the X86 quantiser "
            "quantises Conv2d and Linear layers, and this model has none that it recognised"
        )
    return graph_module


# --------------------------------------------------------------------------- public functions


def post_training_quantize(
    model: nn.Module,
    calibration_data: CalibrationData,
    *,
    max_batches: int = 8,
    batch_size: int = 64,
    compiled: bool = True,
    reduce_range: bool = False,
) -> Int8Model:
    """An int8 copy of ``model`` (static post-training quantisation; the model is not modified).

    Args:
        model: a float model in any mode (it is quantised in eval mode: batch norm uses its
            running statistics and is folded into the convolution before it). Structured-pruned
            models quantise as they are; ``torch.nn.utils.prune`` masks are made permanent in
            the copy first. A ``torch.compile``-d model is quantised through its original.
        calibration_data: typical inputs that set the activations' scales: a tensor of inputs
            (split into batches of ``batch_size``), a Dataset or DataLoader of (input, target)
            samples, or an iterable of (inputs, targets) or input batches. A few hundred training
            samples are enough; test data would leak into the model.
        max_batches: how many batches calibrate (from the start of ``calibration_data``).
        batch_size: batch size for a tensor or Dataset given as ``calibration_data``.
        compiled: run through TorchInductor, which lowers the graph to oneDNN int8 kernels
            (needs a C++ compiler; compiling takes seconds, on the first call with each input
            shape), else run the graph uncompiled (int8 simulated in float, slowly).
        reduce_range: quantise activations to 7 bits (0-127). For CPUs without VNNI, where an
            8-bit x 8-bit product may saturate a 16-bit intermediate; measure before using it.

    Returns:
        an :class:`Int8Model`: call it like the float model (inference only). The first call
        with a new input shape compiles for that shape.

    Raises:
        TypeError: ``model`` is not a module; calibration data of the wrong kind.
        ValueError: no calibration data; a model ``torch.export`` cannot capture; a model with
            nothing to quantise.
        RuntimeError: no C++ compiler (``compiled=False`` avoids it). A compilation failure
            shows at the first call of the model, also as a ``RuntimeError``.
    """
    function = "post_training_quantize"
    model = check_model(model, function)
    check_count("max_batches", max_batches)
    check_count("batch_size", batch_size)
    batches = _input_batches(calibration_data, max_batches, batch_size)
    if compiled:
        check_cxx_compiler(function)
    float_model = float_copy(model)
    example = _export_example(batches[0])
    prepared = _prepared(float_model, example, function, is_qat=False, reduce_range=reduce_range)
    with torch.no_grad():
        for i, x in enumerate(batches):
            try:
                prepared(x)
            except Exception as error:
                raise ValueError(
                    f"{function}: calibration batch {i} (inputs {tuple(x.shape)}) does not fit "
                    f"the model ({type(error).__name__}: {str(error).strip().splitlines()[0]}); "
                    "calibrate with inputs shaped like the training inputs"
                ) from error
    return Int8Model(_converted(prepared, model, function), compiled=compiled)


def quantization_aware_training(
    model: nn.Module,
    train_data: engine.Data,
    *,
    epochs: int = 3,
    lr: float = 0.01,
    batch_size: int = 64,
    compiled: bool = True,
    reduce_range: bool = False,
    seed: int = 0,
    **train_kwargs: Any,
) -> Int8Model:
    """An int8 copy of ``model`` fine-tuned with fake quantisation (the model is not modified).

    The recovery when :func:`post_training_quantize` loses too much accuracy. The copy is
    captured in train mode and prepared with ``prepare_qat_pt2e``: every weight and activation
    that int8 inference will quantise is rounded the same way in the forward pass (the
    gradient passes through the rounding unchanged, the straight-through estimator), and the
    scales follow moving averages of the observed ranges (Jacob et al. 2018, section 3). After
    training the model is converted and compiled as after post-training quantisation.

    Batch norm that directly follows a convolution or linear layer is folded into it *before*
    training (:func:`pruneplug.deploy.fold_batchnorm`): the weights fake-quantised during
    training are then exactly the weights deployed, and the statistics stay fixed, as in the
    last phase of the usual recipe (Jacob et al. 2018, section 3.2; Krishnamoorthi,
    "Quantizing deep convolutional networks for efficient inference", 2018: freeze the batch
    norm statistics). torchao can instead keep batch norm training and simulate the folding,
    but undoing that simulation at conversion costs about 15 s of pattern matching per call;
    it is used only for a model that ``torch.fx`` cannot trace.

    Args:
        model: the float model (trained: this fine-tunes it; pruned models as in
            :func:`post_training_quantize`).
        train_data: a Dataset or DataLoader of (input, target) samples.
        epochs, lr, batch_size, seed: of the fine-tuning, run by :func:`pruneplug.engine.train`
            (SGD with momentum by default); a smaller rate than for training from scratch.
        compiled, reduce_range: as in :func:`post_training_quantize`.
        train_kwargs: any other argument of :func:`pruneplug.engine.train` (``val_data``,
            ``schedule``, ``optimizer``, ``penalty`` - e.g. distillation from the float model -,
            ``augment``, ``progress``). ``device`` is not accepted: this runs on the CPU.

    Returns:
        an :class:`Int8Model` whose ``history`` is the training history.

    Raises:
        as :func:`post_training_quantize`, and the errors of :func:`pruneplug.engine.train`
        for bad training arguments.
    """
    function = "quantization_aware_training"
    model = check_model(model, function)
    if "device" in train_kwargs:
        raise ValueError(
            f"{function}: device= is not accepted: int8 quantisation for the x86 backend "
            "trains and runs on the CPU"
        )
    engine.check_data(train_data, "train_data")
    engine.check_train_args(
        epochs,
        lr,
        train_kwargs.get("optimizer", "sgd"),
        train_kwargs.get("momentum", 0.9),
        train_kwargs.get("weight_decay", 0.0),
        batch_size,
        train_kwargs.get("schedule"),
    )
    if compiled:
        check_cxx_compiler(function)
    loader = engine.make_loader(train_data, batch_size, shuffle=False, seed=seed)
    example = _input_batches(loader, 1, batch_size)[0]
    float_model = float_copy(model)
    try:  # see the docstring: fold batch norm now rather than simulate folding while training
        float_model = fold_batchnorm(float_model)
    except ValueError:  # torch.fx cannot trace it: torchao simulates the folding (slower)
        pass
    float_model.train()
    prepared = _prepared(
        float_model, _export_example(example), function, is_qat=True, reduce_range=reduce_range
    )
    _keep_pruned_weights_zero(prepared, _masked_tensor_names(model))
    # let engine.train switch batch norm (and dropout) between modes through .train()/.eval()
    _pt2e().allow_train_eval(prepared)
    history = engine.train(
        prepared,
        train_data,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        seed=seed,
        **train_kwargs,
    )
    _pt2e().to_eval(prepared)
    return Int8Model(_converted(prepared, model, function), compiled=compiled, history=history)
