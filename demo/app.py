"""The qformer web demo (Gradio): caption and ask with query-attention heatmaps, and the wildlife report.

    qformer demo [--host 127.0.0.1] [--port 7860] [--model default]

Models load once, on first use, and are shared by all visitors; the queue bounds how many requests
run at once. A bad upload gets a message in the page, and the server keeps serving.
"""

from __future__ import annotations

import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

import gradio as gr
from PIL import Image, ImageDraw, ImageFont

import qformer
from qformer.bridge.attention_maps import heatmaps
from qformer.bridge.factory import CAPTIONERS, DEFAULT_MODEL
from qformer.grounded import Answer, Captioner, Facts
from qformer.grounded.loading import bridge_of, captioner_for, photo_parts
from qformer.processing.images import MAX_UPLOAD_BYTES, ImageLoadError, load_image
from qformer.vision.knowledge import check_country
from qformer.wildlife import WildlifePipeline
from qformer.wildlife.batch import describe_run
from qformer.wildlife.results import to_megadetector, write_json
from qformer.wildlife.summary import IUCN

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
MAX_UPLOAD = MAX_UPLOAD_BYTES  # as the servers take
CONCURRENCY = 2  # requests computing at once; the rest wait in the queue
SOURCE_NOTE = {"expert": "species expert", "rollup": "rolled up: the expert was unsure of the species",
               "coarse": "coarse group only", "detector": "detector"}


class ModelNotAllowed(ValueError):
    """A model name a visitor typed that this server does not offer."""


class Models:
    """The models visitors may use: the presets, and the folders the operator listed (`--models`).
    A visitor's text never names a path on the server: anything else is refused without saying
    whether such a folder exists. At most `max_loaded` bridges stay in memory (least recently used
    go first), keyed by what they resolve to, so `x`, `x/` and `x//` are one model. Each model has
    its own lock, so a slow first load blocks only the visitors waiting for that model."""

    def __init__(self, default_model: str, allowed_models: list[str] | tuple[str, ...] = (), max_loaded: int = 2):
        self.default_model = default_model
        self.max_loaded = max_loaded
        self.choices: dict[str, str] = {name: name for name in qformer.list_models()}
        for folder in allowed_models:
            path = Path(folder).resolve()
            if not (path / "config.json").is_file():
                raise FileNotFoundError(f"--models {folder}: no config.json there; is it a qformer model folder?")
            self.choices[str(path)] = str(path)
            self.choices.setdefault(path.name, str(path))  # offered by its folder name too
        self.choices.setdefault(default_model, default_model)  # the operator's own choice on the command line
        self._bridges: OrderedDict[str, qformer.Blip2] = OrderedDict()
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()  # held only for bookkeeping, never while a model loads
        self._wildlife: WildlifePipeline | None = None
        self._photo_parts: tuple | None = None  # (GroundedCaptioner, PhotoRouter); () without the photo extras
        self._wildlife_lock = threading.Lock()

    def resolve(self, name: str | None) -> str:
        name = (name or self.default_model).strip()
        key = self.choices.get(name) or self.choices.get(str(Path(name).resolve())) if name else None
        if key is None:
            raise ModelNotAllowed("this server does not offer that model; choose one from the list")
        return key

    def bridge(self, name: str | None) -> qformer.Blip2:
        key = bridge_of(self.resolve(name))  # "default" and "grounded" stand on the shipped bridge
        with self._guard:
            if key in self._bridges:
                self._bridges.move_to_end(key)
                return self._bridges[key]
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            with self._guard:
                if key in self._bridges:  # loaded by the visitor we waited for
                    return self._bridges[key]
            model = qformer.create_model(key).eval()
            with self._guard:
                self._bridges[key] = model
                while len(self._bridges) > self.max_loaded:
                    self._bridges.popitem(last=False)
            return model

    def captioner(self, name: str | None) -> Captioner:
        """The routed default (photos grounded, drawings to the bridge), its photo path alone, or the
        chosen bridge alone."""
        key = self.resolve(name)
        if key in CAPTIONERS:
            with self._wildlife_lock:
                if self._photo_parts is None:  # built once; the bridge is the cached one
                    self._photo_parts = photo_parts() or ()
            if key == "grounded":
                if not self._photo_parts:
                    raise ModelNotAllowed("the grounded captioner needs the photo extras, which this server lacks; "
                                          "choose another model")
                return self._photo_parts[0]
        return captioner_for(key, self.bridge(key), self._photo_parts if key == DEFAULT_MODEL else None)

    def wildlife(self) -> WildlifePipeline:
        with self._wildlife_lock:
            if self._wildlife is None:
                self._wildlife = WildlifePipeline.default()
            return self._wildlife


def _open(path: str | None) -> Image.Image:
    if not path:
        raise ImageLoadError("<upload>", "no image uploaded")
    return load_image(path)


