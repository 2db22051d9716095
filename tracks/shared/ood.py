"""Out-of-distribution detection for the tracks: OOD sets, detection metrics (scikit-learn), the
paired bootstrap, and the scores of :mod:`models.scores` on the hardware paths (Track 36).

Convention: an ID input is the positive class (label 1) and every score is a *confidence*
(higher = more in-distribution, :func:`models.scores.confidence`). AUROC is
``sklearn.metrics.roc_auc_score``; FPR at 95 % TPR is read off ``sklearn.metrics.roc_curve``: the
false-positive rate (OOD accepted as ID) at the first threshold that keeps >= 95 % of the ID inputs.

>>> import numpy as np
>>> auroc(np.array([3.0, 4.0]), np.array([1.0, 2.0])), auroc(np.array([1.0, 2.0]), np.array([3.0, 4.0]))
(1.0, 0.0)
>>> fpr_at_tpr(np.arange(100.0), np.arange(100.0) - 50.0)   # 95 of 100 ID kept from threshold 5 up
0.45
"""
from __future__ import annotations

import copy
import dataclasses
from typing import Any, Callable

import numpy as np
import torch

from models.scores import scores_from_states

OOD_KINDS = ("fashion_mnist", "mnist", "gaussian", "uniform", "inverted")
"""Kinds of OOD set: another data set's test images, two noise images, the ID test images inverted."""


# ------------------------------------------------------------------------------ OOD sets
def noise_images(kind: str, n: int, ref: np.ndarray, seed: int) -> np.ndarray:
    """``(n, 784)`` float32 noise images in [0, 1].

    ``gaussian``: pixels ``N(mu, sd)`` with the mean and std of the reference (ID test) pixels,
    clipped to [0, 1]; ``uniform``: pixels ``U(0, 1)``. Drawn from ``numpy.random.default_rng(seed)``.
    """
    rng = np.random.default_rng(seed)
    d = ref.shape[1]
    if kind == "gaussian":
        return np.clip(rng.normal(float(ref.mean()), float(ref.std()), (n, d)), 0.0, 1.0).astype(np.float32)
    if kind == "uniform":
        return rng.uniform(0.0, 1.0, (n, d)).astype(np.float32)
    raise ValueError(f"noise kind={kind!r} is invalid; allowed: 'gaussian', 'uniform'")


# ------------------------------------------------------------------------------ metrics
def _labels(n_in: int, n_out: int) -> np.ndarray:
    return np.concatenate([np.ones(n_in), np.zeros(n_out)])


def auroc(conf_in: np.ndarray, conf_out: np.ndarray) -> float:
    """``roc_auc_score`` with ID as the positive class (0.5: no information; < 0.5: the orientation
    is wrong for this pair, which is reported, never flipped)."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(_labels(len(conf_in), len(conf_out)), np.concatenate([conf_in, conf_out])))


def fpr_at_tpr(conf_in: np.ndarray, conf_out: np.ndarray, tpr_level: float = 0.95) -> float:
    """False-positive rate at the first ROC point with TPR >= ``tpr_level`` (``sklearn.metrics.roc_curve``)."""
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(_labels(len(conf_in), len(conf_out)), np.concatenate([conf_in, conf_out]),
                            drop_intermediate=False)
    return float(fpr[int(np.searchsorted(tpr, tpr_level, side="left"))])


def roc(conf_in: np.ndarray, conf_out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(fpr, tpr)`` of ``sklearn.metrics.roc_curve`` (for the plots)."""
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(_labels(len(conf_in), len(conf_out)), np.concatenate([conf_in, conf_out]))
    return fpr, tpr


def auroc_rows(conf_in: np.ndarray, conf_out: np.ndarray) -> np.ndarray:
    """AUROC of each row of ``conf_in (R, n_in)`` vs ``conf_out (R, n_out)`` at once, by the
    Mann-Whitney identity ``AUROC = U / (n_in n_out)`` (``scipy.stats.mannwhitneyu``, ties counted
    half): the same number as :func:`auroc` (``roc_auc_score``), vectorised over bootstrap resamples.

    >>> import numpy as np
    >>> a, b = np.array([[3.0, 1.0, 2.0]]), np.array([[1.0, 0.0]])
    >>> float(auroc_rows(a, b)[0]) == auroc(a[0], b[0])
    True
    """
    from scipy.stats import mannwhitneyu

    u = mannwhitneyu(conf_in, conf_out, axis=1, method="asymptotic").statistic
    return np.asarray(u, dtype=np.float64) / (conf_in.shape[1] * conf_out.shape[1])


