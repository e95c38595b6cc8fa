"""An offline task suite in MetaICL's format, built from packaged data only.

Sources: scikit-learn's bundled tables (iris, wine, breast cancer, diabetes),
`unicodedata` character names, the IANA zone names of `zoneinfo`/`tzdata`, Python's
own integers and alphabet, and small word lists written in this file. Nothing is
downloaded. `README.md` in this folder documents how each task is built.

  python -m research.llm.metaicl.suite --out /tmp/icl_suite [--seed 0 --n_test 64]

writes ROOT/config/{partition}.json, ROOT/config/tasks/{task}.json and
ROOT/data/{task}/{task}_{k}_{seed}_{split}.jsonl exactly as `data.py` reads them.
The output is a pure function of (--seed, sizes): rerunning writes identical files.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import unicodedata
import zlib
from typing import Callable

import numpy as np

from research.data import manifest
from research.llm.metaicl import data as icl_data

Row = tuple[str, str, list[str]]  # (input, output, options)


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  name: str
  task_type: str  # "classification" (one option list) | "multi-choice" (per row)
  group: str  # "class" | "nli" | "paraphrase" | "qa": drives the partitions.
  build: Callable[[np.random.Generator], list[Row]]
  options: tuple[str, ...] | None = None


# --------------------------------------------------------------------------------------
# Word lists (written here; small, common English).
# --------------------------------------------------------------------------------------

POSITIVE = ("good great excellent wonderful lovely delightful pleasant superb fantastic "
            "brilliant charming enjoyable amazing beautiful perfect terrific marvelous "
            "splendid outstanding fabulous cheerful impressive nice superb gorgeous").split()
NEGATIVE = ("bad terrible awful horrible dreadful poor boring nasty unpleasant dull "
            "disappointing mediocre miserable lousy painful annoying ugly awkward "
            "pathetic tedious gloomy clumsy rotten dismal").split()
SUBJECTS = ("movie meal hotel book concert service trip show game song room class "
            "lecture party app car phone dinner view museum").split()
TEMPLATES = ("The {s} was {a}.", "The {s} is {a}.", "I found the {s} {a}.",
             "Honestly, the {s} felt {a}.", "Our {s} turned out {a}.")

ANIMALS = {
    "mammal": "dog cat horse cow sheep goat pig lion tiger bear wolf fox deer rabbit mouse "
              "elephant giraffe zebra monkey whale dolphin bat camel squirrel otter".split(),
    "bird": "eagle sparrow robin crow owl parrot penguin pigeon duck goose swan hawk "
            "falcon ostrich flamingo peacock seagull heron woodpecker canary".split(),
    "fish": "salmon trout tuna cod shark carp herring sardine mackerel goldfish pike "
            "bass halibut anchovy eel perch catfish swordfish".split(),
    "insect": "ant bee wasp beetle butterfly moth fly mosquito grasshopper cricket "
              "dragonfly ladybug termite flea cockroach hornet".split(),
    "reptile": "snake lizard crocodile alligator turtle tortoise iguana gecko cobra "
               "python chameleon viper".split(),
}
TOPICS = {
    "food": "bread cheese apple banana rice pasta soup salad pizza cake cookie butter "
            "carrot potato tomato sandwich noodle yogurt honey orange".split(),
    "tool": "hammer saw wrench screwdriver drill chisel shovel rake axe pliers ladder "
            "knife needle scissors brush".split(),
    "vehicle": "car bus truck bicycle train boat ship plane helicopter tram scooter "
               "motorcycle taxi van tractor subway".split(),
    "clothing": "shirt jacket coat hat scarf glove sock shoe boot dress skirt sweater "
                "belt tie vest jeans".split(),
    "color": "red blue green yellow purple orange pink brown black white gray violet "
             "crimson teal maroon navy".split(),
}
# Topic words may overlap (orange): the first topic listed wins.

ANTONYMS = [("hot", "cold"), ("big", "small"), ("fast", "slow"), ("happy", "sad"),
            ("light", "dark"), ("up", "down"), ("open", "closed"), ("early", "late"),
            ("rich", "poor"), ("strong", "weak"), ("hard", "soft"), ("young", "old"),
            ("wet", "dry"), ("full", "empty"), ("long", "short"), ("loud", "quiet"),
            ("high", "low"), ("clean", "dirty"), ("sweet", "sour"), ("thick", "thin"),
            ("win", "lose"), ("buy", "sell"), ("push", "pull"), ("true", "false"),
            ("first", "last"), ("day", "night"), ("inside", "outside"), ("love", "hate"),
            ("begin", "end"), ("safe", "dangerous"), ("easy", "difficult"),
            ("cheap", "expensive"), ("friend", "enemy"), ("north", "south")]
SYNONYMS = [("big", "large"), ("small", "little"), ("fast", "quick"), ("happy", "glad"),
            ("begin", "start"), ("end", "finish"), ("tasty", "delicious"),
            ("smart", "clever"), ("angry", "mad"), ("hard", "difficult"),
            ("easy", "simple"), ("rich", "wealthy"), ("tired", "sleepy"),
            ("sick", "ill"), ("shout", "yell"), ("quiet", "silent"), ("choose", "pick"),
            ("buy", "purchase"), ("help", "assist"), ("close", "shut"),
            ("correct", "right"), ("huge", "enormous"), ("scared", "afraid"),
            ("gift", "present"), ("home", "house"), ("car", "automobile")]
# (country, capital, continent): a table written here, common countries only.
COUNTRIES = [
    ("France", "Paris", "Europe"), ("Germany", "Berlin", "Europe"), ("Italy", "Rome", "Europe"),
    ("Spain", "Madrid", "Europe"), ("Portugal", "Lisbon", "Europe"),
    ("Greece", "Athens", "Europe"), ("Poland", "Warsaw", "Europe"),
    ("Austria", "Vienna", "Europe"), ("Sweden", "Stockholm", "Europe"),
    ("Norway", "Oslo", "Europe"), ("Finland", "Helsinki", "Europe"),
    ("Denmark", "Copenhagen", "Europe"), ("Ireland", "Dublin", "Europe"),
    ("Hungary", "Budapest", "Europe"), ("Russia", "Moscow", "Europe"),
    ("Netherlands", "Amsterdam", "Europe"), ("Belgium", "Brussels", "Europe"),
    ("Japan", "Tokyo", "Asia"), ("China", "Beijing", "Asia"), ("India", "New Delhi", "Asia"),
    ("Thailand", "Bangkok", "Asia"), ("Vietnam", "Hanoi", "Asia"),
    ("Indonesia", "Jakarta", "Asia"), ("Philippines", "Manila", "Asia"),
    ("South Korea", "Seoul", "Asia"), ("Iran", "Tehran", "Asia"), ("Iraq", "Baghdad", "Asia"),
    ("Pakistan", "Islamabad", "Asia"), ("Egypt", "Cairo", "Africa"),
    ("Kenya", "Nairobi", "Africa"), ("Nigeria", "Abuja", "Africa"),
    ("Ethiopia", "Addis Ababa", "Africa"), ("Morocco", "Rabat", "Africa"),
    ("Ghana", "Accra", "Africa"), ("Senegal", "Dakar", "Africa"),
    ("Algeria", "Algiers", "Africa"), ("Canada", "Ottawa", "North America"),
    ("Mexico", "Mexico City", "North America"), ("Cuba", "Havana", "North America"),
    ("United States", "Washington", "North America"), ("Brazil", "Brasilia", "South America"),
    ("Argentina", "Buenos Aires", "South America"), ("Peru", "Lima", "South America"),
    ("Chile", "Santiago", "South America"), ("Colombia", "Bogota", "South America"),
    ("Venezuela", "Caracas", "South America"), ("Australia", "Canberra", "Oceania"),
    ("New Zealand", "Wellington", "Oceania"), ("Fiji", "Suva", "Oceania")]
NUMBER_WORDS = ("zero one two three four five six seven eight nine ten eleven twelve "
                "thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty").split()
OBJECTS = "apples books coins eggs pens cups stones shells cards keys".split()
NAMES = "Anna Ben Carla David Emma Frank Grace Henry Iris Jack Kate Leo Maria Nick Olga".split()


def _pick(rng, seq, n=None):
  idx = rng.choice(len(seq), size=n, replace=False) if n else rng.integers(len(seq))
  return [seq[i] for i in idx] if n else seq[idx]


def _mc(rng, answer, pool, n_options=4) -> list[str]:
  """`answer` plus n_options - 1 distinct distractors from `pool`, shuffled."""
  others = sorted({p for p in pool if p != answer})
  opts = [answer] + _pick(rng, others, n_options - 1)
  return [opts[i] for i in rng.permutation(len(opts))]


# --------------------------------------------------------------------------------------
# Classification tasks: one option list for the whole task.
# --------------------------------------------------------------------------------------

def _sklearn_table(name, columns, labels, fmt):
  def build(rng):
    from sklearn import datasets as skd  # Lazy: slow import.
    d = {"iris": skd.load_iris, "wine": skd.load_wine,
         "breast_cancer": skd.load_breast_cancer}[name]()
    cols = [list(d.feature_names).index(c) for c in columns]
    rows = []
    for x, y in zip(d.data, d.target):
      text = ", ".join(f"{c.replace('_', ' ')} {fmt(x[j])}" for c, j in zip(columns, cols))
      rows.append((text + ".", labels[y], list(labels)))
    return rows
  return build


def _diabetes(rng):
  from sklearn import datasets as skd
  d = skd.load_diabetes(scaled=False)
  cut = np.median(d.target)
  rows = []
  for x, y in zip(d.data, d.target):
    text = (f"age {x[0]:.0f}, body mass index {x[2]:.1f}, blood pressure {x[3]:.0f}, "
            f"blood sugar {x[9]:.0f}.")
    rows.append((text, "high" if y > cut else "low", ["low", "high"]))
  return rows


def _unicode_chars(categories, rng, per_category=60):
  """(char, name) pairs per coarse category, from the BMP."""
  by = {c: [] for c in categories}
  for cp in range(0x20, 0x3000):
    ch = chr(cp)
    name = unicodedata.name(ch, "")
    cat = unicodedata.category(ch)[0]
    key = {"L": "letter", "N": "number", "P": "punctuation", "S": "symbol"}.get(cat)
    if name and key in by:
      by[key].append((ch, name))
  return {k: _pick(rng, v, min(per_category, len(v))) for k, v in by.items()}


def _unicode_category(rng):
  labels = ["letter", "number", "punctuation", "symbol"]
  by = _unicode_chars(labels, rng)
  return [(name.lower(), k, labels) for k in labels for _, name in by[k]]


def _unicode_script(rng):
  labels = ["latin", "greek", "cyrillic", "arabic", "hebrew"]
  rows = []
  for lab in labels:
    names = [unicodedata.name(chr(c), "") for c in range(0x20, 0x1000)]
    names = [n for n in names if n.startswith(lab.upper() + " ") and "LETTER" in n]
    for n in _pick(rng, names, min(40, len(names))):
      # The script word is removed: the letter's own name has to carry the signal.
      rows.append((n.split(" ", 1)[1].lower(), lab, labels))
  return rows


def _char_case(rng):
  labels = ["uppercase", "lowercase"]
  rows = []
  for cp in range(0x41, 0x500):
    ch = chr(cp)
    if ch.isalpha() and ch.lower() != ch.upper():
      rows.append((f"The character {ch}", labels[0] if ch.isupper() else labels[1], labels))
  return [rows[i] for i in rng.permutation(len(rows))[:240]]


def _sentiment(rng):
  labels = ["negative", "positive"]
  rows = []
  for lab, words in ((1, POSITIVE), (0, NEGATIVE)):
    for a in words:
      for t in _pick(rng, TEMPLATES, 3):
        rows.append((t.format(s=_pick(rng, SUBJECTS), a=a), labels[lab], labels))
  return rows


def _word_class(table):
  def build(rng):
    labels = list(table)
    seen, rows = set(), []
    for lab, words in table.items():
      for w in words:
        if w not in seen:
          seen.add(w)
          rows.append((w, lab, labels))
    return rows
  return build


def _number_parity(rng):
  labels = ["even", "odd"]
  nums = rng.choice(np.arange(10, 1000), size=300, replace=False)
  return [(str(n), labels[n % 2], labels) for n in nums]


def _number_size(rng):
  labels = ["small", "large"]
  nums = rng.choice(np.arange(0, 1000), size=300, replace=False)
  return [(str(n), labels[int(n >= 500)], labels) for n in nums]


def _timezone_region(rng):
  import zoneinfo
  labels = ["Africa", "America", "Asia", "Europe", "Pacific"]
  rows = []
  for tz in sorted(zoneinfo.available_timezones()):
    parts = tz.split("/")
    if len(parts) == 2 and parts[0] in labels:
      rows.append((parts[1].replace("_", " "), parts[0], labels))
  return rows


def _first_letter(rng):
  labels = ["vowel", "consonant"]
  words = sorted({w for ws in list(TOPICS.values()) + list(ANIMALS.values()) for w in ws})
  return [(w, labels[0] if w[0] in "aeiou" else labels[1], labels) for w in words]


# --------------------------------------------------------------------------------------
# NLI- and paraphrase-like pair tasks (classification over a pair of sentences).
# --------------------------------------------------------------------------------------

NLI_LABELS = ["entailment", "neutral", "contradiction"]
PARA_LABELS = ["not equivalent", "equivalent"]


def _nli_numbers(rng, n=300):
  rows = []
  for _ in range(n):
    who, obj = _pick(rng, NAMES), _pick(rng, OBJECTS)
    m = int(rng.integers(5, 50))
    lab = int(rng.integers(3))
    prem = f"{who} has {m} {obj}."
    if lab == 0:
      hyp = f"{who} has more than {int(rng.integers(1, m))} {obj}."
    elif lab == 1:
      hyp = f"{_pick(rng, [x for x in NAMES if x != who])} has more than {m} {obj}."
    else:
      hyp = f"{who} has fewer than {int(rng.integers(1, m))} {obj}."
    rows.append((f"{prem} Hypothesis: {hyp}", NLI_LABELS[lab], NLI_LABELS))
  return rows


def _nli_animals(rng, n=300):
  flat = [(w, c) for c, ws in ANIMALS.items() for w in ws]
  rows = []
  for _ in range(n):
    who = _pick(rng, NAMES)
    animal, cls = _pick(rng, flat)
    lab = int(rng.integers(3))
    if lab == 0:
      hyp = f"{who} owns a {cls}."
    elif lab == 1:
      hyp = f"{who} owns a {_pick(rng, TOPICS['vehicle'])}."
    else:
      hyp = f"{who} owns no {cls}s."
    rows.append((f"{who} owns a {animal}. Hypothesis: {hyp}", NLI_LABELS[lab], NLI_LABELS))
  return rows


def _paraphrase_words(rng, n=300):
  rows = []
  for _ in range(n):
    s, t = _pick(rng, SUBJECTS), _pick(rng, ["was", "seemed", "looked"])
    same = bool(rng.integers(2))
    a, b = _pick(rng, SYNONYMS if same else ANTONYMS)
    if rng.integers(2):
      a, b = b, a
    rows.append((f"The {s} {t} {a}. Sentence 2: The {s} {t} {b}.", PARA_LABELS[same],
                 PARA_LABELS))
  return rows


def _paraphrase_numbers(rng, n=300):
  rows = []
  for _ in range(n):
    who, obj = _pick(rng, NAMES), _pick(rng, OBJECTS)
    m = int(rng.integers(2, len(NUMBER_WORDS)))
    same = bool(rng.integers(2))
    m2 = m if same else int(rng.choice([x for x in range(2, len(NUMBER_WORDS)) if x != m]))
    rows.append((f"{who} bought {NUMBER_WORDS[m]} {obj}. Sentence 2: {who} bought {m2} {obj}.",
                 PARA_LABELS[same], PARA_LABELS))
  return rows


# --------------------------------------------------------------------------------------
# QA / multiple-choice tasks: options differ per row.
# --------------------------------------------------------------------------------------

def _capital_qa(rng):
  caps = [c[1] for c in COUNTRIES]
  return [(f"What is the capital of {c}?", cap, _mc(rng, cap, caps)) for c, cap, _ in COUNTRIES]


def _continent_qa(rng):
  conts = sorted({c[2] for c in COUNTRIES})
  return [(f"On which continent is {c}?", k, _mc(rng, k, conts)) for c, _, k in COUNTRIES]


def _arithmetic_qa(rng, n=300):
  rows = []
  for _ in range(n):
    a, b = int(rng.integers(1, 50)), int(rng.integers(1, 50))
    ans = a + b
    pool = [str(ans + d) for d in (-10, -2, -1, 1, 2, 10) if ans + d >= 0]
    rows.append((f"What is {a} plus {b}?", str(ans), _mc(rng, str(ans), pool)))
  return rows


def _next_letter_qa(rng):
  abc = "abcdefghijklmnopqrstuvwxyz"
  rows = []
  for i in range(len(abc) - 1):
    rows.append((f"Which letter comes after {abc[i]}?", abc[i + 1], _mc(rng, abc[i + 1], abc)))
    rows.append((f"Which letter comes before {abc[i + 1]}?", abc[i], _mc(rng, abc[i], abc)))
  return rows


def _antonym_qa(rng):
  words = sorted({w for p in ANTONYMS for w in p})
  rows = []
  for a, b in ANTONYMS:
    for q, ans in ((a, b), (b, a)):
      rows.append((f"What is the opposite of {q}?", ans,
                   _mc(rng, ans, [w for w in words if w != q])))
  return rows


def _sequence_qa(rng, n=300):
  rows = []
  for _ in range(n):
    start, step = int(rng.integers(0, 30)), int(rng.integers(1, 10))
    seq = [start + i * step for i in range(4)]
    ans = start + 4 * step
    pool = [str(ans + d) for d in (-step, -1, 1, step, 2 * step)]
    rows.append((", ".join(map(str, seq)) + ", what comes next?", str(ans),
                 _mc(rng, str(ans), pool)))
  return rows


def _animal_class_qa(rng):
  rows = []
  for cls, ws in ANIMALS.items():
    others = [w for c, v in ANIMALS.items() if c != cls for w in v]
    for w in ws:
      rows.append((f"Which of these animals is a {cls}?", w, _mc(rng, w, others)))
  return rows


def _city_region_qa(rng):
  region_rows = _timezone_region(rng)
  by = {}
  for city, reg, _ in region_rows:
    by.setdefault(reg, []).append(city)
  rows = []
  for reg, cities in by.items():
    others = [c for r, v in by.items() if r != reg for c in v]
    for c in _pick(rng, cities, min(40, len(cities))):
      rows.append((f"Which of these places is in {reg}?", c, _mc(rng, c, others)))
  return rows


# --------------------------------------------------------------------------------------
# The registry and MetaICL-like partitions.
# --------------------------------------------------------------------------------------

_fmt1 = lambda v: f"{v:.1f}"
TASKS: tuple[TaskSpec, ...] = (
    TaskSpec("iris_species", "classification", "class", _sklearn_table(
        "iris", ["sepal length (cm)", "sepal width (cm)", "petal length (cm)",
                 "petal width (cm)"], ["setosa", "versicolor", "virginica"], _fmt1)),
    TaskSpec("wine_cultivar", "classification", "class", _sklearn_table(
        "wine", ["alcohol", "flavanoids", "color_intensity", "proline"],
        ["first", "second", "third"], _fmt1)),
    TaskSpec("breast_cancer_diagnosis", "classification", "class", _sklearn_table(
        "breast_cancer", ["mean radius", "mean texture", "mean concavity", "worst area"],
        ["malignant", "benign"], lambda v: f"{v:.2f}")),
    TaskSpec("diabetes_progression", "classification", "class", _diabetes),
    TaskSpec("unicode_category", "classification", "class", _unicode_category),
    TaskSpec("unicode_script", "classification", "class", _unicode_script),
    TaskSpec("char_case", "classification", "class", _char_case),
    TaskSpec("sentiment_templates", "classification", "class", _sentiment),
    TaskSpec("animal_class", "classification", "class", _word_class(ANIMALS)),
    TaskSpec("word_topic", "classification", "class", _word_class(TOPICS)),
    TaskSpec("number_parity", "classification", "class", _number_parity),
    TaskSpec("number_size", "classification", "class", _number_size),
    TaskSpec("timezone_region", "classification", "class", _timezone_region),
    TaskSpec("first_letter_vowel", "classification", "class", _first_letter),
    TaskSpec("nli_numbers", "classification", "nli", _nli_numbers),
    TaskSpec("nli_animals", "classification", "nli", _nli_animals),
    TaskSpec("paraphrase_words", "classification", "paraphrase", _paraphrase_words),
    TaskSpec("paraphrase_numbers", "classification", "paraphrase", _paraphrase_numbers),
    TaskSpec("capital_qa", "multi-choice", "qa", _capital_qa),
    TaskSpec("continent_qa", "multi-choice", "qa", _continent_qa),
    TaskSpec("arithmetic_qa", "multi-choice", "qa", _arithmetic_qa),
    TaskSpec("next_letter_qa", "multi-choice", "qa", _next_letter_qa),
    TaskSpec("antonym_qa", "multi-choice", "qa", _antonym_qa),
    TaskSpec("sequence_qa", "multi-choice", "qa", _sequence_qa),
    TaskSpec("animal_class_qa", "multi-choice", "qa", _animal_class_qa),
    TaskSpec("city_region_qa", "multi-choice", "qa", _city_region_qa),
)
TASK_BY_NAME = {t.name: t for t in TASKS}

# Meta-test halves, fixed so that every partition's train/test lists are disjoint.
CLASS_TEST = ("iris_species", "breast_cancer_diagnosis", "sentiment_templates",
              "animal_class", "number_parity", "timezone_region", "nli_numbers",
              "paraphrase_words")
QA_TEST = ("capital_qa", "arithmetic_qa", "antonym_qa", "animal_class_qa")


def partitions() -> dict[str, icl_data.Partition]:
  """The MetaICL-like partitions of this suite (meta-train → disjoint meta-test)."""
  names = [t.name for t in TASKS]
  cls = [t.name for t in TASKS if t.task_type == "classification"]
  qa = [t.name for t in TASKS if t.group == "qa"]
  group = {t.name: t.group for t in TASKS}
  P = icl_data.Partition
  return {p.name: p for p in (
      P("class_to_class", tuple(t for t in cls if t not in CLASS_TEST), CLASS_TEST),
      P("non_class_to_class", tuple(qa), CLASS_TEST),
      P("qa_to_qa", tuple(t for t in qa if t not in QA_TEST), QA_TEST),
      P("non_qa_to_qa", tuple(cls), QA_TEST),
      P("non_nli_to_nli", tuple(t for t in names if group[t] != "nli"),
        tuple(t for t in names if group[t] == "nli")),
      P("non_paraphrase_to_paraphrase", tuple(t for t in names if group[t] != "paraphrase"),
        tuple(t for t in names if group[t] == "paraphrase")),
  )}


def _task_rng(seed: int, name: str) -> np.random.Generator:
  # crc32, not hash(): Python salts str hashes per process.
  return np.random.default_rng([seed, zlib.crc32(name.encode())])


def build_task(spec: TaskSpec, *, seed: int = 0, n_test: int = 64, n_dev: int = 8,
               max_train: int = 512) -> dict[str, list[icl_data.Example]]:
  """Splits one task's rows into meta-train / dev / test (disjoint inputs)."""
  rng = _task_rng(seed, spec.name)
  rows = spec.build(rng)
  # Deduplicate (input, output) so no query is also a demonstration. Multiple-choice
  # tasks may share a question ("Which of these animals is a bird?") across answers.
  uniq = {}
  for x, y, opts in rows:
    uniq.setdefault((x, y), (x, y, opts))
  rows = [uniq[key] for key in sorted(uniq)]
  rows = [rows[i] for i in rng.permutation(len(rows))]
  # Small tables (49 countries) keep at most half of their rows for testing.
  n_test = min(n_test, (len(rows) - n_dev) // 2)
  if n_test < 16:
    raise ValueError(f"task {spec.name}: {len(rows)} unique rows, too few for 16 test rows")
  to_ex = lambda r: {"task": spec.name, "input": r[0], "output": r[1], "options": list(r[2])}
  return {"test": [to_ex(r) for r in rows[:n_test]],
          "dev": [to_ex(r) for r in rows[n_test:n_test + n_dev]],
          "train": [to_ex(r) for r in rows[n_test + n_dev:][:max_train]]}


def write_suite(out: str, *, seed: int = 0, n_test: int = 64, n_dev: int = 8,
                max_train: int = 512, k: int = 16, seeds=icl_data.SEEDS,
                tasks: tuple[str, ...] | None = None) -> dict[str, int]:
  """Writes the suite in MetaICL's layout; returns {task: number of test rows}."""
  specs = [TASK_BY_NAME[t] for t in tasks] if tasks else list(TASKS)
  os.makedirs(os.path.join(out, "config", "tasks"), exist_ok=True)
  sizes = {}
  for spec in specs:
    splits = build_task(spec, seed=seed, n_test=n_test, n_dev=n_dev, max_train=max_train)
    f = lambda k_, s, split: icl_data.task_file(out, spec.name, k_, s, split)
    icl_data.write_jsonl(f(icl_data.META_TRAIN_K, icl_data.EVAL_SEED, "train"), splits["train"])
    for split in ("dev", "test"):
      icl_data.write_jsonl(f(k, icl_data.EVAL_SEED, split), splits[split])
    for s in seeds:  # MetaICL's k-shot demonstrations: k train rows drawn per seed.
      idx = np.random.default_rng(s).permutation(len(splits["train"]))[:k]
      icl_data.write_jsonl(f(k, s, "train"), [splits["train"][i] for i in sorted(idx)])
    cfg = {"task_type": spec.task_type, "group": spec.group}
    if spec.task_type == "classification":
      cfg["options"] = splits["test"][0]["options"]
    with open(os.path.join(out, "config", "tasks", f"{spec.name}.json"), "w") as fh:
      json.dump(cfg, fh)
    sizes[spec.name] = len(splits["test"])
  names = {s.name for s in specs}
  for p in partitions().values():
    train = [t for t in p.train if t in names]
    test = [t for t in p.test if t in names]
    if test:
      with open(os.path.join(out, "config", f"{p.name}.json"), "w") as fh:
        json.dump({"train": train, "test": test}, fh, indent=1)
  manifest.write(out)  # Verified on every load (research.llm.metaicl.data).
  return sizes


def prepare(directory: str, *, seed: int = 0, n_test: int = 64, max_train: int = 512,
            k: int = 16) -> str:
  """The suite for these settings under `directory` (written once; a partly written
  one, without its checksum manifest, is written again)."""
  root = os.path.join(directory, f"suite_s{seed}_t{n_test}_m{max_train}"
                      + (f"_k{k}" if k != 16 else ""))
  if not os.path.exists(os.path.join(root, manifest.NAME)):
    write_suite(root, seed=seed, n_test=n_test, max_train=max_train, k=k)
  return root


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--out", required=True)
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--n_test", type=int, default=64)
  ap.add_argument("--n_dev", type=int, default=8)
  ap.add_argument("--max_train", type=int, default=512)
  args = ap.parse_args(argv)
  sizes = write_suite(args.out, seed=args.seed, n_test=args.n_test, n_dev=args.n_dev,
                      max_train=args.max_train)
  print(f"wrote {len(sizes)} tasks, {sum(sizes.values())} test rows, partitions "
        f"{icl_data.list_partitions(args.out)} to {args.out}")


if __name__ == "__main__":
  main()
