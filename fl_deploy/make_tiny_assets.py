"""make_tiny_assets.py: tiny offline stand-ins for GPT-2 and IMDB, which the containers mount read-only at /assets
(tests, the offline demo; fetch_assets.py fetches the real ones). No network.

    python scripts/make_tiny_assets.py --out assets/tiny

Writes:
  <out>/model/    a small causal LM (random init; --arch: GPT-2 by default) + a byte-level BPE tokenizer trained
                  here; load with from_pretrained
  <out>/imdb/     train.parquet and test.parquet with IMDB's columns (text, label)
With --site-data DIR it writes only DIR/train.parquet and DIR/test.parquet: one site's own data (--data_source site),
different per site through --seed and --label-mix (the share of positive reviews).

By default a review is 2-6 templated sentences whose adjectives follow the label: a model learns all there is to
learn in ~100 steps. With --films K each review first names one of K films of a fixed catalogue (title, year,
director; the film's label fixed, its popularity Zipf-distributed): learning those facts takes many more rows, and
a site that never sees a film (a small shard, a skewed label mix) pays for it on the held-out split
(benchmarks/quality.py uses it). The tests use the default.
"""

import argparse
import math
import os
import random


POSITIVE = ["wonderful", "moving", "brilliant", "charming", "superb", "delightful", "gripping", "funny"]
NEGATIVE = ["dull", "awful", "boring", "clumsy", "predictable", "tedious", "messy", "forgettable"]
NOUNS = ["film", "movie", "plot", "cast", "script", "ending", "soundtrack", "director", "story", "acting"]
EOS = "<|endoftext|>"
OPENERS = ["I thought the", "Honestly the", "Overall the", "To me the", "Sadly the", "Clearly the"]


def review(rng: random.Random, label: int) -> str:
    words = POSITIVE if label else NEGATIVE
    sentences = [
        f"{rng.choice(OPENERS)} {rng.choice(NOUNS)} was {rng.choice(words)}."
        for _ in range(rng.randint(2, 6))
    ]
    return " ".join(sentences)


TITLE_WORDS = ["Silent", "Harbor", "Crimson", "Winter", "Glass", "River", "Hollow", "Empire", "Velvet", "Storm",
               "Golden", "Shadow", "Paper", "Iron", "Midnight", "Garden", "Broken", "Summer", "Distant", "Lantern",
               "Frozen", "Echo", "Scarlet", "Orchard", "Wild", "Falcon", "Quiet", "Ember", "Northern", "Mirror"]
NAMES = ["Ada", "Boris", "Clara", "Dmitri", "Elena", "Felix", "Greta", "Hugo", "Ines", "Jonas", "Kira", "Lars",
         "Mara", "Nils", "Olga", "Pavel", "Rosa", "Sven", "Tara", "Viktor"]
SURNAMES = ["Abel", "Brandt", "Costa", "Dahl", "Engel", "Ferro", "Gallo", "Holm", "Ivers", "Jansen", "Kahn",
            "Lund", "Moreau", "Novak", "Ortega", "Petrov", "Quist", "Rossi", "Stahl", "Torres"]


def film_catalogue(rng: random.Random, k: int) -> list:
    """K films: (title, year, director, label), titles distinct; the label alternates so both labels have films."""
    titles = rng.sample([f"The {a} {b}" for a in TITLE_WORDS for b in TITLE_WORDS if a != b], k)
    return [(t, rng.randint(1950, 2020), f"{rng.choice(NAMES)} {rng.choice(SURNAMES)}", i % 2)
            for i, t in enumerate(titles)]


def mixed_labels(n: int, positive: float) -> list:
    """n labels, a share ``positive`` of them 1, spread evenly (0.5: 0, 1, 0, 1, ...)."""
    return [math.floor((i + 1) * positive) - math.floor(i * positive) for i in range(n)]


def make_dataset(out: str, n_train: int, n_test: int, seed: int, films: int = 0, positive: float = 0.5):
    from datasets import Dataset

    rng = random.Random(seed)
    catalogue = film_catalogue(random.Random(seed + 1), films) if films else []
    by_label = {y: [f for f in catalogue if f[3] == y] for y in (0, 1)}
    os.makedirs(out, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        labels = mixed_labels(n, positive)
        texts = [review(rng, y) for y in labels]
        if catalogue:  # the film first, from its label's films, the i-th most popular with weight 1 / i
            for i, y in enumerate(labels):
                title, year, director, _ = rng.choices(by_label[y], [1 / (j + 1) for j in range(len(by_label[y]))])[0]
                texts[i] = f"{title} ({year}), directed by {director}. {texts[i]}"
        Dataset.from_dict({"text": texts, "label": labels}).to_parquet(os.path.join(out, f"{split}.parquet"))


# Tiny configs, 2 layers of width 64, per architecture: gpt2 (tied embeddings, Conv1D projections), llama (untied
# embeddings, grouped-query attention, as Llama 2/3), qwen2 (tied embeddings, q/k/v biases, as Qwen2-0.5B), mistral
# (untied, grouped-query attention). The transformers classes are the hub models' own (config.model_type).
ARCHS = ("gpt2", "llama", "qwen2", "mistral")
_DECODER = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2, "max_position_embeddings": 128}


