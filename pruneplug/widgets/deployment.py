"""The deployment explorer: is the pruned model really smaller and faster, and what does int8 add?

:class:`DeploymentExplorer` prunes a trained model (structured: smaller layers; unstructured:
zeroed weights), fine-tunes it briefly, deploys it (float, compiled or not; int8 through
:mod:`pruneplug.quantize`; a sparse format through :mod:`pruneplug.sparse`) and sets its size on
disk, latency and accuracy beside the dense model's. The dense model is always deployed the same
way as the pruned one (eager against eager, compiled against compiled), so the speed-up is what
pruning and the chosen format buy, not what a compiler gives any model.
"""

from __future__ import annotations

from collections.abc import Sized
from dataclasses import dataclass
from typing import Any, cast

import ipywidgets as w
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn
from torch.nn.utils import prune
from torch.utils.data import Dataset, TensorDataset

from .. import inference, quantize, sparse
from ..engine import fine_tune
from ..metrics import interleaved_latency
from ..plumbing import copy_model, remove_masks
from ..registry import get_pruner, get_scorer
from .controls import value_slider
from .explorer import Explorer

#: What the explorer offers: pruning methods and storage formats.
METHODS = ("structured", "unstructured")
LAYOUTS = ("dense", *sparse.LAYOUTS)


@dataclass(frozen=True)
class Deployment:
    """One way to deploy a pruned model.

    Attributes:
        method: ``"structured"`` (physically smaller layers) or ``"unstructured"`` (masks).
        amount: fraction of units (structured) or weights (unstructured) removed.
        int8: quantise to int8 (post-training, :func:`pruneplug.quantize.post_training_quantize`;
            always compiled).
        layout: ``"dense"``, or a sparse format of :func:`pruneplug.sparse.to_sparse` for the
            Linear layers of an unstructured-pruned model.
        compiled: compile the float model with TorchInductor (int8 models always are).
    """

    method: str = "structured"
    amount: float = 0.5
    int8: bool = False
    layout: str = "dense"
    compiled: bool = False

    def check(self) -> None:
        """Refuse combinations that do not exist, naming the fix."""
        if self.method not in METHODS:
            raise ValueError(f"method {self.method!r}: choose one of {', '.join(METHODS)}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout {self.layout!r}: choose one of {', '.join(LAYOUTS)}")
        if not 0.0 <= self.amount < 1.0:
            raise ValueError(f"amount={self.amount}: give a fraction in [0, 1)")
        if self.layout != "dense" and self.method == "structured":
            raise ValueError(
                "a structured-pruned model is dense and smaller: sparse formats store the zeros "
                "of unstructured pruning; choose method 'unstructured' or layout 'dense'"
            )
        if self.layout != "dense" and (self.int8 or self.compiled):
            raise ValueError(
                "a sparse format runs in eager float (PyTorch's CPU sparse kernels are float32 "
                "and TorchInductor does not compile them): untick int8 and compiled, or choose "
                "layout 'dense'"
            )

    @property
    def is_compiled(self) -> bool:
        return self.int8 or self.compiled


