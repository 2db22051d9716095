"""Named hardware presets: a plain dict registry with :func:`get_preset` / :func:`register_preset`.

=========  ==========================  =================  ========  =========  ===========================
name       weights                     state              acc_bits  rounding   update (hidden, shift, SR)
=========  ==========================  =================  ========  =========  ===========================
fp32       float32                     float (None)       None      --         None (float)
int8       int8 narrow, per-channel,   u8, frac_bits=7    32, sat   nearest    16 bits, >>8, stochastic
           max_abs
int4       int4 narrow, per-channel,   u8, frac_bits=7    24, sat   nearest    16 bits, >>8, stochastic
           max_abs
ternary    {-1,0,1}, per-channel, TWN  u8, frac_bits=7    24, sat   nearest    16 bits, >>8, stochastic
           (0.7 mean|w|, mse alpha)
analog_pcm float32 -> conductance pairs     u8, frac_bits=7    None      nearest    None; AnalogSpec, see below
=========  ==========================  =================  ========  =========  ===========================

``analog_pcm`` parameters come from the PCM statistical model of Nandakumar et al., ICECS 2019
(doi:10.1109/ICECS46596.2019.8964852) as implemented in IBM aihwkit's ``PCMLikeNoiseModel``
(``aihwkit/inference/noise/pcm.py``), evaluated at ``g = g_max``:

* ``g_max_uS = 25``: the reference ``g_max`` of the fitted polynomials;
* ``prog_noise_std = 0.042``: ``sigma_prog(g) = 0.26348 + 1.9650 x - 1.1731 x**2`` uS with
  ``x = g / g_max`` gives 1.055 uS at ``x = 1``, i.e. 0.042 of ``g_max`` (0.0105 at ``x = 0``);
* ``read_noise_std = 0.0088``: the 1/f read-noise amplitude ``Q_s`` at ``x = 1``; aihwkit scales
  it by ``sqrt(ln((t + t_read) / (2 t_read)))`` (about 4.2 at 20 s, ``t_read = 250 ns``); here
  it is the std of one read -- the analog issue decides the time dependence;
* ``drift_nu = 0.049``, ``drift_t0_s = 20``: mean drift exponent at ``x = 1`` (the fit
  ``-0.0155 ln x + 0.0244`` clamped to ``[0.049, 0.1]``) and the fit's first read time;
* 8-bit DAC and ADC with full scale 1.0, no stuck-at faults: design choices, not measurements.

State format choice: EqProp states are hard-sigmoid outputs in ``[0, 1]``. Unsigned 8-bit with
``frac_bits = 7`` represents ``1.0`` exactly (code 128), so ``rho`` is the integer clamp
``[0, 128]`` (129 levels, LSB 2**-7); the codes 129..255 are unused by the clamp but keep
headroom for pre-activations quantised in the same format. ``int4`` and ``ternary`` keep 8-bit
states (W4A8, W2A8): the EqProp gradient is a difference of nudged and free states, and with
4-bit states (LSB 1/8) any nudge below one LSB vanishes.

Accumulators: 24 bits for int4/ternary (a 784-input layer peaks at ``784 * 7 * 128 < 2**20``),
which also keeps sums exact in float32 BLAS (``|acc| < 2**24``); 32 bits for int8.
"""
from __future__ import annotations

from .formats import AnalogSpec, FixedPoint, UpdateSpec, WeightFormat
from .spec import HardwareSpec

_U8_STATE = FixedPoint(bits=8, frac_bits=7, signed=False)  # [0, 1.9921875], 1.0 = code 128
_UPDATE = UpdateSpec(hidden_bits=16, lr_shift=8, lr_multiplier=1, stochastic=True)

_PRESETS: dict[str, HardwareSpec] = {}


def register_preset(spec: HardwareSpec, *, overwrite: bool = False) -> HardwareSpec:
    """Add ``spec`` under ``spec.name``. Re-registering a name needs ``overwrite=True``.

    >>> register_preset(HardwareSpec("int8"))
    Traceback (most recent call last):
    ...
    ValueError: preset name='int8' is already registered; pass overwrite=True to replace it
    """
    if not isinstance(spec, HardwareSpec):
        raise ValueError(f"spec={spec!r} is invalid; allowed: a HardwareSpec")
    if spec.name in _PRESETS and not overwrite:
        raise ValueError(f"preset name={spec.name!r} is already registered; pass overwrite=True to replace it")
    _PRESETS[spec.name] = spec
    return spec


def get_preset(name: str) -> HardwareSpec:
    """The registered preset ``name`` (specs are frozen, so sharing is safe).

    >>> get_preset("int8").weights.bits
    8
    >>> get_preset("int9")
    Traceback (most recent call last):
    ...
    ValueError: preset name='int9' is unknown; allowed: ['fp32', 'int8', 'int4', 'ternary', 'analog_pcm']
    """
    if name not in _PRESETS:
        raise ValueError(f"preset name={name!r} is unknown; allowed: {list(_PRESETS)}")
    return _PRESETS[name]


def list_presets() -> list[str]:
    """Registered preset names, in registration order."""
    return list(_PRESETS)


