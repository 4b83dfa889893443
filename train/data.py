"""Training data through `datasets`: image folders, JSON Lines, Parquet or hub datasets.

Images stay undecoded in the dataset; DataLoader workers decode and preprocess them while the
step runs. An unreadable or missing image is skipped, counted and replaced by the next record (a run
of them that says the data itself is broken stops it). The stream's position (epoch and
records consumed) is part of every checkpoint, so a resumed run sees exactly the same batches.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import datasets
import torch
from PIL import Image

from qformer.processing.images import ImageLoadError, load_image


class DataError(ValueError):
    """Training data that cannot give a batch, named, with what to do."""


@dataclass
class Batch:
    keys: list[str]  # a stable identity per image, for the feature cache
    images: list[torch.Tensor | tuple | None]  # preprocessed pixels; None where the cache holds the tokens
    texts: list[str]  # captions, or "question answer" for VQA records
    questions: list[str | None]
    answers: list[str | None]
    has_caption: list[bool]  # False where `texts` was made from the question and answer


def load_source(source: str, split: str = "train", streaming: bool = False):
    """A `datasets` dataset whose `image` column is left undecoded."""
    path = Path(source)
    if path.is_dir():
        dataset = datasets.load_dataset("imagefolder", data_dir=str(path), split=split, streaming=streaming)
    elif path.suffix in (".jsonl", ".json"):
        dataset = datasets.load_dataset("json", data_files=str(path), split="train", streaming=streaming)
    elif path.suffix == ".parquet":
        dataset = datasets.load_dataset("parquet", data_files=str(path), split="train", streaming=streaming)
    elif path.exists():
        raise ValueError(f"data source {source}: expected a folder, a .jsonl/.json file or a .parquet file")
    else:  # a hub dataset, by name
        dataset = datasets.load_dataset(source, split=split, streaming=streaming)
    columns = dataset.column_names or []
    if "image" not in columns:
        raise ValueError(f"data source {source} has no 'image' column (columns: {columns})")
    if not ({"text", "caption"} & set(columns) or {"question", "answer"} <= set(columns)):
        raise ValueError(f"data source {source} needs a 'text' or 'caption' column, or 'question' and 'answer'")
    if isinstance(dataset.features.get("image") if dataset.features else None, datasets.Image):
        dataset = dataset.cast_column("image", datasets.Image(decode=False))
    return dataset


def decode(record: dict[str, Any], base_dir: Path | None) -> Image.Image:
    value = record["image"]
    if isinstance(value, dict):  # datasets' undecoded Image: {"bytes": ..., "path": ...}
        value = value.get("bytes") or value.get("path")
    if isinstance(value, str) and base_dir is not None and not Path(value).is_absolute():
        value = str(base_dir / value)
    if value is None:
        raise ImageLoadError("<record>", "the image field is empty")
    return load_image(value)


def key_of(record: dict[str, Any], base_dir: Path | None) -> str:
    """Identity of a record's image: its path with size and modification time, or a hash of its bytes."""
    value = record["image"]
    if isinstance(value, dict):
        if value.get("bytes"):
            return "sha1:" + hashlib.sha1(value["bytes"]).hexdigest()
        value = value.get("path")
    path = Path(str(value)) if base_dir is None or Path(str(value)).is_absolute() else base_dir / str(value)
    try:
        stat = path.stat()
        return f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    except OSError:
        return str(path)


def has_caption(record: dict[str, Any]) -> bool:
    return bool(record.get("text") or record.get("caption"))


def text_of(record: dict[str, Any]) -> tuple[str, str | None, str | None]:
    """(caption, question, answer); a VQA-only record's caption is its question and answer."""
    question, answer = record.get("question"), record.get("answer")
    caption = record.get("text") or record.get("caption") or f"{question} {answer}"
    return str(caption), question, answer


@dataclass
class Position:
    """A record as the sampler hands it to a DataLoader worker, with the stream's position after it."""

    record: dict[str, Any]
    epoch: int
    consumed: int


class DecodedRecords(torch.utils.data.Dataset):
    """One record decoded and preprocessed, in a DataLoader worker: the costly part of a step's input.
    Images the feature cache already holds are not decoded at all (they were readable when cached)."""

    def __init__(self, base_dir: Path | None, preprocess: Callable, cached: Callable[[str], bool] | None = None):
        self.base_dir, self.preprocess, self.cached = base_dir, preprocess, cached

    def __getitem__(self, position: Position) -> dict[str, Any]:
        record = position.record
        key = key_of(record, self.base_dir)
        example = {"key": key, "epoch": position.epoch, "consumed": position.consumed, "pixels": None, "error": None}
        if self.cached is None or not self.cached(key):
            try:
                pixels = self.preprocess([decode(record, self.base_dir)])  # (1, 3, H, W), or a tuple of them
            except ImageLoadError as e:
                return {**example, "error": str(e)}
            example["pixels"] = tuple(p[0] for p in pixels) if isinstance(pixels, tuple) else pixels[0]
        text, question, answer = text_of(record)
        return {**example, "text": text, "question": question, "answer": answer, "has_caption": has_caption(record)}

    def __len__(self) -> int:  # the stream is endless; a DataLoader given a sampler never asks
        raise TypeError("DecodedRecords is read through a sampler of positions")