def caption_and_ask(models: Models, path: str | None, model_name: str, question: str, max_new_tokens: int,
                    num_beams: int, progress=None):
    try:
        image = _open(path)
        if progress is not None:  # the first request of a model waits for it to load: say so
            progress(0.1, desc="loading the model (the first request of each model only)")
        captioner = models.captioner(model_name)
        if progress is not None:
            progress(0.6, desc="captioning")
        options = {"max_new_tokens": int(max_new_tokens), "num_beams": int(num_beams)}
        (caption,) = captioner.caption([image], **options)
        reply = captioner.ask([image], [question], **options)[0] if question.strip() else None
        # the upload itself with what was found when grounded; where the bridge's queries looked when the
        # bridge answered (for a grounded answer its attention had nothing to do with the words)
        if caption.source == "bridge":
            gallery = [(image, "your image")] + heatmaps(models.bridge(model_name), image)
        else:
            gallery = [(draw_boxes(image, _boxes(caption.facts)), "your image, with what was found")]
        return caption.text, reply.text if reply else "", gallery, "Done. " + route_note(caption)
    except ImageLoadError as e:
        return "", "", [], f"**Could not read the upload:** {e.reason}"
    except ModelNotAllowed as e:
        return "", "", [], f"**Model:** {e}"
    except (KeyError, OSError, ValueError) as e:  # a model that failed to load, an overlong question
        return "", "", [], f"**Could not run:** {e}"


def preview(path: str | None) -> Image.Image | None:
    """The upload as a picture, or nothing when it is not one we can read (the caption says why)."""
    try:
        return _open(path)
    except ImageLoadError:
        return None


def route_note(answer: Answer) -> str:
    if answer.source == "bridge":
        return "**Route:** the trained bridge (a drawing, or a bridge you chose)."
    things = "; ".join(f"{t.count} × {t.name} ({t.where}, {t.colour or 'no colour'}, from the {t.source})"
                       for t in answer.facts.things) or "nothing nameable"
    return f"**Route:** grounded (a photo). **Facts:** {things}."


def _boxes(facts: Facts) -> list[tuple[tuple, str]]:
    return [(box, t.name) for t in facts.things for box in t.boxes]


BOX_COLOUR = (255, 200, 0)


