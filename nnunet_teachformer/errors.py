"""User-facing errors: one paragraph that names the problem and the fix, shown without a traceback.

nnU-Net's own command-line tools (``nnUNetv2_train``/``nnUNetv2_predict``) run our trainers; an exception
raised there would normally print a traceback wall. Importing this module installs an excepthook that
prints ``TeachFormerError`` as its message alone (set ``TEACHFORMER_TRACEBACK=1`` to see the traceback)
and leaves every other exception to the previous hook.
"""
import os
import sys


class TeachFormerError(Exception):
    """A problem with the user's input, data, plans or checkpoints, explained with its fix."""


def _excepthook(exc_type, exc, tb, _previous=sys.excepthook):
    if issubclass(exc_type, TeachFormerError) and not os.environ.get("TEACHFORMER_TRACEBACK"):
        print(f"\nnnunet-teachformer error: {exc}\n", file=sys.stderr)
        return
    _previous(exc_type, exc, tb)


if getattr(sys.excepthook, "__module__", None) != __name__:
    sys.excepthook = _excepthook