def tiny_config(arch: str, vocab_size: int, eos_token_id: int):
    """The transformers config of a tiny random model of ``arch`` (one of ARCHS; KeyError otherwise)."""
    from transformers import GPT2Config, LlamaConfig, MistralConfig, Qwen2Config

    ids = {"vocab_size": vocab_size, "bos_token_id": eos_token_id, "eos_token_id": eos_token_id}
    return {
        "gpt2": lambda: GPT2Config(n_positions=128, n_embd=64, n_layer=2, n_head=2, **ids),
        "llama": lambda: LlamaConfig(**_DECODER, tie_word_embeddings=False, **ids),
        "qwen2": lambda: Qwen2Config(**_DECODER, tie_word_embeddings=True, **ids),
        "mistral": lambda: MistralConfig(**_DECODER, tie_word_embeddings=False, **ids),
    }[arch]()


def make_model(out: str, corpus: list, seed: int, vocab_size: int, arch: str = "gpt2"):
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2TokenizerFast

    os.makedirs(out, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus, vocab_size=vocab_size, min_frequency=1, special_tokens=[EOS])
    tokenizer = GPT2TokenizerFast(
        tokenizer_object=bpe._tokenizer, bos_token=EOS, eos_token=EOS, unk_token=EOS, model_max_length=128
    )
    tokenizer.save_pretrained(out)
    save_random_model(out, tokenizer, arch, seed)


def save_random_model(out: str, tokenizer, arch: str, seed: int = 0) -> str:
    """A tiny random ``arch`` model (tiny_config) for ``tokenizer``, saved with it in ``out``; returns ``out``."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    config = tiny_config(arch, len(tokenizer), tokenizer.eos_token_id)
    AutoModelForCausalLM.from_config(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    for name in os.listdir(out):  # safetensors writes 0600; containers read these as another user
        os.chmod(os.path.join(out, name), 0o644)
    return out


# GPT2Config overrides for GPT-2's published architectures (Radford et al. 2019, table 2; the Hugging Face
# configs of gpt2, gpt2-medium, gpt2-large). Parameter counts in millions, tied lm_head counted once.
GPT2_SIZES = {
    "gpt2-124m": {},
    "gpt2-355m": {"n_embd": 1024, "n_layer": 24, "n_head": 16},
    "gpt2-774m": {"n_embd": 1280, "n_layer": 36, "n_head": 20},
}


def random_gpt2(out: str, size: str = "gpt2-124m") -> str:
    """One of GPT-2's architectures (a key of GPT2_SIZES) with random weights (seed 0) and a small tokenizer
    trained here, in ``out``/<size>; returns that folder. No network and no ``datasets``: what the exchange
    benchmarks and the slow-link case move, since the exchange does not care about the values.

    Raises KeyError for a size not in GPT2_SIZES."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    config = GPT2Config(**GPT2_SIZES[size])
    tokenizer = os.path.join(out, "model")
    if not os.path.isfile(os.path.join(tokenizer, "config.json")):
        rng = random.Random(0)
        make_model(tokenizer, [review(rng, i % 2) for i in range(400)], 0, 400)
    path = os.path.join(out, size)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config)
    model.save_pretrained(path)
    del model
    AutoTokenizer.from_pretrained(tokenizer).save_pretrained(path)
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="make_tiny_assets.py", description=__doc__.split("make_tiny_assets.py: ")[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="assets/tiny", help="output folder")
    p.add_argument("--train", type=int, default=400, help="training reviews")
    p.add_argument("--test", type=int, default=80, help="held-out reviews")
    p.add_argument("--vocab", type=int, default=400, help="tokenizer vocabulary size")
    p.add_argument("--films", type=int, default=0, help="name one of this many films in each review (0 = none)")
    p.add_argument("--arch", default="gpt2", choices=ARCHS, help="the model's architecture (see ARCHS)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--site-data", metavar="DIR", help="write only a site's own data into DIR (no model)")
    p.add_argument("--label-mix", type=float, default=0.5, help="share of positive reviews, 0..1")
    args = p.parse_args(argv)
    if not 0 <= args.label_mix <= 1:
        p.error("--label-mix must be in 0..1")
    if args.train < 2 or args.test < 1:
        p.error("--train must be >= 2 and --test >= 1")
    if not 0 <= args.films <= len(TITLE_WORDS) * (len(TITLE_WORDS) - 1) or args.films == 1:
        p.error(f"--films must be 0 or in 2..{len(TITLE_WORDS) * (len(TITLE_WORDS) - 1)}")

    if args.site_data:
        make_dataset(args.site_data, args.train, args.test, args.seed, args.films, args.label_mix)
        print(f"site data: {args.site_data}")
        return 0
    data_dir = os.path.join(args.out, "imdb")
    make_dataset(data_dir, args.train, args.test, args.seed, args.films, args.label_mix)
    from datasets import load_dataset

    corpus = load_dataset("parquet", data_files=os.path.join(data_dir, "train.parquet"))["train"]["text"]
    make_model(os.path.join(args.out, "model"), corpus, args.seed, args.vocab, args.arch)
    print(f"tiny model:   {os.path.join(args.out, 'model')} ({args.arch})\ntiny dataset: {data_dir}")
    return 0
