import pytest
import torch

from qformer.bridge.qformer import QFormer, attention_mask
from qformer.config import QFormerConfig

Q = 3


@pytest.fixture
def qf():
    torch.manual_seed(0)
    config = QFormerConfig(num_queries=Q, hidden_size=16, num_layers=3, num_heads=2, intermediate_size=32,
                           cross_attention_freq=2, encoder_width=12, vocab_size=50, max_text_length=8,
                           max_position_embeddings=16, embed_dim=8, tokenizer="byt5")
    return QFormer(config).eval()


def inputs(seed=0, batch=2, text_len=5):
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(batch, 7, 12, generator=g)
    ids = torch.randint(0, 50, (batch, text_len), generator=g)
    mask = torch.ones(batch, text_len, dtype=torch.long)
    mask[1, 3:] = 0  # the second row is padded
    return image, ids, mask


def test_mask_matrices():
    text_mask = torch.tensor([[1, 1, 0]])
    L = Q + 3
    unimodal = attention_mask(Q, text_mask, "unimodal")[0, 0]
    assert not unimodal[:Q, Q:].any(), "in ITC mode a query must not see text"
    assert not unimodal[Q:, :Q].any(), "in ITC mode text must not see queries"
    causal = attention_mask(Q, text_mask, "causal")[0, 0]
    assert not causal[:Q, Q:].any() and causal[Q:, :Q].all()
    assert not causal[Q, Q + 1], "in ITG mode a text token must not see later text"
    assert causal[Q + 1, Q]
    bidirectional = attention_mask(Q, text_mask, "bidirectional")[0, 0]
    assert bidirectional[:, : L - 1].all() and not bidirectional[:, L - 1].any()  # only the pad column is hidden
    with pytest.raises(ValueError, match="unknown mask mode"):
        attention_mask(Q, text_mask, "sideways")


def test_shapes_and_cross_attention_frequency(qf):
    image, ids, mask = inputs()
    assert qf(image).shape == (2, Q, 16)
    assert qf(image, ids, mask).shape == (2, Q + 5, 16)
    assert qf(None, ids, mask).shape == (2, 5, 16)
    assert [layer.cross_attn is not None for layer in qf.layers] == [True, False, True]


def test_itc_queries_cannot_see_text_but_itm_queries_can(qf):
    image, ids, mask = inputs()
    _, other_ids, _ = inputs(seed=1)
    uni_a, uni_b = qf(image, ids, mask, "unimodal"), qf(image, other_ids, mask, "unimodal")
    torch.testing.assert_close(uni_a[:, :Q], uni_b[:, :Q], rtol=0, atol=0)
    torch.testing.assert_close(uni_a[:, :Q], qf(image), rtol=1e-6, atol=1e-6)  # = queries alone
    # text in unimodal mode equals text alone: it never saw the image
    torch.testing.assert_close(uni_a[:, Q:], qf(None, ids, mask), rtol=1e-5, atol=1e-5)
    bi_a, bi_b = qf(image, ids, mask, "bidirectional"), qf(image, other_ids, mask, "bidirectional")
    assert not torch.allclose(bi_a[:, :Q], bi_b[:, :Q])


def test_itg_text_cannot_see_later_text(qf):
    image, ids, mask = inputs()
    later = ids.clone()
    later[:, 3:] = (later[:, 3:] + 1) % 50
    a, b = qf(image, ids, mask, "causal"), qf(image, later, mask, "causal")
    torch.testing.assert_close(a[:, : Q + 3], b[:, : Q + 3], rtol=0, atol=0)
    assert not torch.allclose(a[0, Q + 3 :], b[0, Q + 3 :])


def test_padding_is_invisible(qf):
    image, ids, mask = inputs()
    changed = ids.clone()
    changed[1, 3:] = 0
    for mode in ("unimodal", "bidirectional", "causal"):
        a, b = qf(image, ids, mask, mode), qf(image, changed, mask, mode)
        torch.testing.assert_close(a[1, : Q + 3], b[1, : Q + 3], rtol=1e-6, atol=1e-6)


def test_image_changes_only_reach_queries_through_cross_attention(qf):
    image, ids, mask = inputs()
    other = image + 1.0
    a, b = qf(image, ids, mask, "unimodal"), qf(other, ids, mask, "unimodal")
    assert not torch.allclose(a[:, :Q], b[:, :Q])
    torch.testing.assert_close(a[:, Q:], b[:, Q:], rtol=0, atol=0)
