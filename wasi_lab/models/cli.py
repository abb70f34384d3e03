"""``wasi-lab models ...`` and ``wasi-lab images ...`` (wired in by ``wasi_lab.cli``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path


def _models_list(args: argparse.Namespace) -> int:
    from wasi_lab.models.registry import list_models

    rows = list_models()
    print(f"{'name':<20} {'present':<8} {'size':>12}  source")
    for r in rows:
        size = f"{r['size']:,}" if r["size"] is not None else "-"
        print(f"{r['name']:<20} {'yes' if r['present'] else 'no':<8} {size:>12}  {r['source']}")
    return 0


def _models_fetch(args: argparse.Namespace) -> int:
    from wasi_lab.models.fetch import ModelError, fetch_mobilenet
    from wasi_lab.models.registry import MODELS, ensure_model

    names = list(MODELS) if args.name == "all" else [args.name]
    if (args.url or args.dest) and names != ["mobilenet-v2-1.4"]:
        print(
            "wasi-lab models fetch: --url and --dest apply to mobilenet-v2-1.4 only "
            "(efficientnet-lite0 is converted here, not downloaded)",
            file=sys.stderr,
        )
        return 2
    if args.url and not args.url.startswith(("http://", "https://")):
        print(
            f"wasi-lab models fetch: --url {args.url!r} is not an http(s):// URL", file=sys.stderr
        )
        return 2
    try:
        for name in names:
            if args.url or args.dest:
                spec = MODELS[name]
                path = fetch_mobilenet(
                    args.url or spec.url,
                    Path(args.dest or spec.path.parent),
                    progress=not args.quiet,
                )
            else:
                path = ensure_model(name, progress=not args.quiet)
            print(f"{name}: {path}")
    except ModelError as exc:
        print(f"wasi-lab models fetch: {exc}", file=sys.stderr)
        return 1
    return 0


def _models_prepare(args: argparse.Namespace) -> int:
    from wasi_lab.models.fetch import ModelError
    from wasi_lab.models.registry import ensure_model

    try:
        print(f"efficientnet-lite0: {ensure_model('efficientnet-lite0', progress=not args.quiet)}")
    except (ModelError, ValueError) as exc:
        print(f"wasi-lab models prepare: {exc}", file=sys.stderr)
        return 1
    return 0


def add_models_parser(
    subparsers: argparse._SubParsersAction,
    more: Sequence[Callable[[argparse._SubParsersAction], object]] = (),
) -> argparse.ArgumentParser:
    """Add ``models {list,fetch,prepare}`` to a CLI's sub-parsers, and the subcommands `more`
    adds (the front door passes ``models check``, which runs the guest: a room above this)."""
    from wasi_lab.models.registry import MODELS

    parser = subparsers.add_parser("models", help="list, build or download models")
    sub = parser.add_subparsers(dest="models_command", required=True)
    sub.add_parser("list", help="show known models and whether they are present").set_defaults(
        func=_models_list
    )
    fetch = sub.add_parser("fetch", help="build or download a model into models/")
    fetch.add_argument("name", choices=[*MODELS, "all"])
    fetch.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    fetch.add_argument(
        "--url",
        help="download mobilenet-v2-1.4 from this mirror instead (its SHA-256 is still checked)",
    )
    fetch.add_argument(
        "--dest",
        metavar="DIR",
        help="directory to download mobilenet-v2-1.4 into (default: models/)",
    )
    fetch.set_defaults(func=_models_fetch)
    prepare = sub.add_parser("prepare", help="convert the EfficientNet-Lite0 checkpoint (offline)")
    prepare.add_argument("-q", "--quiet", action="store_true")
    prepare.set_defaults(func=_models_prepare)
    for add in more:
        add(sub)
    return parser


def _images_dest(args: argparse.Namespace, must_exist: bool) -> Path | None:
    """``--dest`` as a directory, or None after saying in one line what is wrong with it."""
    dest = Path(args.dest)
    if dest.exists() and not dest.is_dir():
        problem = "is a file, not a directory"
    elif must_exist and not dest.exists():
        problem = "does not exist (run `wasi-lab images prepare` to create it)"
    else:
        return dest
    print(f"wasi-lab images {args.images_command}: --dest {dest} {problem}", file=sys.stderr)
    return None


def _images_prepare(args: argparse.Namespace) -> int:
    from wasi_lab.images import ImageError, prepare_images

    dest = _images_dest(args, must_exist=False)
    if dest is None:
        return 1
    try:
        paths = prepare_images(dest)
    except ImageError as exc:  # scikit-image's photographs unavailable: the line says why
        print(f"wasi-lab images prepare: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        from wasi_lab.user_errors import os_error_line

        print(
            f"wasi-lab images prepare: cannot write the images: {os_error_line(exc)} "
            "(choose a writable --dest)",
            file=sys.stderr,
        )
        return 1
    for path in paths:
        print(path)
    return 0


def _images_list(args: argparse.Namespace) -> int:
    from wasi_lab.images import list_images

    dest = _images_dest(args, must_exist=True)
    if dest is None:
        return 1
    for path in list_images(dest):
        print(path)
    return 0


def add_images_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``images {prepare,list}`` to a CLI's sub-parsers."""
    from wasi_lab.paths import IMAGES_DIR

    parser = subparsers.add_parser("images", help="sample images for the notebooks")
    sub = parser.add_subparsers(dest="images_command", required=True)
    for name, func, help_text in (
        ("prepare", _images_prepare, "copy the sample images"),
        ("list", _images_list, "list images in the directory"),
    ):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--dest", default=str(IMAGES_DIR), help="images directory")
        p.set_defaults(func=func)
    return parser
