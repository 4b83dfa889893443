"""ITC features are gathered across processes: two ranks of half a batch give the one-process loss."""

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from qformer.bridge.stage1 import Stage1Heads
from qformer.config import QFormerConfig

CONFIG = QFormerConfig(num_queries=3, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                       vocab_size=50, max_position_embeddings=16, max_text_length=8, embed_dim=8)


def features(seed=0, batch=4):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, 16, generator=g), torch.randn(batch, 16, generator=g)


def heads():
    torch.manual_seed(0)
    return Stage1Heads(CONFIG)


def _rank(rank: int, world: int, port: str, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    query_hidden, cls_hidden = features()
    half = slice(rank * 2, rank * 2 + 2)
    model = heads()
    loss, local_similarity = model.itc_loss(model.image_features(query_hidden[half]),
                                            model.text_features(cls_hidden[half]))
    loss.backward()
    results[rank] = (loss.item(), local_similarity, model.vision_proj.weight.grad.clone())
    dist.destroy_process_group()


def test_itc_gathers_across_processes():
    query_hidden, cls_hidden = features()
    model = heads()
    full_loss, full_similarity = model.itc_loss(model.image_features(query_hidden), model.text_features(cls_hidden))
    full_loss.backward()

    results = mp.Manager().dict()
    port = str(29500 + os.getpid() % 1000)
    mp.spawn(_rank, args=(2, port, results), nprocs=2, join=True)
    mean_loss = (results[0][0] + results[1][0]) / 2
    assert abs(mean_loss - full_loss.item()) < 1e-5
    torch.testing.assert_close(results[1][1], full_similarity[2:4, 2:4])
    # DDP averages gradients over ranks; the gathered graph must give the full-batch gradient
    torch.testing.assert_close((results[0][2] + results[1][2]) / 2, model.vision_proj.weight.grad, rtol=1e-4, atol=1e-6)


def test_single_process_needs_no_distributed_setup():
    assert not dist.is_initialized()
    query_hidden, cls_hidden = features()
    model = heads()
    loss, similarity = model.itc_loss(model.image_features(query_hidden), model.text_features(cls_hidden))
    assert similarity.shape == (4, 4) and torch.isfinite(loss)
