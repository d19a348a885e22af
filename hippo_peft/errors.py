"""hippo_peft's own errors: bad input or a refused file, said in one line.

`hippo-peft` prints a HippoPeftError as ``hippo-peft CMD: error: MESSAGE`` and exits with 2; any other exception is
a bug (ours or a library's) and keeps its traceback (exit 3). Each class keeps the builtin base a caller would
expect (``except ValueError`` still catches an InputError), so library users can catch either.
"""
from __future__ import annotations


class HippoPeftError(Exception):
    """Our errors: bad input or a refused file; the CLI prints them in one line."""


class InputError(HippoPeftError, ValueError):
    """A bad option value, setting or file content."""


class MissingInputError(HippoPeftError, FileNotFoundError):
    """A file or folder that the command needs is not there."""


class OutputExistsError(HippoPeftError, FileExistsError):
    """The output exists and is not replaced (without --overwrite, or not a file we wrote)."""


class RefusedError(HippoPeftError, RuntimeError):
    """A step refused or failed for a reason its message states: a checkpoint of another run, a failed nnU-Net
    command (the message ends with its log), a network that already carries an adapter."""