class DeploymentExplorer(Explorer):
    """Prune, fine-tune and deploy a model; size, latency and accuracy against the dense model.

    Everything is measured on the CPU, where int8 (x86) and the sparse layouts run: a model on
    a GPU is copied to it.

    Args:
        model: the trained dense model (not modified, not moved).
        train: training data, for the brief fine-tuning after pruning and int8 calibration.
        test: the data accuracy is measured on; its first ``batch_size`` inputs are the batch
            latency is timed on.
        setting: the first setting shown (then the controls change it).
        epochs: fine-tuning epochs after pruning (0: none).
        batch_size: the batch timed, and the batch the compiled models are compiled for.
        repeats: interleaved timing repeats (medians are shown).
        seed: fine-tuning seed.

    ``result`` holds the numbers of the current setting; :meth:`measure` computes them for any
    setting without touching the controls. Pruned models, deployments and the dense references
    are cached, so returning to a setting only re-times it.
    """

    def __init__(
        self,
        model: nn.Module,
        train: Dataset,
        test: Dataset,
        setting: Deployment = Deployment(),
        *,
        epochs: int = 2,
        batch_size: int = 256,
        repeats: int = 10,
        seed: int = 0,
    ) -> None:
        super().__init__()
        setting.check()
        self.dense = copy_model(model).cpu().eval()  # int8 and sparse layouts are CPU kernels
        self.train_data, self.epochs, self.seed = train, epochs, seed
        self.inputs, self.targets = stack(test)
        self.batch = self.inputs[:batch_size]
        self.batch_size, self.repeats = batch_size, repeats
        self._pruned: dict[tuple[str, float], nn.Module] = {}
        self._deployed: dict[Deployment, nn.Module] = {}
        self.method = w.Dropdown(options=list(METHODS), value=setting.method, description="method")
        self.amount = value_slider("amount", setting.amount, 0.0, 0.95, 0.05)
        self.int8 = w.Checkbox(value=setting.int8, description="int8", indent=False)
        self.compiled = w.Checkbox(value=setting.compiled, description="compiled", indent=False)
        self.layout = w.Dropdown(options=list(LAYOUTS), value=setting.layout, description="format")
        self.panel = [self.method, self.amount, self.int8, self.compiled, self.layout]
        self._watch(self.panel)
        self.update()

    @property
    def setting(self) -> Deployment:
        """The setting the controls show."""
        return Deployment(
            self.method.value,
            self.amount.value,
            self.int8.value,
            self.layout.value,
            self.compiled.value,
        )

    def pruned(self, method: str, amount: float) -> nn.Module:
        """A pruned, fine-tuned copy of the dense model (L1 magnitude scores; cached)."""
        key = (method, amount)
        if key not in self._pruned:
            model = copy_model(self.dense)
            if amount > 0:
                scores = get_scorer("magnitude", p=1)(model)
                model = get_pruner(method)(model, scores, amount=amount)
                if self.epochs:
                    fine_tune(
                        model, self.train_data, epochs=self.epochs, seed=self.seed, progress=False
                    )
            self._pruned[key] = model.eval()
        return self._pruned[key]

    def deployed(self, setting: Deployment) -> nn.Module:
        """The model of ``setting`` as it runs for inference (cached); amount 0 is the dense one."""
        setting.check()
        if setting not in self._deployed:
            model = self.pruned(setting.method, setting.amount)
            if setting.int8:
                deployed: nn.Module = quantize.post_training_quantize(
                    model, self.train_data, batch_size=self.batch_size, max_batches=4
                )
            elif setting.compiled:
                deployed = inference.compile_for_inference(model)
            elif setting.layout != "dense":
                deployed = sparse.to_sparse(model, cast(sparse.Layout, setting.layout))
            elif prune.is_pruned(model):  # run as the dense reference: no mask hook each call
                deployed = remove_masks(copy_model(model))
            else:
                deployed = model
            self._deployed[setting] = deployed
        return self._deployed[setting]

    def reference(self, setting: Deployment) -> Deployment:
        """The dense model deployed like ``setting``: float, compiled if ``setting`` is."""
        return Deployment(setting.method, 0.0, compiled=setting.is_compiled)

    def accuracy(self, model: nn.Module) -> float:
        logits = inference.predict(model, self.inputs, batch_size=self.batch_size)
        return float((logits.argmax(1) == self.targets).float().mean())

    def measure(self, setting: Deployment) -> dict[str, Any]:
        """Size on disk, latency and accuracy of ``setting`` and of the dense reference."""
        model, dense = self.deployed(setting), self.deployed(self.reference(setting))
        seconds = interleaved_latency(
            {"dense": (dense, self.batch), "pruned": (model, self.batch)}, self.repeats, 2
        )
        size, dense_size = inference.size_on_disk(model), inference.size_on_disk(dense)
        steps = ["int8" if setting.int8 else "float32"]
        steps += ["compiled" if setting.is_compiled else "eager", setting.layout]
        return {
            "setting": f"{setting.method} {setting.amount:.0%}, {', '.join(steps)}",
            "size (KB)": size / 1e3,
            "dense size (KB)": dense_size / 1e3,
            "smaller": dense_size / size,
            f"latency, batch {len(self.batch)} (ms)": 1e3 * seconds["pruned"],
            "dense latency (ms)": 1e3 * seconds["dense"],
            "faster": seconds["dense"] / seconds["pruned"],
            "accuracy": self.accuracy(model),
            "dense accuracy": self.accuracy(dense),
        }

    def compute(self) -> dict[str, Any]:
        return self.measure(self.setting)

    def draw(self, fig: Figure) -> None:
        r = self.result
        latency = next(k for k in r if k.startswith("latency"))
        panels = [
            ("size on disk (KB)", r["dense size (KB)"], r["size (KB)"]),
            ("latency (ms)", r["dense latency (ms)"], r[latency]),
            ("test accuracy", r["dense accuracy"], r["accuracy"]),
        ]
        for i, (title, dense, pruned) in enumerate(panels, start=1):
            ax = fig.add_subplot(1, 3, i)
            ax.bar(["dense", "this"], [dense, pruned], color=["#999", "#1f77b4"])
            ax.set_title(title, fontsize=9)
        fig.suptitle(r["setting"], fontsize=9)


def stack(dataset: Dataset) -> tuple[Tensor, Tensor]:
    """All inputs and targets of a dataset of (input, target) pairs, as two tensors."""
    if isinstance(dataset, TensorDataset) and len(dataset.tensors) == 2:
        inputs, targets = dataset.tensors
        return inputs, targets
    pairs = [dataset[i] for i in range(len(cast(Sized, dataset)))]
    return torch.stack([x for x, _ in pairs]), torch.as_tensor([int(y) for _, y in pairs])