register_preset(HardwareSpec(
    name="fp32",
    weights=WeightFormat("float32"),
    state=None,            # float states
    acc_bits=None,         # float accumulation
    overflow="saturate",   # unused for float
    rounding="nearest_even",
    update=None,           # float update
))
register_preset(HardwareSpec(
    name="int8",
    weights=WeightFormat("int8", narrow_range=True, granularity="per_channel", scale_rule="max_abs"),
    state=_U8_STATE,
    acc_bits=32,
    overflow="saturate",
    rounding="nearest_even",
    update=_UPDATE,
))
register_preset(HardwareSpec(
    name="int4",
    weights=WeightFormat("int4", narrow_range=True, granularity="per_channel", scale_rule="max_abs"),
    state=_U8_STATE,
    acc_bits=24,
    overflow="saturate",
    rounding="nearest_even",
    update=_UPDATE,
))
register_preset(HardwareSpec(
    name="ternary",
    weights=WeightFormat("ternary", granularity="per_channel", scale_rule="mse", ternary_threshold=0.7),
    state=_U8_STATE,
    acc_bits=24,
    overflow="saturate",
    rounding="nearest_even",
    update=_UPDATE,
))
register_preset(HardwareSpec(
    name="analog_pcm",
    weights=WeightFormat("float32"),  # programmed as conductances, not integer codes
    state=_U8_STATE,
    acc_bits=None,                    # the crossbar sums currents in analog
    overflow="saturate",
    rounding="nearest_even",
    update=None,
    analog=AnalogSpec(
        g_max_uS=25.0, g_min_uS=0.0, prog_noise_std=0.042, read_noise_std=0.0088,
        drift_nu=0.049, drift_t0_s=20.0, stuck_at_gmin_frac=0.0, stuck_at_gmax_frac=0.0,
        dac_bits=8, adc_bits=8, adc_range=1.0,
    ),
))


# --------------------------------------------------------------------------- device update models
_AIHWKIT_RANGE = 1.2   # aihwkit PulsedDevice bounds w_min = -0.6, w_max = 0.6
DEVICE_PRESETS: dict[str, dict] = {
    "ideal": {"device_model": "ideal"},
    # aihwkit PulsedDevice defaults (src/aihwkit/simulator/configs/devices.py): dw_min 0.001 on a
    # range of 1.2 (our steps are fractions of the range), dw_min_dtod 0.3, dw_min_std 0.3,
    # up_down 0, up_down_dtod 0.01; pulse count capped at desired_bl = 31.
    "constant_step": {"device_model": "constant_step", "dw_min": 0.001 / _AIHWKIT_RANGE, "dw_min_dtod": 0.3,
                      "dw_min_std": 0.3, "up_down": 0.0, "up_down_dtod": 0.01, "max_pulses": 31},
    # aihwkit SoftBoundsDevice: the same PulsedDevice defaults, steps vanishing at the bounds.
    "soft_bounds": {"device_model": "soft_bounds", "dw_min": 0.001 / _AIHWKIT_RANGE, "dw_min_dtod": 0.3,
                    "dw_min_std": 0.3, "up_down": 0.0, "up_down_dtod": 0.01, "max_pulses": 31},
    # aihwkit LinearStepDevice with gamma_up = gamma_down = 0.5 (aihwkit's default slopes are 0, which
    # is the constant step; 0.5: half-way to soft bounds, our choice).
    "linear_step": {"device_model": "linear_step", "dw_min": 0.001 / _AIHWKIT_RANGE, "dw_min_dtod": 0.3,
                    "dw_min_std": 0.3, "up_down_dtod": 0.01, "gamma_up": 0.5, "gamma_down": 0.5, "max_pulses": 31},
    # aihwkit ExpStepDevice defaults (es_A_up 0.00081, es_A_down 0.36833, es_gamma_up 12.44625,
    # es_gamma_down 12.78785, es_a 0.244, es_b 0.2425: AnalogSpec's defaults).
    "exp_step": {"device_model": "exp_step", "dw_min": 0.001 / _AIHWKIT_RANGE, "dw_min_dtod": 0.3,
                 "dw_min_std": 0.3, "up_down_dtod": 0.01, "max_pulses": 31},
    # aihwkit PowStepDevice defaults: pow_gamma 1, pow_gamma_dtod 0.1, pow_up_down 0 (Fusi & Abbott 2007).
    "pow_step": {"device_model": "pow_step", "dw_min": 0.001 / _AIHWKIT_RANGE, "dw_min_dtod": 0.3,
                 "dw_min_std": 0.3, "up_down_dtod": 0.01, "pow_gamma": 1.0, "pow_gamma_dtod": 0.1,
                 "pow_up_down": 0.0, "max_pulses": 31},
}
"""Named in-situ device update models: :class:`AnalogSpec` field values (``device_*``, ``dw_min``, ...)
from IBM aihwkit's device defaults (see :mod:`hwsim.devices` for the models and papers)."""


def with_device(analog: AnalogSpec, name: str, **overrides) -> AnalogSpec:
    """``analog`` with the device update model ``name`` of :data:`DEVICE_PRESETS` (then ``overrides``).

    >>> with_device(AnalogSpec(), "soft_bounds", up_down=0.2).device_model
    'soft_bounds'
    >>> with_device(AnalogSpec(), "rram")
    Traceback (most recent call last):
    ...
    ValueError: device preset 'rram' is unknown; allowed: ['ideal', 'constant_step', 'soft_bounds', 'linear_step', 'exp_step', 'pow_step']
    """
    import dataclasses
    if name not in DEVICE_PRESETS:
        raise ValueError(f"device preset {name!r} is unknown; allowed: {list(DEVICE_PRESETS)}")
    return dataclasses.replace(analog, **{**DEVICE_PRESETS[name], **overrides})
