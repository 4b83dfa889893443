import json

import pytest

import qformer
from qformer.config import Blip2Config, ConfigError

from .conftest import build


def test_presets_are_listed_and_built():
    assert {"tiny-random", "tiny-random-t5"} <= set(qformer.list_models())
    model = build(qformer={"num_layers": 1})
    assert len(model.qformer.layers) == 1
    assert model.config.qformer.encoder_width == model.vision.width  # derived from the built encoder


def test_dotted_overrides():
    config = qformer.get_config("tiny-random", **{"qformer.num_queries": 3, "lm.prompt": "hi"})
    assert config.qformer.num_queries == 3 and config.lm.prompt == "hi"


@pytest.mark.parametrize(
    "change, message",
    [
        ({"colour": 1}, "unknown key(s) ['colour']"),
        ({"qformer": {"num_heads": 3}}, "qformer.hidden_size=32 is not divisible by qformer.num_heads=3"),
        ({"qformer": {"hidden_sise": 3}}, "qformer: unknown key(s) ['hidden_sise']"),
        ({"vision": {"backend": "caffe"}}, "vision.backend='caffe'"),
        ({"lm": {"dtype": "float8"}}, "lm.dtype='float8'"),
        ({"lm": {"question_template": "Q:"}}, "lm.question_template must contain '{question}'"),
    ],
)
def test_bad_config_names_the_key(change, message):
    data = qformer.get_config("tiny-random").to_dict()
    for key, value in change.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) else value
    with pytest.raises(ConfigError) as error:
        Blip2Config.from_dict(data)
    assert message in str(error.value)


def test_inconsistent_dimensions_are_named():
    with pytest.raises(ConfigError, match="qformer.encoder_width=48 but the vision encoder .* width 32"):
        build(qformer={"encoder_width": 48})
    small_vocab = build(qformer={"vocab_size": 100})
    with pytest.raises(ConfigError, match="qformer.vocab_size=100 is smaller than the 386 tokens"):
        _ = small_vocab.tokenizer


def test_unknown_preset(tmp_path):
    with pytest.raises(KeyError, match="unknown model preset 'nope'"):
        qformer.get_config("nope")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        qformer.get_config(str(bad))


def test_config_round_trips_through_json(tmp_path):
    config = qformer.get_config("tiny-random")
    path = tmp_path / "c.json"
    path.write_text(json.dumps(config.to_dict()))
    assert Blip2Config.from_json(path) == config
