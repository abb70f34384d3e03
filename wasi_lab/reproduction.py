"""The article's figures beside this machine's: one row per number or message it printed.

Every "this machine" value is measured when the table is built: the rayon panic comes from a
real `rayon-demo` guest build, timings from wasmtime-py and from the Node host, predictions
from the guest. What cannot be measured here says so: the article's MobileNet V2 1.4 and its
golden retriever / husky photos are not shipped (the model is a download away:
`wasi-lab models fetch mobilenet-v2-1.4`), and those rows are marked "needs network" with an
empty value rather than a plausible-looking one. Where the bundled EfficientNet-Lite0 can
stand in, the row shows its answer and says it is a different model.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

from wasi_lab.rayon_lesson import ARTICLE_PANIC, panic_note, rayon_panic

#: Row status values.
MEASURED = "measured"
STAND_IN = "stand-in"
NEEDS_NETWORK = "needs network"
UNAVAILABLE = "unavailable"

ARTICLE_MODEL = "mobilenet-v2-1.4"
BUNDLED_MODEL = "efficientnet-lite0"
FETCH_HINT = "`wasi-lab models fetch mobilenet-v2-1.4`"


@dataclass
class ArticleRow:
    """One figure of the article and its counterpart on this machine.

    `value` is the measured number (None when nothing was measured); `this_machine` is how
    it reads. `status` is one of measured / stand-in / needs network / unavailable.
    """

    figure: str
    article: str
    article_value: float | None
    this_machine: str | None
    value: float | None
    unit: str
    how: str
    status: str
    note: str

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------- measurements


def mobilenet_present() -> bool:
    """The article's model is on disk (never downloads)."""
    from wasi_lab.models.registry import get_model

    return get_model(ARTICLE_MODEL).path.is_file()


# --------------------------------------------------------------------------- the table


def _pct(p: float) -> str:
    return f"{100 * p:.1f}%"


def _prediction_row(
    figure: str,
    article_label: str,
    article_note: str,
    image: Path | None,
    fetch_note: str,
    have_mobilenet: bool,
) -> ArticleRow:
    """A row for one of the article's photos: classify it when we have it."""
    from wasi_lab.predict import Classifier

    if image is None:
        return ArticleRow(
            figure=figure,
            article=article_label,
            article_value=None,
            this_machine=None,
            value=None,
            unit="probability",
            how="classify the article's photo with MobileNet V2 1.4",
            status=NEEDS_NETWORK,
            note=f"{article_note}; {fetch_note}",
        )
    model = ARTICLE_MODEL if have_mobilenet else BUNDLED_MODEL
    mode = "article" if have_mobilenet else "model"
    pred = Classifier(model).classify(image, top=1, mode=mode)
    top = pred.top[0]
    status = MEASURED if have_mobilenet else STAND_IN
    note = (
        article_note
        if have_mobilenet
        else (
            f"{article_note}; EfficientNet-Lite0 stands in for MobileNet V2 1.4 (a different "
            f"model: compare the class, not the confidence); {FETCH_HINT} for the real one"
        )
    )
    return ArticleRow(
        figure=figure,
        article=article_label,
        article_value=None,
        this_machine=f"{top.label} ({_pct(top.prob)})",
        value=top.prob,
        unit="probability",
        how=f"Classifier({model!r}).classify({Path(image).name}, mode={mode!r})",
        status=status,
        note=note,
    )


def _file_guest_row(photo: Path) -> ArticleRow:
    """Row 2 without the article's model: the kit's file-reading guest (notebook 01) on the
    bundled EfficientNet-Lite0, granted its files as the article's `wasmtime run --dir=.`."""
    from wasi_lab.hosts import HostError, run_command_guest

    how = "wasi-lab-classify.wasm with WasiConfig.preopen_dir: `wasmtime run --dir=.` (notebook 01)"
    try:
        run = run_command_guest(BUNDLED_MODEL, photo)
    except HostError as exc:
        run = None
        why = str(exc).splitlines()[0]
    else:
        why = (run.stderr.strip().splitlines() or [f"exit code {run.exit_code}"])[-1]
    row = partial(
        ArticleRow,
        figure="`result:` of the file-reading guest on grace_hopper.jpg",
        article="Some((0.32560226, 654))",
        article_value=0.32560226,
        unit="probability",
        how=how,
    )
    if run is None or run.result is None:
        return row(
            this_machine=None,
            value=None,
            status=UNAVAILABLE,
            note=f"the file-reading guest did not answer: {why}",
        )
    prob, cls = run.result
    return row(
        this_machine=f"Some(({prob:.8f}, {cls}))",
        value=prob,
        status=STAND_IN,
        note=f"EfficientNet-Lite0 stands in for MobileNet V2 1.4: class {cls} of 1000, counted "
        f"from 1 ({run.label()}); the article's 654 counts in a 1001-label file whose 0 is "
        f"'background'; {FETCH_HINT} for the article's own line",
    )


