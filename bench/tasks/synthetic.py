"""Built-in offline tasks, generated deterministically from ``seed`` (no files, no network).

* ``synth_cls`` - sentence pairs about a transfer ("Anna gave the book to Paul at the park." /
  "Paul gave the book to Anna."); the label is the relation BETWEEN the sentences: same roles
  (entailment), roles swapped (contradiction) and, with ``n_classes: 3``, one person replaced
  by someone else (neutral). Entailment and contradiction pairs contain exactly the same words,
  so no word or bag of words predicts the label: it takes matching names and their order across
  the two sentences. Measured with MiniLM-L6 on 512 training pairs: a logistic-regression probe
  on frozen mean-pooled features scores 0.50 (2 classes; 0.62 with 3, where it only spots the
  new name), full fine-tuning (lr 1e-4, batch 32) reaches 1.00 after 4 epochs (0.98 after 9
  epochs with 3 classes).
* ``synth_ner`` - template sentences with PER/ORG/LOC entities; several names are ambiguous
  (Jordan, Washington, Chelsea, Ford...) so the type depends on the context.
* ``synth_d2t`` - E2E-style restaurant records -> sentence, two references per record.

Every example is unique across train / validation / test.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable

from bench.tasks.base import Built, TaskDataError, register_loader

NAMES = [
    "Anna",
    "Paul",
    "Mary",
    "John",
    "Emma",
    "Peter",
    "Laura",
    "David",
    "Sarah",
    "Henry",
    "Alice",
    "George",
    "Julia",
    "Frank",
    "Grace",
    "Jack",
    "Helen",
    "Mark",
    "Rose",
    "Kevin",
    "Clara",
    "Adam",
    "Ruth",
    "Brian",
]
OBJECTS = [
    "book",
    "letter",
    "ticket",
    "camera",
    "guitar",
    "basket",
    "blanket",
    "bicycle",
    "ring",
    "map",
    "key",
    "hat",
    "lamp",
    "clock",
    "phone",
    "wallet",
    "umbrella",
    "painting",
    "radio",
    "violin",
    "coat",
    "bottle",
    "box",
    "picture",
    "ball",
    "cup",
    "chair",
    "bag",
]
PLACES = [
    "market",
    "library",
    "station",
    "garden",
    "office",
    "school",
    "hospital",
    "museum",
    "park",
    "cafe",
    "hotel",
    "church",
    "bank",
    "harbor",
    "theater",
    "airport",
]
# (a -> b) transfer, as "a VERB the o to b" and as its converse "b VERB the o from a".
FRAMES = [
    ("{a} gave the {o} to {b}", "{b} received the {o} from {a}"),
    ("{a} sold the {o} to {b}", "{b} bought the {o} from {a}"),
    ("{a} lent the {o} to {b}", "{b} borrowed the {o} from {a}"),
    ("{a} sent the {o} to {b}", "{b} got the {o} from {a}"),
    ("{a} showed the {o} to {b}", "{b} was shown the {o} by {a}"),
    ("{a} threw the {o} to {b}", "{b} caught the {o} from {a}"),
]
CLS_LABELS = ["entailment", "contradiction", "neutral"]

FIRST = [
    "John",
    "Mary",
    "Anna",
    "Peter",
    "Laura",
    "David",
    "Chelsea",
    "Jordan",
    "Georgia",
    "Victoria",
    "Henry",
    "Emma",
    "Paul",
    "Sarah",
]
SURNAMES = [
    "Smith",
    "Johnson",
    "Brown",
    "Taylor",
    "Miller",
    "Wilson",
    "Clark",
    "Walker",
    "Baker",
    "Turner",
    "Parker",
    "Morgan",
    "Washington",
    "Lincoln",
    "Ford",
    "Jordan",
]
LOCATIONS = [
    "Paris",
    "London",
    "Berlin",
    "Rome",
    "Madrid",
    "Tokyo",
    "Boston",
    "Chicago",
    "Dublin",
    "Vienna",
    "Cairo",
    "New York",
    "San Francisco",
    "Hong Kong",
    "Cape Town",
    "Jordan",
    "Washington",
    "Lincoln",
    "Chelsea",
    "Georgia",
    "Victoria",
]
ORGS = [
    "Acme Corporation",
    "United Nations",
    "Red Cross",
    "World Bank",
    "General Motors",
    "Ford",
    "Apple",
    "Oxford University",
    "National Bank",
    "City Council",
    "Chelsea",
    "Washington Post",
    "Royal Navy",
    "Lincoln Financial",
    "Jordan Airlines",
]
NER_TEMPLATES = [
    "{PER} flew to {LOC} on Monday .",
    "{PER} joined {ORG} last year .",
    "{ORG} opened a new office in {LOC} .",
    "{PER} met {PER} in {LOC} .",
    "Shares of {ORG} fell after {PER} resigned .",
    "{PER} was born in {LOC} and now works for {ORG} .",
    "Heavy rain fell across {LOC} on Sunday .",
    "A spokesman for {ORG} said {PER} would visit {LOC} .",
    "Mr. {SUR} told reporters in {LOC} that {ORG} had agreed .",
    "The president of {ORG} , {PER} , arrived in {LOC} yesterday .",
    "Police in {LOC} arrested {PER} on Friday .",
    "{PER} said the weather was good .",
    "Prices rose again last month .",
]
NER_TAGS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]

RESTAURANTS = [
    "The Golden Bell",
    "Blue Spice",
    "The Green Olive",
    "The Red Lion",
    "Silver Moon",
    "The Old Mill",
    "Sunset Cafe",
    "The Rice Bowl",
    "Little Italy",
    "The Fox and Hound",
    "River House",
    "The Copper Kettle",
]
ATTRIBUTES = {
    "food": ["Italian", "French", "Chinese", "Indian", "Japanese", "English", "Greek"],
    "area": ["riverside", "city centre"],
    "priceRange": ["cheap", "moderate", "expensive"],
    "customerRating": ["low", "average", "high"],
    "familyFriendly": ["yes", "no"],
    "near": ["the train station", "the museum", "Central Park", "the cathedral", "the market square"],
}
PHRASES = {
    "food": ["serves {} food", "offers {} dishes"],
    "area": ["is in the {} area", "is located in the {} area"],
    "priceRange": ["has {} prices", "is {}"],
    "customerRating": ["has a {} customer rating", "is rated {} by customers"],
    "near": ["is near {}", "can be found near {}"],
}
FAMILY = {
    "yes": ["is family friendly", "welcomes children"],
    "no": ["is not family friendly", "does not welcome children"],
}


def _cls_example(rng: random.Random, label: int) -> dict:
    a, b, c = rng.sample(NAMES, 3)
    obj, place = rng.choice(OBJECTS), rng.choice(PLACES)
    # Both sentences share one surface form, so the classes differ only in who fills which
    # slot; mixing "gave to" with "received from" made the task unlearnable at demo sizes.
    form = rng.choice(rng.choice(FRAMES))
    giver, receiver = [(a, b), (b, a), rng.choice([(c, b), (a, c)])][label]
    return {
        "text": form.format(a=a, b=b, o=obj) + f" at the {place}.",
        "text_pair": form.format(a=giver, b=receiver, o=obj) + ".",
        "label": label,
    }


def _ner_entity(rng: random.Random, slot: str) -> tuple[list[str], str]:
    if slot == "PER":
        words = rng.choice([[rng.choice(FIRST), rng.choice(SURNAMES)], [rng.choice(FIRST)]])
        return words, "PER"
    if slot == "SUR":
        return [rng.choice(SURNAMES)], "PER"
    return (rng.choice(LOCATIONS) if slot == "LOC" else rng.choice(ORGS)).split(), slot


def _ner_example(rng: random.Random, _label: int) -> dict:
    tokens, tags = [], []
    for word in rng.choice(NER_TEMPLATES).split():
        if word.startswith("{") and word.endswith("}"):
            words, kind = _ner_entity(rng, word[1:-1])
            tokens += words
            tags += [NER_TAGS.index(f"B-{kind}")] + [NER_TAGS.index(f"I-{kind}")] * (len(words) - 1)
        else:
            tokens.append(word)
            tags.append(0)
    return {"tokens": tokens, "tags": tags}


def _realise(name: str, record: dict[str, str], variant: int, order: list[str]) -> str:
    """One reference sentence: wording ``variant`` of each attribute, in ``order``."""
    clauses = [
        FAMILY[record[k]][variant] if k == "familyFriendly" else PHRASES[k][variant].format(record[k]) for k in order
    ]
    body = clauses[0] if len(clauses) == 1 else ", ".join(clauses[:-1]) + " and " + clauses[-1]
    return f"{name} {body}."


def _d2t_example(rng: random.Random, _label: int) -> dict:
    name = rng.choice(RESTAURANTS)
    keys = sorted(rng.sample(list(ATTRIBUTES), rng.randint(2, 4)), key=list(ATTRIBUTES).index)
    record = {key: rng.choice(ATTRIBUTES[key]) for key in keys}
    source = ", ".join([f"name[{name}]"] + [f"{k}[{v}]" for k, v in record.items()])
    shuffled = rng.sample(keys, len(keys))
    refs = [_realise(name, record, 0, keys), _realise(name, record, 1, shuffled)]
    return {"source": source, "references": refs}


GENERATORS: dict[str, tuple[str, Callable[[random.Random, int], dict], Callable[[dict], Hashable]]] = {
    "cls": ("classification", _cls_example, lambda ex: (ex["text"], ex["text_pair"])),
    "ner": ("token_classification", _ner_example, lambda ex: tuple(ex["tokens"])),
    "d2t": ("generation", _d2t_example, lambda ex: ex["source"]),
}


def _generate(make: Callable, key: Callable, n: int, n_classes: int, rng: random.Random, seen: set) -> list[dict]:
    """n unique examples with balanced labels (label i % n_classes, shuffled)."""
    labels = [i % n_classes for i in range(n)]
    rng.shuffle(labels)
    out = []
    for label in labels:
        for _attempt in range(1000):
            example = make(rng, label)
            if key(example) not in seen:
                break
        else:
            raise TaskDataError(f"synthetic: cannot draw {n} unique examples; lower the sizes")
        seen.add(key(example))
        out.append(example)
    return out


@register_loader("synthetic")
def build(cfg: dict) -> Built:
    """Loader hook for ``loader: synthetic`` (``generator``: cls | ner | d2t)."""
    if cfg.get("generator") not in GENERATORS:
        raise TaskDataError(
            f"task {cfg['name']}: field 'generator' is {cfg.get('generator')!r}, expected one of {sorted(GENERATORS)}"
        )
    kind, make, key = GENERATORS[cfg["generator"]]
    if kind != cfg["kind"]:
        raise TaskDataError(
            f"task {cfg['name']}: generator {cfg['generator']!r} makes {kind}, but field 'kind' is {cfg['kind']!r}"
        )
    n_classes = int(cfg.get("n_classes") or 2) if kind == "classification" else 1
    if not 2 <= n_classes <= 3 and kind == "classification":
        raise TaskDataError(f"task {cfg['name']}: field 'n_classes' must be 2 or 3")
    rng, seen = random.Random(f"{cfg['name']}:{cfg['seed']}"), set()
    splits: dict[str, list[dict] | None] = {}
    for split in ("train", "validation", "test"):
        n = int(cfg.get(f"n_{split}") or 0)
        splits[split] = _generate(make, key, n, n_classes, rng, seen) if n > 0 else None
    label_names = {"classification": CLS_LABELS[:n_classes], "token_classification": NER_TAGS}
    return Built(
        label_names=label_names.get(kind), splits=splits, rows_read={s: len(v) for s, v in splits.items() if v}
    )