@dataclass
class ExampleStream:
    """Examples in a seeded order, sharded across processes, decoded by DataLoader workers. An
    unreadable image is skipped, counted and replaced by the next record, so every batch is full."""

    dataset: Any
    base_dir: Path | None
    seed: int = 0
    rank: int = 0
    world_size: int = 1
    shuffle_buffer: int = 1000
    max_unreadable_in_a_row: int = 100  # then the data, not one file, is at fault: stop and say so
    name: str = "the training data"
    num_workers: int = 2
    epoch: int = 0
    consumed: int = 0  # records of this epoch already used (good or bad), across all processes
    skipped: int = 0
    skipped_examples: list[str] = field(default_factory=list)

    def _unreadable_message(self, what: str) -> str:
        examples = "; ".join(self.skipped_examples[-3:])
        return (f"{self.name}: {what} (e.g. {examples}). Check that the image paths are relative to the data "
                "file's folder and that the files are images")

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "consumed": self.consumed, "skipped": self.skipped,
                "skipped_examples": self.skipped_examples}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.consumed = state["epoch"], state["consumed"]
        self.skipped, self.skipped_examples = state["skipped"], list(state["skipped_examples"])

    def positions(self) -> Iterator[Position]:
        """This process's records from the current position on, endlessly. The DataLoader reads ahead,
        so the stream's own position moves only as `batches` uses the examples."""
        epoch, consumed = self.epoch, self.consumed
        while True:
            if isinstance(self.dataset, datasets.IterableDataset):
                shuffled = self.dataset.shuffle(seed=self.seed, buffer_size=self.shuffle_buffer)
                shuffled.set_epoch(epoch)
                records = shuffled.skip(consumed)
            else:
                order = torch.randperm(len(self.dataset), generator=torch.Generator().manual_seed(self.seed + epoch))
                records = (self.dataset[int(i)] for i in order[consumed:])
            empty = True
            for record in records:
                empty = False
                consumed += 1
                if (consumed - 1) % self.world_size == self.rank:
                    yield Position(record, epoch, consumed)
            if empty and consumed == 0:
                raise DataError(f"{self.name} is empty")
            epoch, consumed = epoch + 1, 0

    def batches(self, batch_size: int, preprocess: Callable, cached: Callable[[str], bool] | None = None
                ) -> Iterator[Batch]:
        """Batches of `batch_size` readable examples, with their pixels stacked (None where cached)."""
        loader = torch.utils.data.DataLoader(
            DecodedRecords(self.base_dir, preprocess, cached), batch_size=None, sampler=_Endless(self.positions),
            num_workers=self.num_workers, persistent_workers=False,
            # its own generator: starting workers must not draw from the global RNG, which a resumed run
            # restores and the losses sample from (ITM's hard negatives)
            generator=torch.Generator().manual_seed(self.seed),
        )
        batch, in_a_row = _empty_batch(), 0
        for example in loader:
            self.epoch, self.consumed = example["epoch"], example["consumed"]
            if example["error"] is not None:
                self.skipped += 1
                in_a_row += 1
                if len(self.skipped_examples) < 20:
                    self.skipped_examples.append(example["error"])
                if in_a_row >= self.max_unreadable_in_a_row:
                    raise DataError(self._unreadable_message(f"{in_a_row} images in a row could not be read"))
                continue
            in_a_row = 0
            batch.keys.append(example["key"])
            batch.images.append(example["pixels"])
            batch.texts.append(example["text"])
            batch.questions.append(example["question"])
            batch.answers.append(example["answer"])
            batch.has_caption.append(example["has_caption"])
            if len(batch.keys) == batch_size:
                yield batch
                batch = _empty_batch()


class _Endless:
    """A sampler over a generator function: the DataLoader asks it for positions, never for a length."""

    def __init__(self, make: Callable[[], Iterator[Position]]):
        self.make = make

    def __iter__(self) -> Iterator[Position]:
        return self.make()


def _empty_batch() -> Batch:
    return Batch([], [], [], [], [], [])


def stack_pixels(rows: list) -> torch.Tensor | tuple[torch.Tensor, ...] | None:
    """Per-example pixels (None where the feature cache holds the tokens) as one batch, of the rows present."""
    present = [r for r in rows if r is not None]
    if not present:
        return None
    if isinstance(present[0], tuple):
        return tuple(torch.stack(member) for member in zip(*present))
    return torch.stack(present)


def base_dir_of(source: str) -> Path | None:
    """Relative image paths in a .jsonl/.parquet file are relative to the file's folder."""
    path = Path(source)
    return path.parent if path.is_file() else path if path.is_dir() else None
