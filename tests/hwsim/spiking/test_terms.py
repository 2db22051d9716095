"""The spiking ports refuse models whose terms they do not implement (instead of dropping them)."""
import pytest

from hwsim.spiking.config import SpikingConfig, SpikingParams
from models.engine import UnsupportedError
from models.eqprop_mlp import EqPropConfig, EqPropMLP
from models.skip_mlp import SkipEqPropMLP


def test_mlp_converts_and_skip_model_is_refused_by_name():
    cfg = SpikingConfig()
    p = SpikingParams.from_model(EqPropMLP(EqPropConfig(sizes=(6, 5, 3)), seed=0), cfg)
    assert p.sizes == (6, 5, 3)
    with pytest.raises(UnsupportedError, match=r"spiking ports.*skip\.weight.*layered chain"):
        SpikingParams.from_model(SkipEqPropMLP(EqPropConfig(sizes=(6, 5, 3)), seed=0), cfg)
