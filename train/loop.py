"""The training loop on accelerate: one CPU, one GPU, DDP, FSDP or DeepSpeed, as `accelerate config` says.

Checkpoints hold only what changes (bridge weights, optimizer, scheduler, RNG states, data position),
are written to a temporary folder and renamed into place, and `resume=True` continues exactly.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.utils import set_seed
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

import qformer
from qformer.grounded.loading import bridge_of

from .checkpoints import (
    CHECKPOINTS,
    ResumeError,
    checkpoint_bridge_only,
    find_resumable,
    holds_earlier_run,
    load_checkpoint,
    read_trainer_state,
    recipe_fingerprint,
    save_checkpoint,
)
from .data import ExampleStream, base_dir_of, load_source, stack_pixels
from .evaluate import evaluate
from .features import FeatureCache
from .plots import plot_losses
from .recipe import TrainConfig, save_resolved


class BadStepsError(RuntimeError):
    """Too many non-finite losses in a row: the run cannot recover by skipping."""


@dataclass
class TrainerState:
    step: int = 0
    bad_steps: int = 0
    bad_in_a_row: int = 0
    history: list[dict] = field(default_factory=list)  # logged losses, for the curve and the README


def param_groups(model: qformer.Blip2, weight_decay: float) -> list[dict]:
    """No weight decay on biases, norms, the temperature and the learned queries (as LAVIS)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or name.endswith("query_tokens") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def train(config: TrainConfig, resume: bool = False, overwrite: bool = False,
          resume_other_recipe: bool = False) -> qformer.Blip2:
    """Run `config`. `resume` continues the newest complete checkpoint of the same recipe in its
    output_dir; `overwrite` starts afresh over an earlier run there (which is otherwise refused)."""
    out = Path(config.output_dir)
    if resume and overwrite:
        raise ResumeError("--resume and --overwrite contradict each other: continue the earlier run, or replace it")
    if not resume and holds_earlier_run(out):
        if not overwrite:
            raise ResumeError(f"{out} holds an earlier run (checkpoints or final/): add --resume to continue it, "
                              "--overwrite to replace it, or choose another output_dir")
    accelerator = Accelerator(
        # without it, several CPU processes (torchrun) would each think they were alone
        cpu=not torch.cuda.is_available(),
        mixed_precision=config.mixed_precision,
        gradient_accumulation_steps=config.optim.grad_accumulation,
        log_with="tensorboard",
        project_dir=str(out),
        # stage 2 leaves the text branch unused; DDP must not wait for its gradients
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    set_seed(config.seed)
    model = qformer.create_model(bridge_of(config.model), **config.model_overrides)  # only a bridge trains
    if config.stage == 2 and model.lm is None:
        raise ValueError(f"stage 2 trains the LM loss, but model {config.model!r} has no language model")
    # fused AdamW: one kernel for all parameters on a GPU (bench/qformer_step.py: 1.7x faster steps)
    optimizer = torch.optim.AdamW(param_groups(model, config.optim.weight_decay), lr=config.optim.lr,
                                  betas=config.optim.betas, fused=torch.cuda.is_available())
    scheduler = get_cosine_schedule_with_warmup(optimizer, config.optim.warmup_steps, config.max_steps)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    bare = accelerator.unwrap_model(model)
    checkpoint_bridge_only(accelerator)
    fingerprint = recipe_fingerprint(config)
    if overwrite and accelerator.is_main_process:
        for earlier in (out / CHECKPOINTS, out / "final"):
            shutil.rmtree(earlier, ignore_errors=True)

    source = load_source(config.data.train, config.data.split, config.data.streaming)
    stream = ExampleStream(source, base_dir_of(config.data.train), seed=config.seed,
                           rank=accelerator.process_index, world_size=accelerator.num_processes,
                           shuffle_buffer=config.data.shuffle_buffer,
                           max_unreadable_in_a_row=config.data.max_unreadable_in_a_row, name=config.data.train,
                           num_workers=config.data.num_workers)
    state = TrainerState()
    if resume:
        checkpoint = find_resumable(out, config, accelerator.num_processes, resume_other_recipe, accelerator.print)
        load_checkpoint(accelerator, checkpoint)
        saved = read_trainer_state(checkpoint)
        stream.load_state_dict(saved.pop("data"))
        state = TrainerState(**saved)
        accelerator.print(f"resumed from {checkpoint} at step {state.step}")
    if accelerator.is_main_process:
        save_resolved(config, out)
    accelerator.init_trackers("tensorboard", config={"stage": config.stage, "lr": config.optim.lr})

    cache = FeatureCache(config.feature_cache, bare.config.vision, bare.vision) if config.feature_cache else None
    # workers decode and preprocess with the model's processor, which holds no weights
    batches = stream.batches(config.data.batch_size, bare.processor.image_preprocessor,
                             cached=cache.__contains__ if cache else None)
    progress = tqdm(total=config.max_steps, initial=state.step, disable=not accelerator.is_local_main_process,
                    desc=f"stage {config.stage}", dynamic_ncols=True)
    model.train()
    tick, seen = time.perf_counter(), 0
    while state.step < config.max_steps:
        batch = next(batches)
        if cache is not None:
            tokens, pixels = cache.tokens(batch.keys, batch.images, bare.encode_images), None
        else:
            tokens, pixels = None, stack_pixels(batch.images)
        with accelerator.accumulate(model):
            texts = _text_tensors(bare, batch, config, state.step)
            losses = model(pixel_values=pixels, image_tokens=tokens, stage=config.stage, **texts)
            finite = accelerator.gather(torch.isfinite(losses["loss"].detach()).reshape(1)).all()
            if not finite:
                state.bad_steps += 1
                state.bad_in_a_row += 1
                optimizer.zero_grad()
                if state.bad_in_a_row >= config.max_bad_steps:
                    raise BadStepsError(
                        f"{state.bad_in_a_row} non-finite losses in a row at step {state.step} "
                        f"({state.bad_steps} in all); lower optim.lr, try mixed_precision=bf16 instead of fp16, "
                        "or check the data"
                    )
                continue
            state.bad_in_a_row = 0
            accelerator.backward(losses["loss"])
            if accelerator.sync_gradients and config.optim.grad_clip > 0:
                accelerator.clip_grad_norm_(bare.trainable_parameters(), config.optim.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
        seen += len(batch.images) * accelerator.num_processes
        if not accelerator.sync_gradients:
            continue
        state.step += 1
        progress.update(1)
        if state.step % config.log_every == 0 or state.step == config.max_steps:
            rate = seen / (time.perf_counter() - tick)
            logged = {k: v.item() for k, v in losses.items()} | {"lr": scheduler.get_last_lr()[0], "images_per_s": rate}
            state.history.append({"step": state.step, **logged})
            accelerator.log(logged, step=state.step)
            progress.set_postfix(loss=f"{logged['loss']:.3f}", lr=f"{logged['lr']:.2e}", img_s=f"{rate:.1f}")
            tick, seen = time.perf_counter(), 0
        if config.save_every and state.step % config.save_every == 0 and state.step < config.max_steps:
            save_checkpoint(accelerator, out, state.step, {**asdict(state), "data": stream.state_dict()},
                            fingerprint, config.keep_last)
        if config.eval_every and state.step % config.eval_every == 0 and state.step < config.max_steps:
            _evaluate(accelerator, bare, config, out, state.step)
            model.train()
    progress.close()

    save_checkpoint(accelerator, out, state.step, {**asdict(state), "data": stream.state_dict()}, fingerprint,
                    config.keep_last)
    model.eval()
    if accelerator.is_main_process:
        bare.save_pretrained(out / "final")
        plot_losses(state.history, out / "loss_curve.png", title=f"stage {config.stage}")
        summary = {"steps": state.step, "bad_steps": state.bad_steps, "skipped_images": stream.skipped,
                   "skipped_examples": stream.skipped_examples}
        if cache is not None:
            summary["feature_cache"] = {"folder": str(cache.directory), "hits": cache.hits, "misses": cache.misses}
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        if stream.skipped:
            accelerator.print(f"skipped {stream.skipped} unreadable image(s); see {out / 'summary.json'}")
    _evaluate(accelerator, bare, config, out, state.step)
    accelerator.end_training()
    return bare


def _text_tensors(model: qformer.Blip2, batch, config: TrainConfig, step: int) -> dict[str, torch.Tensor]:
    """The batch's text as the model's inputs: the Q-Former's ids in stage 1, the LM's in stage 2."""
    if config.stage == 1:
        ids, mask = model.processor.qformer_text(batch.texts)
        return {"qformer_input_ids": ids, "qformer_attention_mask": mask}
    targets, prompts = _texts(model, batch, config, step)
    return model.processor.lm_training(prompts, targets)


def _texts(model: qformer.Blip2, batch, config: TrainConfig, step: int) -> tuple[list[str], list[str]]:
    """(targets, prompts) for stage 2, which generates captions or answers. Data with both trains
    them in turn, by step, so a resumed run makes the same choices."""
    has_qa = all(q is not None and a is not None for q, a in zip(batch.questions, batch.answers))
    if has_qa and (not all(batch.has_caption) or step % 2 == 1):
        template = model.config.lm.question_template
        return [str(a) for a in batch.answers], [template.format(question=q) for q in batch.questions]
    prompt = config.prompt if config.prompt is not None else model.config.lm.prompt
    return batch.texts, [prompt] * len(batch.texts)


def _evaluate(accelerator: Accelerator, model: qformer.Blip2, config: TrainConfig, out: Path, step: int) -> None:
    if not accelerator.is_main_process:
        return
    source = config.data.eval or config.data.train
    split = config.data.eval_split if config.data.eval else config.data.split
    metrics = evaluate(model, load_source(source, split), base_dir_of(source), config.data.eval_size,
                       prompt=config.prompt)
    (out / "eval").mkdir(parents=True, exist_ok=True)
    (out / "eval" / f"step-{step:08d}.json").write_text(json.dumps(metrics, indent=2))
    accelerator.log({f"eval/{k}": v for k, v in metrics.items() if isinstance(v, float)}, step=step)
    accelerator.print(f"eval at step {step}: " + ", ".join(
        f"{k}={v:.3f}" for k, v in metrics.items() if isinstance(v, float) and math.isfinite(v)))
