"""Training data through `datasets`: image folders, JSON Lines, Parquet or hub datasets.

Images stay undecoded in the dataset and are decoded lazily, one batch at a time. An unreadable
or missing image is skipped and counted; it never stops a run. The stream's position (epoch and
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

from qformer.images import ImageLoadError, load_image


class DataError(ValueError):
    """Training data that cannot give a batch, named, with what to do."""


@dataclass
class Batch:
    keys: list[str]  # a stable identity per image, for the feature cache
    images: list[Image.Image | None]  # None where the cache already holds the image's tokens
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
class ExampleStream:
    """Examples in a seeded order, sharded across processes, skipping bad images."""

    dataset: Any
    base_dir: Path | None
    seed: int = 0
    rank: int = 0
    world_size: int = 1
    shuffle_buffer: int = 1000
    max_unreadable_in_a_row: int = 100  # then the data, not one file, is at fault: stop and say so
    name: str = "the training data"
    epoch: int = 0
    consumed: int = 0  # records of this epoch already read (good or bad), across all processes
    skipped: int = 0
    skipped_examples: list[str] = field(default_factory=list)

    _readable_this_epoch: int = 0

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

    def _records(self) -> Iterator[dict[str, Any]]:
        while True:
            whole_pass = self.consumed == 0  # a resumed run starts mid-pass, and has not seen all of it
            if isinstance(self.dataset, datasets.IterableDataset):
                shuffled = self.dataset.shuffle(seed=self.seed, buffer_size=self.shuffle_buffer)
                shuffled.set_epoch(self.epoch)
                records = shuffled.skip(self.consumed)
            else:
                order = torch.randperm(len(self.dataset), generator=torch.Generator().manual_seed(self.seed + self.epoch))
                records = (self.dataset[int(i)] for i in order[self.consumed :])
            empty = True
            for record in records:
                empty = False
                index = self.consumed
                self.consumed += 1
                if index % self.world_size == self.rank:
                    yield record
            if empty and self.consumed == 0:
                raise DataError(f"{self.name} is empty")
            self.epoch, self.consumed = self.epoch + 1, 0
            self._readable_this_epoch, readable = 0, self._readable_this_epoch
            if readable == 0 and whole_pass:
                raise DataError(self._unreadable_message("not one image of a whole pass over it could be read"))

    def batches(self, batch_size: int, cached: Callable[[str], bool] = lambda key: False) -> Iterator[Batch]:
        """Batches of `batch_size` readable examples; bad ones are replaced by the next records.
        Images whose key is `cached` are not decoded at all (they were readable when cached)."""
        batch = Batch([], [], [], [], [], [])
        in_a_row = 0
        for record in self._records():
            key = key_of(record, self.base_dir)
            try:
                image = None if cached(key) else decode(record, self.base_dir)
            except ImageLoadError as e:
                self.skipped += 1
                in_a_row += 1
                if len(self.skipped_examples) < 20:
                    self.skipped_examples.append(str(e))
                if in_a_row >= self.max_unreadable_in_a_row:
                    raise DataError(self._unreadable_message(f"{in_a_row} images in a row could not be read")) from e
                continue
            in_a_row = 0
            self._readable_this_epoch += 1
            text, question, answer = text_of(record)
            batch.keys.append(key)
            batch.images.append(image)
            batch.texts.append(text)
            batch.questions.append(question)
            batch.answers.append(answer)
            batch.has_caption.append(has_caption(record))
            if len(batch.images) == batch_size:
                yield batch
                batch = Batch([], [], [], [], [], [])


def base_dir_of(source: str) -> Path | None:
    """Relative image paths in a .jsonl/.parquet file are relative to the file's folder."""
    path = Path(source)
    return path.parent if path.is_file() else path if path.is_dir() else None
