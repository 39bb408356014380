"""Fetch the model and the dataset once, on a connected machine, for sites without internet.

    python3 scripts/fetch_assets.py                       # gpt2 + stanfordnlp/imdb into ./assets
    scripts/in_image.sh scripts/fetch_assets.py           # the same, with the image's Python

Writes assets/models/<model>/ (save_pretrained: weights + tokenizer) and assets/datasets/<dataset>/
(save_to_disk). Copy assets/ to each host; the containers mount it read-only at /assets. Then set in .env the lines
this script prints (FL_MODEL, FL_DATASET, HF_HUB_OFFLINE=1) and nothing reaches for the hub again.
"""

import argparse
import os
import sys

from fl_deploy import ROOT


def local_name(source: str) -> str:
    """gpt2 -> gpt2, stanfordnlp/imdb -> stanfordnlp/imdb, /some/local/folder -> folder."""
    if os.path.exists(source):
        return os.path.basename(os.path.normpath(source))
    return source.strip("/")


def fetch(model: str, dataset: str, out: str) -> dict:
    """Save the model (weights + tokenizer) and the dataset under out/models/ and out/datasets/."""
    from fl_common.model import load_model_and_tokenizer
    from fl_site.data import load_text_dataset

    model_dir = os.path.join(out, "models", local_name(model))
    data_dir = os.path.join(out, "datasets", local_name(dataset))
    m, tokenizer = load_model_and_tokenizer(model)
    m.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    load_text_dataset(dataset).save_to_disk(data_dir)
    return {"model": model_dir, "dataset": data_dir}


def main(argv=None) -> int:
    from fl_common.model import DEFAULT_MODEL, ModelLoadError
    from fl_site.data import DEFAULT_DATASET, DataError

    p = argparse.ArgumentParser(prog="fetch_assets.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=DEFAULT_MODEL, help="Hugging Face model name (or a local folder)")
    p.add_argument("--dataset", default=DEFAULT_DATASET, help="Hugging Face dataset name (or a local path)")
    p.add_argument("--out", default=os.path.join(ROOT, "assets"), help="assets folder (mounted at /assets)")
    args = p.parse_args(argv)
    try:
        paths = fetch(args.model, args.dataset, args.out)
    except (ModelLoadError, DataError) as e:
        print(f"error: {e}".splitlines()[0] + " (is the hub reachable from here? HF_HUB_OFFLINE must be unset)",
              file=sys.stderr)
        return 2
    rel = {k: "/assets/" + os.path.relpath(v, args.out) for k, v in paths.items()}
    print(f"model:   {paths['model']}\ndataset: {paths['dataset']}\n\nIn .env on every host:")
    print(f"FL_MODEL={rel['model']}\nFL_DATASET={rel['dataset']}\nHF_HUB_OFFLINE=1")
    return 0