def article_table(
    golden_retriever: Path | str | None = None,
    husky: Path | str | None = None,
    repeat: int = 3,
    build_rayon: bool | None = None,
    node: bool = True,
    progress: bool = False,
    timings=None,
    node_result: dict | None = None,
) -> list[ArticleRow]:
    """Measure everything the article printed, on this machine, and pair it up.

    `golden_retriever` / `husky`: your own copies of the article's two photos (not shipped).
    `repeat`: timing repetitions (medians are reported). `build_rayon`: see `rayon_panic`.
    `timings` / `node_result`: measurements already made for this model on grace_hopper
    (`hosts.wasmtime_timings`, `hosts.run_node`), so a caller drawing charts too measures
    once.
    """
    from tqdm.auto import tqdm

    from wasi_lab.hosts import HostError, grace_hopper, run_node, wasmtime_timings
    from wasi_lab.predict import Classifier

    have_mobilenet = mobilenet_present()
    model = ARTICLE_MODEL if have_mobilenet else BUNDLED_MODEL
    model_note = (
        "same model as the article"
        if have_mobilenet
        else f"EfficientNet-Lite0 stands in for MobileNet V2 1.4 (not on disk: {FETCH_HINT})"
    )
    timing_status = MEASURED if have_mobilenet else STAND_IN
    gh = grace_hopper()
    rows: list[ArticleRow] = []
    bar = tqdm(total=6, desc="article table", disable=not progress, leave=False)

    # 1. the rayon panic
    message, how = rayon_panic(build=build_rayon)
    rows.append(
        ArticleRow(
            figure="image crate's rayon panic under `wasmtime run`",
            article=ARTICLE_PANIC,
            article_value=None,
            this_machine=message,
            value=None,
            unit="text",
            how=how,
            status=MEASURED if message else UNAVAILABLE,
            note=panic_note(message) if message else how,
        )
    )
    bar.update()

    # 2. result: Some((0.32560226, 654)), and 3. its label
    if have_mobilenet:
        pred = Classifier(ARTICLE_MODEL).classify(gh, top=1, mode="article")
        top = pred.top[0]
        rows.append(
            ArticleRow(
                figure="`result:` of the file-reading guest on grace_hopper.jpg",
                article="Some((0.32560226, 654))",
                article_value=0.32560226,
                this_machine=f"Some(({top.prob:.8f}, {top.index}))",
                value=top.prob,
                unit="probability",
                how="Classifier('mobilenet-v2-1.4').classify(grace_hopper, mode='article')",
                status=MEASURED,
                note="article preprocessing (x/255, plain resize); index in the 1001-label file",
            )
        )
        rows.append(
            ArticleRow(
                figure="class of grace_hopper.jpg",
                article="military uniform (32.6%)",
                article_value=0.32560226,
                this_machine=f"{top.label} ({_pct(top.prob)})",
                value=top.prob,
                unit="probability",
                how="Classifier('mobilenet-v2-1.4').classify(grace_hopper, mode='article')",
                status=MEASURED,
                note="same model, same preprocessing as the article",
            )
        )
    else:
        rows.append(_file_guest_row(gh))
        pred = Classifier(BUNDLED_MODEL).classify(gh, top=1)
        top = pred.top[0]
        rows.append(
            ArticleRow(
                figure="class of grace_hopper.jpg",
                article="military uniform (32.6%)",
                article_value=0.32560226,
                this_machine=f"{top.label} ({_pct(top.prob)})",
                value=top.prob,
                unit="probability",
                how="Classifier('efficientnet-lite0').classify(grace_hopper)",
                status=STAND_IN,
                note="EfficientNet-Lite0, a different model: the class is comparable, the "
                f"confidence is not; {FETCH_HINT} for the article's",
            )
        )
    bar.update()

    # 4, 5. the two photos of the Node run
    photo_hint = "its photo is not shipped: pass your own copy (`wasi-lab article --{flag} PATH`)"
    rows.append(
        _prediction_row(
            "class of golden-retriever.jpeg (Node host)",
            "golden retriever",
            "from the article's Node run",
            Path(golden_retriever) if golden_retriever else None,
            photo_hint.format(flag="golden-retriever")
            + ("" if have_mobilenet else f" and fetch the model: {FETCH_HINT}"),
            have_mobilenet,
        )
    )
    rows.append(
        _prediction_row(
            "class of husky.jpeg (Node host)",
            "Eskimo dog, husky",
            "from the article's Node run",
            Path(husky) if husky else None,
            photo_hint.format(flag="husky")
            + ("" if have_mobilenet else f" and fetch the model: {FETCH_HINT}"),
            have_mobilenet,
        )
    )
    bar.update()

    # 6. Node inference time
    if node:
        try:
            from wasi_lab.models.registry import get_model

            same = (
                node_result is not None
                and Path(node_result.get("model", "")).name == get_model(model).filename
            )
            res = node_result if same else run_node(gh, model)
            t = res["timings_ms"]
            request = t["write"] + t["load_model"] + t["decode"] + t["infer"]
            rows.append(
                ArticleRow(
                    figure="Node inference time",
                    article="832 ms / 541 ms",
                    article_value=832.0,
                    this_machine=f"{request:.1f} ms",
                    value=round(request, 3),
                    unit="ms",
                    how="hosts/node/classify.mjs on grace_hopper.jpg: write + load model + "
                    "decode + forward pass (what the article's infer_from_ptrs did per call)",
                    status=timing_status,
                    note=f"{res['host']}; forward pass alone {t['infer']:.1f} ms, model parse "
                    f"{t['load_model']:.1f} ms; the article timed golden retriever / husky "
                    f"photos; {model_note}",
                )
            )
        except HostError as exc:
            rows.append(
                ArticleRow(
                    figure="Node inference time",
                    article="832 ms / 541 ms",
                    article_value=832.0,
                    this_machine=None,
                    value=None,
                    unit="ms",
                    how="hosts/node/classify.mjs",
                    status=UNAVAILABLE,
                    note=str(exc).splitlines()[0],
                )
            )
    bar.update()

    # 7, 8. the wasmtime API server's two lines
    tm = (
        timings
        if timings is not None and timings.model == model
        else wasmtime_timings(model, gh, repeat=repeat)
    )
    rows.append(
        ArticleRow(
            figure="module instantiation time (wasmtime host)",
            article="774.715145ms",
            article_value=774.715145,
            this_machine=f"{tm.compile_cold_ms + tm.instantiate_ms:.0f} ms",
            value=round(tm.compile_cold_ms + tm.instantiate_ms, 3),
            unit="ms",
            how=f"a cold Cranelift compile (compile_module(use_cache=False)) plus "
            f"Guest(...).instantiate_ms, as the article's server paid per request (median of "
            f"{tm.repeat})",
            status=MEASURED,
            note=f"the article's figure included compiling the module: here the cold compile is "
            f"{tm.compile_cold_ms:.0f} ms and instantiating {tm.instantiate_ms:.2f} ms; the "
            f"kit compiles once and caches, so a request pays the instantiation alone (loading "
            f"the cached .cwasm: {tm.compile_cached_ms:.1f} ms, once per process)",
        )
    )
    request = tm.article_style_request_ms - tm.instantiate_ms
    rows.append(
        ArticleRow(
            figure="inference time (wasmtime host)",
            article="723.531083ms",
            article_value=723.531083,
            this_machine=f"{request:.1f} ms",
            value=round(request, 3),
            unit="ms",
            how=f"wasmtime-py on a fresh instance, grace_hopper.jpg: write + load model + "
            f"decode + forward pass, as the article's server did per request (median of "
            f"{tm.repeat})",
            status=timing_status,
            note=f"forward pass alone {tm.fresh_infer_ms:.1f} ms; the kit keeps the instance and "
            f"the parsed model, so a request pays write + decode + infer = "
            f"{tm.kit_request_ms:.1f} ms; {model_note}",
        )
    )
    bar.update(2)
    bar.close()
    return rows


