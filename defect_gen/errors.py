"""User-facing errors.

Anything a user can cause (a bad config key, a missing file, a checkpoint that does not fit)
raises a `DefectGenError` whose message is one line naming the culprit and what was
expected. `cli.main` prints that line and exits non-zero; everything else is a bug and keeps
its traceback.
"""


class DefectGenError(Exception):
    """Base class of errors caused by user input, shown as one line."""


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


def arg_name(key: str, names: dict[str, str] | None = None) -> str:
    """What an error message calls the argument `key`: the caller's own spelling where `names`
    has one (the CLI passes its flags, `--step_inference`), else `key` itself, the Python API's
    parameter (`step_inference`). One message text then serves both."""
    return names.get(key, key) if names else key
