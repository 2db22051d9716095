"""Library side of the ``run_suite.py`` subcommands (``export``, ``sweep``), so the CLI imports only
``tracks`` (DESIGN §1). Each returns what it wrote; argument parsing stays in ``run_suite.py``."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def export_model(checkpoint: str | os.PathLike, spec: str, out: str | os.PathLike, *, fmt: str = "int",
                 n_steps: int = 30, loop: bool = False, overwrite: bool = False, verify_n: int = 0,
                 data_dir: str | None = None) -> dict[str, Any]:
    """Export a checkpoint to ONNX (:func:`exports.onnx_export.export_command`); optionally verify
    the written file in onnxruntime on the first ``verify_n`` MNIST test images."""
    from exports.metadata import read_spec
    from exports.onnx_export import export_command

    path = export_command(checkpoint, spec, out, fmt=fmt, n_steps=n_steps, overwrite=overwrite, loop=loop)
    info: dict[str, Any] = {"path": str(path), "bytes": Path(path).stat().st_size, "spec": read_spec(path).name}
    if verify_n > 0:
        import numpy as np

        from exports import verify
        from models.checkpoint import load_checkpoint

        from ..data import load_dataset

        net, _ = load_checkpoint(checkpoint)
        x, _ = load_dataset("mnist", "test", data_dir)
        x = np.asarray(x[:verify_n])
        fn = {"float": verify.verify_float, "qdq": verify.verify_qdq, "int": verify.verify_int}[fmt]
        info["verify"] = fn(net, str(path), x, **({} if fmt == "float" else {"spec": read_spec(path)}))
    return info


def sweep(**kwargs: Any) -> dict[str, Any]:
    """Analog noise sweep (:func:`tracks.sweep.sweep_command`)."""
    from ..sweep import sweep_command

    return sweep_command(**kwargs)