# --------------------------------------------------------------------------- reading it


def what_to_notice(rows: list[ArticleRow], timings=None) -> list[str]:
    """The table's lessons as sentences built from its rows, so none can contradict them.

    `timings` (a `hosts.HostTimings`) adds the cold compile beside the instantiation.
    """
    by = {r.figure: r for r in rows}
    out: list[str] = []
    panic = next((r for r in rows if "rayon panic" in r.figure), None)
    if panic is not None:
        if panic.this_machine and "thread pool has not been initialized" in panic.this_machine:
            out.append(
                "the rayon panic: this guest's message starts like the article's, "
                "'The global thread pool has not been initialized' (rayon-core still "
                "cannot start threads on wasm32-wasi)"
            )
        elif panic.this_machine:
            out.append(f"the rayon panic: this guest says {panic.this_machine[:120]!r}")
        else:
            out.append(
                f"the rayon panic was not reproduced here ({panic.note}); notebook 01 shows it"
            )
    cls = by.get("class of grace_hopper.jpg")
    if cls is not None and cls.this_machine:
        same = cls.this_machine.startswith("military uniform")
        model = "the article's model" if cls.status == MEASURED else "a different model"
        out.append(
            f"the class of Grace Hopper: the article said military uniform; here, with "
            f"{model}: {cls.this_machine}"
            + (" (the same class)" if same else " (a different class)")
        )
    inst = by.get("module instantiation time (wasmtime host)")
    if inst is not None and inst.value:
        line = (
            f"compile + instantiate: the article printed {inst.article_value:.1f} ms per "
            f"request, this machine {inst.value:.0f} ms"
        )
        if timings is not None:
            line += (
                f"; the kit compiles once and caches, so a request pays only the "
                f"instantiation: {timings.instantiate_ms:.2f} ms, "
                f"{inst.article_value / timings.instantiate_ms:,.0f} times less than the "
                f"article's figure"
            )
        out.append(line)
    infer = by.get("inference time (wasmtime host)")
    if infer is not None and infer.value:
        out.append(
            f"inference: the article printed {infer.article_value:.0f} ms, this machine "
            f"{infer.value:.0f} ms"
            + (
                ""
                if infer.status == MEASURED
                else ", with a different model: a rough comparison only"
            )
        )
    missing = [r.figure for r in rows if r.status in (NEEDS_NETWORK, UNAVAILABLE)]
    if missing:
        out.append(
            f"{len(missing)} of {len(rows)} rows are empty rather than guessed: "
            + "; ".join(missing)
        )
    return out


