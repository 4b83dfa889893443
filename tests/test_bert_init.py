import pytest
import torch
from transformers import BertConfig, BertModel

from .conftest import build


@pytest.fixture
def bert_folder(tmp_path):
    torch.manual_seed(1)
    config = BertConfig(vocab_size=300, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    BertModel(config).save_pretrained(tmp_path)
    return tmp_path


def test_layers_come_from_bert(bert_folder):
    bert = BertModel.from_pretrained(bert_folder).state_dict()
    model = build(qformer={"bert_init": str(bert_folder)})
    ours = model.qformer.state_dict()
    torch.testing.assert_close(ours["layers.1.self_attn.qkv.weight"][32:64],
                               bert["encoder.layer.1.attention.self.key.weight"])
    torch.testing.assert_close(ours["layers.0.text_ffn.fc1.bias"], bert["encoder.layer.0.intermediate.dense.bias"])
    torch.testing.assert_close(ours["layers.0.query_ffn.fc2.weight"], bert["encoder.layer.0.output.dense.weight"])
    torch.testing.assert_close(ours["word_embeddings.weight"][:300], bert["embeddings.word_embeddings.weight"])
    fresh = build()
    assert torch.equal(
        ours["layers.0.cross_attn.kv.weight"], fresh.qformer.state_dict()["layers.0.cross_attn.kv.weight"]
    ), "cross-attention has no BERT counterpart and keeps the seed's init"


def test_mismatched_bert_is_refused(bert_folder):
    with pytest.raises(ValueError, match="needs hidden_size=64"):
        build(qformer={"bert_init": str(bert_folder), "hidden_size": 64, "intermediate_size": 64})
