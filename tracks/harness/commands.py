"""Library side of the ``run_suite.py`` subcommands (``export``, ``sweep``), so the CLI imports only
``tracks`` (DESIGN §1). Each validates its inputs before any work (``ValueError`` naming the problem
and the fix), writes its outputs under a temporary name and renames them only on success, and
returns what it wrote; argument parsing and printing stay in ``run_suite.py``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

SPEC_REQUIRED_KEYS = ("weights", "state")


def load_spec_arg(spec: str | os.PathLike):
    """A preset name (``"int8"``) or a ``HardwareSpec`` JSON file -> :class:`quant.spec.HardwareSpec`.

    Raises:
        ValueError: unknown preset, missing / unreadable / non-JSON file, or a JSON object lacking the
            ``weights`` or ``state`` section (no silent defaults); the message names the file.
    """
    from quant import get_preset
    from quant.spec import HardwareSpec

    p = Path(spec)
    if p.suffix.lower() == ".json" or p.is_file():
        if not p.is_file():
            raise ValueError(f"spec file {p} does not exist; allowed: a preset name or a HardwareSpec JSON file")
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"spec file {p} cannot be read: {e}") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"spec file {p} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}); "
                             "write it with HardwareSpec.to_json") from None
        if not isinstance(data, dict):
            raise ValueError(f"spec file {p} holds a JSON {type(data).__name__}; allowed: a HardwareSpec object")
        missing = [k for k in SPEC_REQUIRED_KEYS if k not in data]
        if missing:
            raise ValueError(f"spec file {p} lacks the {missing} section(s); a HardwareSpec JSON must state "
                             f"{list(SPEC_REQUIRED_KEYS)} (write it with HardwareSpec.to_json, or use a preset)")
        try:
            return HardwareSpec.from_json(json.dumps(data))
        except (ValueError, TypeError, KeyError) as e:
            raise ValueError(f"spec file {p}: {e}") from None
    return get_preset(str(spec))


def _tmp_name(out: Path) -> Path:
    return out.with_name(f".{out.stem}.partial-{os.getpid()}{out.suffix}")


def check_writable_file(out: str | os.PathLike, *, overwrite: bool, what: str = "--out") -> Path:
    """``out`` as a path whose folder exists (created) and is writable; refuses an existing file unless
    ``overwrite`` (``FileExistsError``) and a folder (``ValueError``)."""
    out = Path(out)
    if out.is_dir():
        raise ValueError(f"{what} {out} is a folder; give a file name, e.g. {out / 'model.onnx'}")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; choose another {what} or pass --overwrite")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        probe = _tmp_name(out).with_suffix(".probe")
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ValueError(f"cannot write {what} {out}: {e.strerror or e} ({type(e).__name__}); "
                         "choose a writable location") from None
    return out


def export_model(checkpoint: str | os.PathLike, spec: str, out: str | os.PathLike, *, fmt: str = "int",
                 n_steps: int = 30, loop: bool = False, overwrite: bool = False, verify_n: int = 0,
                 data_dir: str | None = None) -> dict[str, Any]:
    """Export a checkpoint to ONNX (:func:`exports.onnx_export.export_command`); optionally verify
    the written file in onnxruntime on the first ``verify_n`` MNIST test images.

    The graph is written to a temporary name next to ``out`` and renamed to ``out`` only when the
    export (and the verification, if asked) succeeded (a failed verification returns
    ``info["path"] = None``); on any error nothing is left behind and an
    existing ``out`` is untouched.

    Raises:
        ValueError: a bad argument, spec, checkpoint (missing, another format, not an EqPropMLP,
            non-finite weights), or data (missing / corrupt files, a ``data_dir`` that does not exist).
        FileExistsError: ``out`` exists and ``overwrite`` is False.
    """
    import torch

    from exports.metadata import read_spec
    from exports.onnx_export import export_command
    from models.checkpoint import CheckpointError, load_checkpoint
    from models.eqprop_mlp import EqPropMLP

    if not isinstance(n_steps, int) or n_steps < 1:
        raise ValueError(f"--steps {n_steps}: allowed: an int >= 1")
    if not isinstance(verify_n, int) or verify_n < 0 or verify_n > 10000:
        raise ValueError(f"--verify {verify_n}: allowed: 0 (no verification) to 10000 MNIST test images")
    if data_dir is not None and not Path(data_dir).is_dir():
        raise ValueError(f"--data-dir {data_dir} is not a folder")
    if data_dir is not None and verify_n == 0:
        raise ValueError("--data-dir only applies with --verify N")
    spec_obj = load_spec_arg(spec)
    out = check_writable_file(out, overwrite=overwrite)
    try:
        net, _ = load_checkpoint(checkpoint)
    except CheckpointError as e:
        raise ValueError(str(e)) from None
    if not isinstance(net, EqPropMLP):
        raise ValueError(f"checkpoint {checkpoint} holds a {type(net).__name__}; export takes an EqPropMLP")
    bad = [k for k, v in net.state_dict().items() if not torch.isfinite(v).all()]
    if bad:
        raise ValueError(f"checkpoint {checkpoint} has non-finite weights in {bad} (a diverged training run); "
                         "an exported graph would compute NaN. Retrain the model")
    x = None
    if verify_n > 0:  # load the data before writing anything: a data error leaves no file behind
        import numpy as np

        from ..data import DataError, load_dataset

        try:
            x, _ = load_dataset("mnist", "test", data_dir)
        except DataError as e:
            raise ValueError(f"--verify needs the MNIST test set: {e}") from None
        x = np.asarray(x[:verify_n])
    tmp = _tmp_name(out)
    try:
        export_command(checkpoint, spec_obj, tmp, fmt=fmt, n_steps=n_steps, overwrite=True, loop=loop)
        info: dict[str, Any] = {"path": str(out), "bytes": tmp.stat().st_size, "spec": read_spec(tmp).name}
        if x is not None:
            from exports import verify

            fn = {"float": verify.verify_float, "qdq": verify.verify_qdq, "int": verify.verify_int}[fmt]
            info["verify"] = fn(net, str(tmp), x, **({} if fmt == "float" else {"spec": read_spec(tmp)}))
        if x is not None and not info["verify"].get("passed", False):
            info["path"] = None  # a graph that failed verification is not written (the command failed)
            return info
        if out.exists() and not overwrite:  # appeared while we worked
            raise FileExistsError(f"{out} appeared while exporting; choose another --out or pass --overwrite")
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return info


def sweep(*, design: bool = False, list_fields: bool = False, **kwargs: Any) -> dict[str, Any]:
    """``run_suite.py sweep``.

    * ``list_fields``: ``{"fields": {dotted path: "Class.field: type"}}`` of every sweepable spec field
      (:func:`tracks.sweep.space.spec_fields`).
    * ``design``: a design-space sweep (:func:`tracks.sweep.design.design_sweep`) from ``config`` (a .toml /
      .json file) and the command-line ``grid`` (``["FIELD=V1,V2", ...]``), ``fixed`` (``["FIELD=V", ...]``),
      ``base``, ``seeds``, ``models`` (checkpoint paths), ``n_test``, ``n_steps``, ``insitu_steps`` on top;
      ``out``, ``jobs``, ``scheduler``, ``resume``, ``data_dir``, ``progress`` as given.
    * otherwise the analog noise sweep (:func:`tracks.sweep.sweep_command`) with ``kwargs``.

    Raises:
        ValueError: bad usage, naming the option and the fix (before any work).
    """
    if list_fields:
        from ..sweep.space import spec_fields

        return {"fields": spec_fields()}
    if not design:
        from ..sweep import sweep_command

        return sweep_command(**kwargs)
    from ..sweep.design import config_from_args, design_sweep
    from ..sweep.space import parse_assignment

    grid = [parse_assignment(g, many=True) for g in kwargs.pop("grid", ()) or ()]
    fixed = [parse_assignment(f, many=False) for f in kwargs.pop("fixed", ()) or ()]
    insitu_steps = kwargs.pop("insitu_steps", None)
    models = kwargs.pop("models", None)
    cfg = config_from_args(kwargs.pop("config", None), grid=grid, fixed=fixed, base=kwargs.pop("base", None),
                           seeds=kwargs.pop("seeds", None), n_test=kwargs.pop("n_test", None),
                           n_steps=kwargs.pop("n_steps", None), models=list(models) if models else None)
    if insitu_steps is not None:
        import dataclasses

        cfg = dataclasses.replace(cfg, insitu={**cfg.insitu, "steps": insitu_steps})
    return design_sweep(cfg, **kwargs)
