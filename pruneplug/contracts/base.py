"""What every plugin has: a name, a description and declared, validated parameters."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from ..params import Param, check_declarations, validate


class Plugin:
    """What every scorer, pruner and augmenter has: a name, a description and parameters.

    Subclasses set the three class attributes below; ``__init__`` validates keyword arguments
    against ``params`` and stores the complete, checked values in ``self.config``.
    """

    kind: ClassVar[str] = ""
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    params: ClassVar[tuple[Param, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        check_declarations(f"{cls.__qualname__}", cls.params)

    def __init__(self, **params: Any) -> None:
        self.config: dict[str, Any] = validate(f"{self.kind} {self.name!r}", self.params, params)
        self.check_config(self.config)

    def check_config(self, config: Mapping[str, Any]) -> None:
        """Cross-parameter checks beyond what the declarations say; raise :class:`ParamError`.

        Called after every parameter was validated on its own (``at_most`` pairs included).
        The default accepts everything.
        """

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config.items())
        return f"{type(self).__name__}({args})"
