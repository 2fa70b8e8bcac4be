"""Record what a method of a live module is called with and returns, for the span of a block.

The student runs its own unmodified ``loss()``; the distiller records the intermediate results
that distillation losses need (FPN features, RoI sampling results, head outputs) instead of
recomputing them. Only the instance attribute is patched, and only inside the ``with`` block.
"""
from __future__ import annotations

import functools
from typing import Any, List, Optional, Tuple


class MethodRecorder:
    """Context manager that records calls of ``obj.<name>``.

    Example::

        with MethodRecorder(detector, 'extract_feat') as rec:
            detector.loss(inputs, data_samples)
        feats = rec.outputs[0]

    Attributes:
        calls: one ``(args, kwargs, output)`` tuple per call, in call order.
    """

    def __init__(self, obj: Any, name: str) -> None:
        if not callable(getattr(obj, name, None)):
            raise AttributeError(f'{type(obj).__name__} has no method {name!r} to record')
        self.obj, self.name = obj, name
        self.calls: List[Tuple[tuple, dict, Any]] = []
        self._had_instance_attr = False

    def __enter__(self) -> 'MethodRecorder':
        original = getattr(self.obj, self.name)
        self._had_instance_attr = self.name in vars(self.obj)
        self._saved = vars(self.obj).get(self.name)

        @functools.wraps(original)
        def recorded(*args: Any, **kwargs: Any) -> Any:
            out = original(*args, **kwargs)
            self.calls.append((args, kwargs, out))
            return out

        # nn.Module.__setattr__ stores plain callables in the instance __dict__, which normal
        # attribute lookup consults before the class, so self.<name>(...) inside the module
        # reaches the recorder.
        object.__setattr__(self.obj, self.name, recorded)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._had_instance_attr:
            object.__setattr__(self.obj, self.name, self._saved)
        else:
            object.__delattr__(self.obj, self.name)

    @property
    def outputs(self) -> List[Any]:
        """Return values of the recorded calls."""
        return [out for _, _, out in self.calls]

    def first(self) -> Optional[Tuple[tuple, dict, Any]]:
        """The first recorded call, or None if the method was not called."""
        return self.calls[0] if self.calls else None
