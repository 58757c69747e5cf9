"""User-facing errors.

Anything a user can cause (a bad config key, a missing file, a checkpoint that does not fit)
raises a `DefectGenError` whose message is one line naming the culprit and what was
expected. `cli.main` prints that line and exits non-zero; everything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import re

_FIELD = re.compile(r"\{(\w+)\}")


def render(template: str, values: dict[str, str], names: dict[str, str]) -> str:
    """`template` with each `{field}`: a value where `values` has one (shown as given, never
    scanned again), else a parameter, spelt as `names` says (itself where absent)."""
    return _FIELD.sub(lambda m: values.get(m.group(1), names.get(m.group(1), m.group(1))), template)


class Note:
    """A warning about arguments, worded like `DefectGenError.with_params`: `str()` names the
    Python parameters, `render(FLAGS)` a command's flags."""

    def __init__(self, template: str, **values):
        self.template, self.values = template, {k: str(v) for k, v in values.items()}

    def render(self, names: dict[str, str]) -> str:
        return render(self.template, self.values, names)

    def __str__(self) -> str:
        return self.render({})


class DefectGenError(Exception):
    """Base class of errors caused by user input, shown as one line.

    An error about an argument is made with `with_params`: its message names parameters as
    `{name}` fields, which the Python API shows as the parameter (`steps`) and each command as
    its flag (`--steps`: `cli` renders it with the command's FLAGS, the one place that knows
    flag names). Values go in as keywords, so one holding braces is shown as it is:

        raise ConfigError.with_params("{steps} must be >= 1, got {value}", value=steps)
    """

    template: str | None = None
    values: dict[str, str] = {}

    @classmethod
    def with_params(cls, template: str, **values) -> DefectGenError:
        exc = cls(render(template, {k: str(v) for k, v in values.items()}, {}))
        exc.template, exc.values = template, {k: str(v) for k, v in values.items()}
        return exc

    def render(self, names: dict[str, str]) -> str:
        """The message with parameters spelt as `names` says (a plain message as it is)."""
        return str(self) if self.template is None else render(self.template, self.values, names)


class ConfigError(DefectGenError):
    """A config file, key or value is wrong."""


class DataError(DefectGenError):
    """A dataset file or folder is missing, unreadable or inconsistent."""


class CheckpointError(DefectGenError):
    """A checkpoint is missing, corrupt, unsafe, or does not fit the model."""


class WorkerDied(DefectGenError):
    """A worker process ended without an error of its own: killed from outside, most often by
    the kernel when memory runs out. The machine's doing, so one line, not a traceback."""


def short_repr(value, limit: int = 80) -> str:
    """repr() for error messages, bounded in time and length: a YAML value built from nested
    aliases (a "billion laughs") would take minutes and gigabytes to repr() in full."""
    import reprlib

    r = reprlib.Repr()
    r.maxlevel, r.maxlist, r.maxtuple, r.maxdict, r.maxset = 3, 6, 6, 6, 6
    r.maxstring = r.maxother = r.maxlong = limit
    text = r.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."