def paired_bootstrap(a_in, a_out, b_in, b_out, *, n_boot: int, seed: int, chunk: int = 50) -> dict[str, float]:
    """Paired, stratified bootstrap of ``AUROC(a) - AUROC(b)`` over test inputs.

    Each resample draws ID indices (with replacement) from the ID inputs and OOD indices from the OOD
    inputs, and evaluates *both* scores on the same indices (:func:`auroc_rows`, ``chunk`` resamples
    at a time). One-sided p-value of "a is better than b": the fraction of resamples with
    ``AUROC(a) <= AUROC(b)``, as ``(count + 1) / (n_boot + 1)`` (never 0 for finitely many resamples).

    Returns:
        ``{"diff": observed AUROC(a) - AUROC(b) (roc_auc_score), "p_one_sided", "ci_lo", "ci_hi"}``
        (95 % percentile interval of the resampled difference).
    """
    a_in, a_out, b_in, b_out = (np.asarray(v, dtype=np.float64) for v in (a_in, a_out, b_in, b_out))
    if len(a_in) != len(b_in) or len(a_out) != len(b_out):
        raise ValueError("paired_bootstrap: both scores must be measured on the same inputs")
    if n_boot < 1:
        raise ValueError(f"n_boot={n_boot} is invalid; allowed: an int >= 1")
    rng = np.random.default_rng(seed)
    n_in, n_out = len(a_in), len(a_out)
    diffs = []
    for start in range(0, n_boot, chunk):
        r = min(chunk, n_boot - start)
        i = rng.integers(0, n_in, (r, n_in))
        o = rng.integers(0, n_out, (r, n_out))
        diffs.append(auroc_rows(a_in[i], a_out[o]) - auroc_rows(b_in[i], b_out[o]))
    d = np.concatenate(diffs)
    count = int((d <= 0).sum())
    return {"diff": auroc(a_in, a_out) - auroc(b_in, b_out), "p_one_sided": (count + 1) / (n_boot + 1),
            "ci_lo": float(np.percentile(d, 2.5)), "ci_hi": float(np.percentile(d, 97.5))}


# ------------------------------------------------------------------------------ hardware paths
def with_params(net, params: dict[str, torch.Tensor]):
    """A float64 copy of ``net`` whose parameters named in ``params`` are replaced (the energy of
    the model a chip holds: its quantised or programmed weights)."""
    twin = copy.deepcopy(net).double()
    with torch.no_grad():
        for name, value in params.items():
            twin.get_parameter(name).copy_(torch.as_tensor(value, dtype=torch.float64))
    return twin


def int_scorer(net, spec, *, n_steps: int) -> Callable[[torch.Tensor], tuple[dict[str, np.ndarray], dict[str, Any]]]:
    """Scores on the integer simulator (:class:`hwsim.fixed_point.FixedPointMLP` of ``net`` under
    ``spec``, built once): returns ``score(x) -> (raw scores, {"frac_settled", "pred"})``.

    The integer free phase settles on its own arithmetic (deterministic rounding: ``info.steps`` is
    the first sweep that changed no code). Its states and input codes are dequantised with the state
    LSB, and ``E`` / ``Phi`` are those of the *quantised* model (``models.qat.qat_weights``: weights
    on the int8 grid, biases on the accumulator grid, the rule every integer path uses).
    """
    import quant
    from hwsim.fixed_point import FixedPointMLP
    from models.qat import qat_weights

    fp = FixedPointMLP.from_model(net, spec)
    params = {}
    for i, d in enumerate(qat_weights(copy.deepcopy(net).double(), spec)):
        params[f"layers.{i}.weight"] = d["w"].detach()
        params[f"layers.{i}.bias"] = d["b"].detach()
    q = with_params(net, params)

    def score(x: torch.Tensor):
        xc = fp.quantize_input(x.detach().cpu().double().numpy())
        codes, info = fp.relax(xc, n_steps=n_steps)
        s = [torch.as_tensor(a) for a in fp.dequantize_states(codes)]
        xq = torch.as_tensor(quant.dequantize_state(xc, spec), dtype=torch.float64)
        raw = scores_from_states(q.energy, q.phi, xq, s, info.steps, n_steps, cost=net.config.cost,
                                 ce_scale=float(net.config.ce_scale))
        return raw, {"frac_settled": float(np.mean(info.converged)), "pred": s[-1].argmax(dim=1).numpy()}

    return score


def analog_scorer(net, *, prog_noise: float, weights: str, seed: int, n_steps: int, tol: float,
                  adc_preact_range: float = 2.0) -> Callable[[torch.Tensor], tuple[dict[str, np.ndarray], dict[str, Any]]]:
    """Scores on one programmed analog crossbar (:class:`hwsim.analog.AnalogCrossbarMLP`,
    ``analog_pcm`` device with programming noise ``prog_noise`` (fraction of g_max) as the only random
    non-ideality, ``weights`` precision before programming, 8-bit DAC/ADC, ADC full scale covering
    pre-activations in ``[-adc_preact_range, adc_preact_range]``: Track 17's chip); returns
    ``score(x) -> (raw scores, {"frac_settled", "pred"})``.

    The chip relaxes through its noisy reads; ``E`` / ``Phi`` are those of the weights it holds
    (:meth:`~hwsim.analog.AnalogCrossbarMLP.effective_weights`), at its states.
    """
    from hwsim.analog import AnalogCrossbarMLP, adc_range_for
    from quant.presets import get_preset
    from tracks.sweep import analog_for_point

    net64 = copy.deepcopy(net).double()
    base = get_preset("analog_pcm").analog
    base = dataclasses.replace(base, adc_range=adc_range_for(net64, adc_preact_range))
    spec, sim = analog_for_point("prog", prog_noise, base)
    chip = AnalogCrossbarMLP(net64, spec, weights=weights, sim=sim, seed=seed)
    params = {}
    for arr, (W, b) in zip(chip.arrays, chip.effective_weights()):
        if arr.weight is not None:
            params[arr.weight] = W
        if arr.bias is not None:
            params[arr.bias] = b
    q = with_params(net, params)

    def score(x: torch.Tensor):
        x64 = x.detach().cpu().double()
        s, info = chip.relax(x64, n_steps=n_steps, tol=tol)
        raw = scores_from_states(q.energy, q.phi, x64, s, info.steps, n_steps, cost=net.config.cost,
                                 ce_scale=float(net.config.ce_scale))
        return raw, {"frac_settled": float(info.converged.double().mean()), "pred": s[-1].argmax(dim=1).numpy()}

    return score