def draw_boxes(image: Image.Image, labelled: list[tuple[tuple, str]]) -> Image.Image:
    """Each (x, y, w, h) box, as fractions of the image, with its number and label."""
    drawn = image.convert("RGB").copy()
    pen = ImageDraw.Draw(drawn)
    width, height = drawn.size
    font = ImageFont.load_default(size=max(12, min(width, height) // 18))
    line = max(2, min(width, height) // 120)
    for k, (box, label) in enumerate(labelled, 1):
        x, y, w, h = box
        box = (x * width, y * height, (x + w) * width, (y + h) * height)
        pen.rectangle(box, outline=BOX_COLOUR, width=line)
        label = f"{k}. {label}"
        # the label sits on a filled tab so it stays readable on any photo
        left, top, right, bottom = pen.textbbox((box[0] + line, box[1] + line), label, font=font)
        pen.rectangle((left - line, top - line, right + line, bottom + line), fill=BOX_COLOUR)
        pen.text((box[0] + line, box[1] + line), label, fill=(0, 0, 0), font=font)
    return drawn


def card(k: int, animal) -> str:
    if animal.category != "animal":
        return f"### {k}. a {animal.category}\nDetector confidence {animal.detection_conf:.0%}."
    latin = f" (*{animal.scientific_name}*)" if animal.scientific_name else ""
    lines = [f"### {k}. {animal.common_name or animal.name}{latin}"]
    if animal.breed:
        lines.append(f"- Breed: {animal.breed}")
    if animal.habitat:
        lines.append(f"- Habitat: {animal.habitat}")
    if animal.iucn_category:
        iucn = IUCN.get(animal.iucn_category, animal.iucn_category)
        status = "domesticated" if animal.domesticated else f"{iucn} ({animal.iucn_year})"
        lines.append(f"- IUCN Red List: {status}")
    lines.append(f"- Confidence: {animal.score:.0%} ({animal.rank}); group {animal.group} {animal.group_score:.0%}")
    lines.append(f"- Answer from: {SOURCE_NOTE.get(animal.prediction_source, animal.prediction_source)}")
    return "\n".join(lines)


def wildlife_report(models: Models, path: str | None, country: str, threshold: float):
    empty = (None, "", [], None, "")
    try:
        image = _open(path)
        try:
            country = check_country(country)
        except ValueError:
            return *empty[:4], "**Country:** use an ISO 3166-1 alpha-3 code, such as KEN or USA."
        (result,) = models.wildlife()([image], names=[Path(path).name], country=country,
                                      species_threshold=float(threshold))
    except ImageLoadError as e:
        return *empty[:4], f"**Could not read the upload:** {e.reason}"
    rows = [[k, a.common_name or a.name or a.category, a.scientific_name or "", a.rank or "", f"{a.score:.2f}",
             "domesticated" if a.domesticated else a.iucn_category or "", a.prediction_source]
            for k, a in enumerate(result.animals, 1)]
    cards = "\n\n".join(card(k, a) for k, a in enumerate(result.animals, 1)) or "No animal found in this photo."
    report = Path(tempfile.mkdtemp(prefix="qformer-")) / "megadetector.json"
    pipeline = models.wildlife()
    write_json(to_megadetector([result], *describe_run(pipeline)), report)
    labelled = [(a.box, a.common_name or a.name or a.category) for a in result.animals]
    return draw_boxes(image, labelled), cards, rows, str(report), f"Found {len(result.animals)}."


def build_app(default_model: str = "default", allowed_models: list[str] | tuple[str, ...] = ()) -> gr.Blocks:
    models = Models(default_model, allowed_models)
    photos = [str(p) for p in sorted(SAMPLES.glob("*.jpg"))]
    drawings = [str(p) for p in sorted(SAMPLES.glob("*.png"))]  # the bridge's kind of picture
    with gr.Blocks(title="qformer") as app:
        gr.Markdown("# qformer\nA small trained bridge between a frozen image encoder and a frozen language model, "
                    "and a wildlife pipeline built from composed models. Everything runs on this machine.")
        with gr.Tab("Caption and ask"):
            with gr.Row():
                with gr.Column():
                    # a plain file input, neither gr.Image nor file_types: Gradio would reject a corrupt image or
                    # another file type with its own error before our decoder could explain what is wrong
                    image = gr.File(label="Photo or drawing", type="filepath", elem_id="caption-image")
                    shown = gr.Image(label="Your upload", interactive=False, height=200, elem_id="caption-preview")
                    model_name = gr.Dropdown(sorted(set(models.choices)), value=default_model,
                                             label="Model")
                    question = gr.Textbox(label="Question (optional)", placeholder="what is this?")
                    with gr.Accordion("Generation", open=False):
                        max_new_tokens = gr.Slider(1, 60, value=20, step=1, label="max new tokens")
                        num_beams = gr.Slider(1, 5, value=1, step=1, label="beams")
                    run = gr.Button("Caption", variant="primary", elem_id="caption-run")
                with gr.Column():
                    caption = gr.Textbox(label="Caption", elem_id="caption-out")
                    answer = gr.Textbox(label="Answer", elem_id="answer-out")
                    status = gr.Markdown(elem_id="caption-status")
                    gallery = gr.Gallery(label="Your image; for the bridge's answers, where its queries looked",
                                         columns=4, height=260)
            gr.Examples(photos + drawings, inputs=image, label="Photos go to the grounded path, drawings to the bridge")
            image.upload(preview, image, shown)

            def caption_with_progress(*args, progress=gr.Progress()):
                return caption_and_ask(models, *args, progress=progress)

            run.click(caption_with_progress, [image, model_name, question, max_new_tokens, num_beams],
                      [caption, answer, gallery, status], api_name="caption")
        with gr.Tab("Wildlife"):
            with gr.Row():
                with gr.Column():
                    photo = gr.File(label="Photo from your hike", type="filepath", elem_id="wildlife-image")
                    country = gr.Textbox(label="Country (ISO-3, optional)", placeholder="KEN")
                    threshold = gr.Slider(0.05, 0.95, value=0.5, label="species threshold (below: a higher taxon)")
                    find = gr.Button("Find animals", variant="primary", elem_id="wildlife-run")
                with gr.Column():
                    boxes = gr.Image(label="Detections", elem_id="wildlife-boxes")
                    wild_status = gr.Markdown(elem_id="wildlife-status")
            cards = gr.Markdown(elem_id="wildlife-cards")
            table = gr.Dataframe(headers=["#", "name", "scientific name", "rank", "score", "IUCN", "source"],
                                 label="Animals", elem_id="wildlife-table", interactive=False)
            download = gr.File(label="MegaDetector-format JSON")
            gr.Examples(photos, inputs=photo)
            find.click(lambda *a: wildlife_report(models, *a), [photo, country, threshold],
                       [boxes, cards, table, download, wild_status], api_name="wildlife")
    app.queue(default_concurrency_limit=CONCURRENCY, max_size=100)
    return app


def launch(host: str = "127.0.0.1", port: int = 7860, model: str = "default",
           allowed_models: list[str] | tuple[str, ...] = (), **kwargs) -> None:
    # quiet: Gradio's own lines suggest `share=True`, which a command-line user cannot set
    print(f"qformer demo: http://{host}:{port} (Ctrl+C stops it)")
    build_app(model, allowed_models).launch(server_name=host, server_port=port, max_file_size=MAX_UPLOAD,
                                            show_error=False, quiet=True, **kwargs)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--model", default="default")
    parser.add_argument("--models", nargs="*", default=[], metavar="DIR")
    args = parser.parse_args()
    launch(args.host, args.port, args.model, args.models)
