"""The hardware spec and export settings travel inside the ONNX file (``metadata_props``).

Keys (all strings, JSON values where structured):

=============================  ==============================================================
key                            value
=============================  ==============================================================
``eqprop_hwsim.spec``          :meth:`quant.HardwareSpec.to_json` of the spec the model was exported under
``eqprop_hwsim.format``        ``float``, ``qdq`` or ``int`` (see :mod:`exports.onnx_export`)
``eqprop_hwsim.n_steps``       number of relaxation sweeps ``T`` in the graph
``eqprop_hwsim.loop``          ``true`` when the sweeps are an ONNX ``Loop``, ``false`` when unrolled
``eqprop_hwsim.model``         JSON of the model config (:meth:`models.eqprop_mlp.EqPropConfig.to_dict`)
=============================  ==============================================================

>>> import onnx
>>> from quant import get_preset
>>> m = onnx.ModelProto()
>>> write_metadata(m, get_preset("int4"), fmt="qdq", n_steps=5, loop=False, model_config={"sizes": [4, 2]})
>>> read_spec(m) == get_preset("int4"), read_metadata(m)["n_steps"]
(True, 5)
"""
from __future__ import annotations

import json
from os import PathLike
from typing import Any

import onnx

from quant import HardwareSpec

PREFIX = "eqprop_hwsim."
KEY_SPEC = PREFIX + "spec"
KEY_FORMAT = PREFIX + "format"
KEY_N_STEPS = PREFIX + "n_steps"
KEY_LOOP = PREFIX + "loop"
KEY_MODEL = PREFIX + "model"


def write_metadata(model: onnx.ModelProto, spec: HardwareSpec, *, fmt: str, n_steps: int, loop: bool,
                   model_config: dict[str, Any]) -> None:
    """Set (replace) this project's ``metadata_props`` entries of ``model`` in place."""
    if not isinstance(spec, HardwareSpec):
        raise ValueError(f"spec={spec!r} is invalid; allowed: a quant.HardwareSpec")
    entries = {
        KEY_SPEC: spec.to_json(indent=None),
        KEY_FORMAT: str(fmt),
        KEY_N_STEPS: str(int(n_steps)),
        KEY_LOOP: "true" if loop else "false",
        KEY_MODEL: json.dumps(model_config),
    }
    keep = [p for p in model.metadata_props if p.key not in entries]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    onnx.helper.set_model_props(model, {**{p.key: p.value for p in keep}, **entries})


def _load(model_or_path) -> onnx.ModelProto:
    if isinstance(model_or_path, onnx.ModelProto):
        return model_or_path
    if isinstance(model_or_path, (str, PathLike)):
        try:
            return onnx.load(str(model_or_path), load_external_data=False)
        except FileNotFoundError:
            raise ValueError(f"path={str(model_or_path)!r} does not exist; allowed: an exported .onnx file") from None
    raise ValueError(f"model={model_or_path!r} is invalid; allowed: an onnx.ModelProto or a path")


def read_metadata(model_or_path) -> dict[str, Any]:
    """This project's metadata of an exported model: ``{"spec", "format", "n_steps", "loop", "model"}``.

    Raises:
        ValueError: the file carries no ``eqprop_hwsim.spec`` (not exported by this project).
    """
    m = _load(model_or_path)
    props = {p.key: p.value for p in m.metadata_props}
    if KEY_SPEC not in props:
        raise ValueError(f"model has no {KEY_SPEC!r} metadata; allowed: a file written by exports.onnx_export")
    return {
        "spec": HardwareSpec.from_json(props[KEY_SPEC]),
        "format": props.get(KEY_FORMAT),
        "n_steps": int(props[KEY_N_STEPS]) if KEY_N_STEPS in props else None,
        "loop": props.get(KEY_LOOP) == "true",
        "model": json.loads(props[KEY_MODEL]) if KEY_MODEL in props else None,
    }


def read_spec(model_or_path) -> HardwareSpec:
    """The :class:`quant.HardwareSpec` stored in an exported model (equal to the one exported)."""
    return read_metadata(model_or_path)["spec"]
