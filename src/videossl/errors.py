"""The one error type a step raises for bad input or a failed run: the CLI prints it and exits 1."""


class StepError(RuntimeError):
    """A step could not do its work; the message says why and what to do."""