# --------------------------------------------------------------------------- output


def rows_to_json(rows: list[ArticleRow]) -> str:
    return json.dumps([r.to_dict() for r in rows], indent=2)


def _clip(text: str | None, width: int) -> str:
    text = "—" if text is None else " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def format_table(rows: list[ArticleRow], width: int = 24) -> str:
    """A plain-text table: figure, article, this machine, status; notes underneath.

    The table is at most 100 characters wide, so a notebook never wraps its rows.
    """
    head = ("figure", "article", "this machine", "status")
    widths = (30, width, width, 13)
    line = "  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))
    out = [line, "-" * len(line)]
    for i, r in enumerate(rows, 1):
        cells = (f"{i}. {r.figure}", r.article, r.this_machine, r.status)
        out.append("  ".join(_clip(c, w).ljust(w) for c, w in zip(cells, widths, strict=True)))
    out.append("")
    for i, r in enumerate(rows, 1):
        out.append(f"{i}. how: {r.how}")
        out.append(f"   note: {r.note}")
    return "\n".join(out)


def _cmd_article(args: argparse.Namespace) -> int:
    rows = article_table(
        golden_retriever=args.golden_retriever,
        husky=args.husky,
        repeat=args.repeat,
        build_rayon=False if args.no_build else (True if args.rebuild else None),
        progress=not args.json and sys.stderr.isatty(),
    )
    print(rows_to_json(rows) if args.json else format_table(rows))
    return 0


def add_article_parser(subparsers: argparse._SubParsersAction) -> None:
    """`wasi-lab article [--json]`: the article's figures beside this machine's."""
    p = subparsers.add_parser(
        "article", help="the article's figures beside this machine's (measured)"
    )
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--golden-retriever",
        metavar="PATH",
        help="your copy of the article's golden-retriever.jpeg",
    )
    p.add_argument("--husky", metavar="PATH", help="your copy of the article's husky.jpeg")
    p.add_argument("--repeat", type=int, default=3, help="timing repetitions (median)")
    p.add_argument(
        "--no-build",
        action="store_true",
        help="never run cargo for the rayon-demo guest (use an earlier build)",
    )
    p.add_argument(
        "--rebuild",
        action="store_true",
        help="run cargo for the rayon-demo guest even when a build exists",
    )
    p.set_defaults(func=_cmd_article)
