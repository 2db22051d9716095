"""ONNX export of EqProp models under a hardware spec, verified in onnxruntime.

* :mod:`exports.onnx_export` -- graph builders (``float``, ``qdq``, ``int``; unrolled or ``Loop``),
  :func:`~exports.onnx_export.export_onnx`, :func:`~exports.onnx_export.export_command`;
* :mod:`exports.verify` -- onnxruntime sessions compared with torch / the fixed-point simulator;
* :mod:`exports.metadata` -- the spec in ``metadata_props`` (:func:`~exports.metadata.read_spec`).
"""
from .metadata import read_metadata, read_spec
from .onnx_export import FORMATS, export_command, export_onnx

__all__ = ["FORMATS", "export_command", "export_onnx", "read_metadata", "read_spec"]
