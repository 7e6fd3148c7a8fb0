"""Imports of the packages that only an extra of nnunet-teachformer installs (pyproject.toml's
optional-dependencies: ``export``, ``cpu``, ``picai``).

Each is imported only by the feature that needs it, through ``optional_import``: where it is missing, that
feature stops with a one-sentence TeachFormerError naming the extra to install. In the manner of MONAI's
``monai.utils.optional_import``, but raising at once instead of returning a placeholder that raises on use.
"""
import importlib

from nnunet_teachformer.errors import TeachFormerError


def optional_import(module: str, name: str = "", *, extra: str, purpose: str, package: str = ""):
    """``module``, or its attribute ``name`` (as ``from module import name``); TeachFormerError naming ``extra``
    where it cannot be imported.

    Args:
        module: dotted module name, e.g. ``"picai_eval.image_utils"``.
        name: the attribute to return instead of the module.
        extra: the optional-dependencies entry that installs it, e.g. ``"picai"``.
        purpose: what needs it, the subject of the error's sentence, e.g. ``"PI-CAI 2022 scoring"``.
        package: the package's name in the message (default: the module's top-level name).
    """
    try:
        imported = importlib.import_module(module)
    except ImportError as error:
        package = package or module.split(".")[0]
        missing = getattr(error, "name", None)
        # not installed: the module itself or a package above it is missing (not one of its own imports)
        installed = not missing or not (module == missing or module.startswith(missing + "."))
        what = f"which failed to import ({error})" if installed else "which is not installed"
        raise TeachFormerError(f"{purpose} needs {package}, {what}: pip install 'nnunet-teachformer[{extra}]'") \
            from error
    return getattr(imported, name) if name else imported
