"""Hundreds of distinct classification tasks in MetaICL's format, from offline sources,
none of which leaks a meta-test task of any partition of the offline suite.

  python -m research.llm.metaicl.generator --out DIR [--seed 0 --num_tasks 600]

writes the offline suite (`suite.py`, byte-identical to `suite.prepare`'s) plus the
generated tasks into DIR, and these partitions next to the suite's six:

  gen{n}_to_class   meta-train: the first n generated training tasks; meta-test: the
                    suite's class_to_class meta-test tasks (its 8 classification tasks)
  gen{n}_to_val     the same n tasks; meta-test: the generated *validation* tasks
  class_to_val      the suite's class_to_class meta-train tasks; meta-test: validation
for n in `SIZES` (and the full pool). Training tasks are ordered round-robin over
families, so every prefix mixes every kind of task; the sets are nested
(10 ⊂ 100 ⊂ 500).

Sources (nothing is downloaded): integers and their arithmetic properties; number
pairs; English words of the Python reference manual (`pydoc_data.topics`) and their
spelling; word pairs; calendar dates (`datetime`); Unicode character properties
(`unicodedata`); number sequences; scikit-learn's bundled wine, diabetes and digits
tables, verbalised; and semantic word categories written in this file. A *concept*
is one labelling function (e.g. "the number is divisible by 7", "fruit vs
vegetable"); a *task* is a concept with one input template and one label wording.
Every concept gets one or more tasks (different template / wording); validation
concepts (and, for the semantic family, their categories and words) never appear in
a training task.

Leak guard (`leaks`, run on every build and by tests/llm/test_metaicl_generator.py),
against every meta-test task of every partition:
  * names, and the concepts of the meta-test tasks (flower species, tumour diagnosis,
    sentiment, animal classes, parity, place → region, capitals, addition, antonyms,
    NLI, paraphrase) — no generated concept is one of them (`FORBIDDEN_CONCEPTS`);
  * label sets: no generated option is a label of a meta-test classification task,
    and no generated option set equals a meta-test row's option set;
  * templates: every generated task has a template (a word, not a number, in ≥ 50 % of
    its inputs: never the bare "{x}" of animal_class,
    number_parity or timezone_region), and no frequent 3-gram (in ≥ 10 % of inputs) of
    a generated task is a frequent 3-gram of a meta-test task;
  * rows: no generated input equals a meta-test input, and no generated input contains
    a word that is a whole meta-test input (animal names, city names, ...).
Rows that would break the last rule are dropped when a task is built, so the guard
is a check, not a filter. Everything is a pure function of --seed.
"""
from __future__ import annotations

import argparse
import calendar
import collections
import dataclasses
import datetime
import hashlib
import itertools
import json
import os
import re
import unicodedata
import zlib
from typing import Callable, Sequence

import numpy as np

from research.data import manifest
from research.llm.metaicl import data as icl_data
from research.llm.metaicl import suite

SIZES = (10, 30, 100, 300, 500)
NUM_VAL = 12        # Validation tasks (one per validation concept).
MIN_ROWS = 40       # A task needs this many distinct rows (validation tasks: 48).
MAX_ROWS = 256      # Rows written per training task.
VAL_N_TEST = 24     # Test rows of a validation task.

# The meta-test concepts of the suite's partitions: no generated concept may be one.
FORBIDDEN_CONCEPTS = frozenset({
    "flower_species", "tumour_diagnosis", "sentiment", "animal_class", "parity",
    "place_region", "capital", "addition", "antonym", "nli", "paraphrase"})

Item = object
Row = tuple[str, str, list[str]]


@dataclasses.dataclass(frozen=True)
class Concept:
  """A labelling function over a domain of items."""
  name: str
  family: str
  labels: tuple[tuple[str, ...], ...]   # Label wordings: each a tuple, one per class.
  templates: tuple[str, ...]            # Input templates; {x} (or the domain's fields).
  items: Callable[[np.random.Generator], list[tuple[dict, int]]]  # (fields, class)


@dataclasses.dataclass
class Task:
  name: str
  concept: str
  family: str
  template: str
  options: list[str]
  rows: list[Row]


# --------------------------------------------------------------------------------------
# Word sources.
# --------------------------------------------------------------------------------------

# Semantic categories (written here). No animals, places, sentiment or number words
# (meta-test material); the validation categories are the last VAL_CATEGORIES.
CATEGORIES = {
    "fruit": "apple banana cherry grape lemon mango peach pear plum apricot melon kiwi lime "
             "papaya coconut fig guava raspberry strawberry blueberry".split(),
    "vegetable": "carrot potato onion cabbage lettuce spinach celery garlic pea broccoli "
                 "cucumber radish turnip beet leek kale zucchini eggplant asparagus "
                 "cauliflower".split(),
    "body part": "arm leg hand foot knee elbow shoulder finger thumb ankle wrist neck chin "
                 "forehead cheek lip tongue tooth hip heel".split(),
    "profession": "doctor teacher lawyer nurse farmer baker plumber carpenter pilot engineer "
                  "dentist surgeon architect chef mechanic journalist librarian accountant "
                  "electrician pharmacist".split(),
    "instrument": "piano violin guitar drum flute trumpet cello harp clarinet saxophone "
                  "trombone banjo accordion harmonica oboe tuba ukulele xylophone bagpipes "
                  "mandolin".split(),
    "furniture": "chair table sofa bed desk shelf cabinet dresser stool bench wardrobe couch "
                 "bookcase ottoman armchair cupboard nightstand recliner futon hammock".split(),
    "weather": "rain snow hail fog drizzle thunder lightning storm blizzard sleet mist "
               "breeze gale tornado hurricane frost drought monsoon typhoon heatwave".split(),
    "sport": "soccer tennis golf hockey rugby cricket baseball basketball volleyball "
             "boxing fencing rowing cycling skiing surfing wrestling archery badminton "
             "lacrosse polo".split(),
    "metal": "iron copper silver gold zinc tin lead nickel aluminum platinum titanium "
             "chromium cobalt tungsten magnesium mercury bronze brass steel pewter".split(),
    "shape": "circle square triangle rectangle oval pentagon hexagon octagon cube sphere "
             "cone cylinder pyramid prism rhombus trapezoid ellipse spiral crescent "
             "star".split(),
    "kitchen utensil": "spoon fork ladle spatula whisk colander grater peeler tongs "
                       "skillet saucepan kettle strainer rolling pin cleaver corkscrew "
                       "funnel sieve blender toaster".split(),
    "beverage": "coffee tea juice milk water lemonade soda cocoa cider wine beer smoothie "
                "espresso latte milkshake kombucha punch broth nectar tonic".split(),
    "plant": "oak maple pine birch willow cedar elm fern moss ivy cactus bamboo palm "
             "spruce poplar cypress hemlock juniper sequoia magnolia".split(),
    "building": "house castle church temple tower barn cottage palace factory warehouse "
                "skyscraper hospital library museum school stadium theater mansion hut "
                "lighthouse".split(),
    "relative": "mother father sister brother uncle aunt cousin niece nephew grandmother "
                "grandfather daughter son wife husband stepson stepmother grandson "
                "granddaughter godfather".split(),
    "school subject": "mathematics physics chemistry biology history geography literature "
                      "algebra geometry economics philosophy psychology sociology astronomy "
                      "geology botany zoology grammar calculus statistics".split(),
    "gemstone": "diamond ruby emerald sapphire topaz opal pearl amethyst garnet jade onyx "
                "quartz turquoise amber jasper agate peridot zircon beryl citrine".split(),
    "fabric": "cotton silk wool linen denim velvet satin leather nylon polyester "
              "cashmere tweed flannel suede corduroy chiffon lace felt canvas "
              "fleece".split(),
    "spice": "pepper salt cinnamon nutmeg ginger clove cumin paprika saffron turmeric "
             "oregano basil thyme rosemary sage mint parsley dill vanilla cardamom".split(),
    "computer part": "keyboard mouse monitor processor motherboard disk memory router "
                     "modem printer scanner webcam speaker microphone touchpad charger "
                     "cable adapter fan battery".split(),
    "office supply": "stapler paperclip pencil eraser notebook envelope folder binder "
                     "highlighter marker ruler sharpener calculator calendar clipboard "
                     "tape glue thumbtack notepad postcard".split(),
    "toy": "doll kite yoyo puzzle marble balloon rattle teddy frisbee skateboard "
           "trampoline robot slinky lego domino jigsaw pinwheel whistle spinner "
           "sandbox".split(),
    "dessert": "pie pudding custard brownie cupcake muffin tart sorbet gelato mousse "
               "cheesecake pancake waffle donut eclair fudge truffle macaron meringue "
               "trifle".split(),
    "tool part": "handle blade hinge bolt screw nut washer spring lever gear pulley valve "
                 "nozzle trigger clamp bracket rivet axle socket latch".split(),
}
VAL_CATEGORIES = ("dessert", "toy", "office supply", "tool part")


def reference_words(min_count: int = 2) -> list[str]:
  """Lower-case English words (3-12 letters) of the Python reference manual."""
  from pydoc_data import topics  # pylint: disable=import-outside-toplevel
  count = collections.Counter(
      w for k in sorted(topics.topics) for w in re.findall(r"\b[a-z]{3,12}\b", topics.topics[k]))
  return sorted(w for w, n in count.items() if n >= min_count)


# --------------------------------------------------------------------------------------
# Domains: item samplers shared by concepts.
# --------------------------------------------------------------------------------------

def _balanced(rng, pools: Sequence[Sequence], per_class: int) -> list[tuple[dict, int]]:
  """Up to per_class distinct items of each class (the pools hold field dicts)."""
  out = []
  for c, pool in enumerate(pools):
    pool = list(pool)
    idx = rng.permutation(len(pool))[:per_class]
    out += [(pool[i], c) for i in idx]
  return out


def _numbers_by(rng, label: Callable[[int], int], n_classes: int, low=1000, high=99999,
                per_class=90, draws=20000):
  xs = rng.integers(low, high + 1, draws)
  pools = [sorted({int(x) for x in xs if label(int(x)) == c}) for c in range(n_classes)]
  return _balanced(rng, [[{"x": str(x)} for x in p] for p in pools], per_class)


def _constructed_numbers(rng, positives: Sequence[int], test: Callable[[int], bool],
                         per_class=90, low=1000, high=99999):
  pos = [p for p in positives if low <= p <= high]
  neg = sorted({int(x) for x in rng.integers(low, high + 1, 4000) if not test(int(x))})
  return _balanced(rng, [[{"x": str(x)} for x in neg], [{"x": str(x)} for x in pos]],
                   per_class)


def _is_prime(n: int) -> bool:
  if n < 2:
    return False
  for p in range(2, int(n ** 0.5) + 1):
    if n % p == 0:
      return False
  return True


def _words_by(words, label: Callable[[str], int], n_classes: int, rng, per_class=90):
  pools = [[{"x": w} for w in words if label(w) == c] for c in range(n_classes)]
  return _balanced(rng, pools, per_class)


def _pairs(rng, words, label: Callable[[str, str], int], n_classes: int, per_class=90,
           make_positive: Callable | None = None, draws=6000):
  pools = [set() for _ in range(n_classes)]
  for _ in range(draws):
    a, b = words[rng.integers(len(words))], words[rng.integers(len(words))]
    if a != b:
      pools[label(a, b)].add((a, b))
  if make_positive is not None:
    for _ in range(draws // 10):
      a = words[rng.integers(len(words))]
      b = make_positive(a, rng)
      if b and b != a:
        pools[label(a, b)].add((a, b))
  return _balanced(rng, [[{"a": a, "b": b} for a, b in sorted(p)] for p in pools], per_class)


def _dates(rng, label: Callable[[datetime.date], int], n_classes: int, per_class=90):
  start = datetime.date(1950, 1, 1).toordinal()
  days = rng.integers(0, 365 * 100, 6000)
  pools = [set() for _ in range(n_classes)]
  for d in days:
    date = datetime.date.fromordinal(start + int(d))
    pools[label(date)].add(date)
  fields = lambda d: {"iso": d.isoformat(), "month": calendar.month_name[d.month],
                      "day": str(d.day), "year": str(d.year)}
  return _balanced(rng, [[fields(d) for d in sorted(p)] for p in pools], per_class)


def _unicode(rng, label: Callable[[str], int | None], n_classes: int, per_class=90):
  pools = [[] for _ in range(n_classes)]
  for cp in range(0x21, 0x3000):
    ch = chr(cp)
    name = unicodedata.name(ch, "")
    if not name or unicodedata.category(ch).startswith("C"):
      continue
    c = label(ch)
    if c is not None:
      pools[c].append({"x": name.lower(), "hex": f"{cp:04X}"})
  return _balanced(rng, pools, per_class)


def _sequences(rng, label: Callable[[list[int]], int], n_classes: int, per_class=90,
               make: Callable | None = None):
  pools = [set() for _ in range(n_classes)]
  for _ in range(6000):
    n = int(rng.integers(4, 7))
    if make is not None and rng.random() < 0.5:
      seq = make(rng, n)
    else:
      seq = [int(v) for v in rng.integers(1, 100, n)]
    pools[label(seq)].add(tuple(seq))
  return _balanced(rng, [[{"x": ", ".join(map(str, s))} for s in sorted(p)] for p in pools],
                   per_class)


def _table_rows(name: str):
  from sklearn import datasets as skd  # pylint: disable=import-outside-toplevel
  if name == "wine":
    d = skd.load_wine()
    return [f.replace("_", " ").replace("od280/od315 of diluted wines", "od ratio")
            for f in d.feature_names], d.data, d.target
  if name == "diabetes":
    d = skd.load_diabetes(scaled=False)
    names = ["age", "sex", "body mass index", "blood pressure", "total cholesterol",
             "ldl", "hdl", "cholesterol ratio", "triglycerides", "glucose"]
    return names, d.data, d.target
  d = skd.load_digits()
  # 8x8 images verbalised as the ink in each row (0-64, halved to 0-32 per row).
  rows = d.images.sum(axis=2) / 2
  return [f"row {i + 1}" for i in range(8)], rows, d.target


def _table(name: str, inputs: Sequence[int], label: Callable, n_classes: int, per_class=90):
  def items(rng):
    feats, x, y = _table_rows(name)
    pools = [[] for _ in range(n_classes)]
    for row, target in zip(x, y):
      c = label(row, target, x, y)
      if c is not None:
        text = ", ".join(f"{feats[j]} {row[j]:.1f}".replace(".0", "") if name == "digits"
                         else f"{feats[j]} {row[j]:.1f}" for j in inputs)
        pools[c].append({"x": text})
    return _balanced(rng, pools, per_class)
  return items


# --------------------------------------------------------------------------------------
# Concepts.
# --------------------------------------------------------------------------------------

NUM_T = ("Number: {x}", "The value is {x}.", "There are {x} marbles in the jar.",
         "Ticket {x} was drawn.", "Input {x} gives")
PAIR_T = ("{a} and {b}", "Compare {a} with {b}.", "First {a}, then {b}.")
WORD_T = ("Word: {x}", "Consider the term \"{x}\".", "Spelling check for {x}.",
          "The token {x} appears in the manual.")
WPAIR_T = ("{a} versus {b}", "Words {a} and {b}.", "Pair of terms: {a}, {b}.")
DATE_T = ("Date: {iso}", "It happened on {month} {day}, {year}.", "Calendar entry {iso}.")
UNI_T = ("Character name: {x}", "Unicode U+{hex} is {x}.", "Glyph called {x}.")
SEQ_T = ("Sequence: {x}", "The list reads {x}.", "Values in order: {x}.")
TAB_T = ("Measurements: {x}.", "Record with {x}.", "Sample {x}.")
SEM_T = ("Item: {x}", "The word {x} names a kind of", "Which group holds {x}?")

YES_NO = (("no", "yes"), ("false", "true"), ("wrong", "right"))


def number_concepts() -> list[Concept]:
  out = []
  for m in range(3, 13):
    out.append(Concept(f"divisible_by_{m}", "number", YES_NO[:2], NUM_T, lambda rng, m=m:
                       _numbers_by(rng, lambda n: int(n % m == 0), 2)))
  for m in (3, 4, 5):
    words = ("zero", "one", "two", "three", "four")[:m]
    letters = tuple("ABCDE"[:m])
    out.append(Concept(f"residue_mod_{m}", "number", (words, letters), NUM_T,
                       lambda rng, m=m: _numbers_by(rng, lambda n: n % m, m, per_class=60)))
  for t in (20000, 40000, 60000, 80000):
    out.append(Concept(f"above_{t}", "number", (("below", "above"), ("under", "over")), NUM_T,
                       lambda rng, t=t: _numbers_by(rng, lambda n: int(n >= t), 2)))
  out.append(Concept("five_digits", "number", (("four digits", "five digits"),
                                               ("short", "long")), NUM_T,
                     lambda rng: _numbers_by(rng, lambda n: int(n >= 10000), 2)))
  for d in range(10):
    out.append(Concept(f"contains_digit_{d}", "number", (("absent", "present"), YES_NO[0]),
                       NUM_T, lambda rng, d=d: _numbers_by(rng, lambda n: int(str(d) in str(n)),
                                                           2)))
  out.append(Concept("last_digit_high", "number", (("low end", "high end"),), NUM_T,
                     lambda rng: _numbers_by(rng, lambda n: int(n % 10 >= 5), 2)))
  out.append(Concept("first_digit_high", "number", (("low start", "high start"),), NUM_T,
                     lambda rng: _numbers_by(rng, lambda n: int(int(str(n)[0]) >= 5), 2)))
  out.append(Concept("digit_sum_20", "number", (("small sum", "large sum"),), NUM_T,
                     lambda rng: _numbers_by(rng, lambda n: int(sum(map(int, str(n))) >= 20),
                                             2)))
  out.append(Concept("prime", "number", (("composite", "prime"),), NUM_T, lambda rng:
                     _numbers_by(rng, lambda n: int(_is_prime(n)), 2, draws=40000)))
  out.append(Concept("perfect_square", "number", (("not square", "square"),), NUM_T,
                     lambda rng: _constructed_numbers(rng, [i * i for i in range(32, 317)],
                                                      lambda n: int(n ** 0.5) ** 2 == n)))
  out.append(Concept("palindrome_number", "number", (("plain", "palindrome"),), NUM_T,
                     lambda rng: _constructed_numbers(
                         rng, sorted({int(s + s[-2::-1]) for s in map(str, range(100, 1000))}
                                     | {int(s + s[::-1]) for s in map(str, range(10, 100))}),
                         lambda n: str(n) == str(n)[::-1])))
  out.append(Concept("repeated_digit", "number", (("distinct digits", "repeated digit"),),
                     NUM_T, lambda rng: _numbers_by(
                         rng, lambda n: int(any(a == b for a, b in zip(str(n), str(n)[1:]))),
                         2)))
  out.append(Concept("rising_digits", "number", (("unordered", "rising"),), NUM_T,
                     lambda rng: _constructed_numbers(
                         rng, sorted(int("".join(c)) for r in (4, 5)
                                     for c in itertools.combinations("123456789", r)),
                         lambda n: list(str(n)) == sorted(set(str(n))))))
  out.append(Concept("number_band", "number", (("low", "middle", "high"),
                                               ("bottom", "centre", "top")), NUM_T,
                     lambda rng: _numbers_by(rng, lambda n: min(2, n * 3 // 100000), 3,
                                             per_class=60)))
  return out


def pair_concepts() -> list[Concept]:
  def nums(label, n=2):
    def items(rng):
      xs = rng.integers(1000, 10000, (6000, 2))
      pools = [set() for _ in range(n)]
      for a, b in xs:
        if a != b:
          pools[label(int(a), int(b))].add((int(a), int(b)))
      return _balanced(rng, [[{"a": str(a), "b": str(b)} for a, b in sorted(p)] for p in pools],
                       90)
    return items
  return [
      Concept("larger_of_two", "number pair", (("first", "second"), ("left", "right")), PAIR_T,
              nums(lambda a, b: int(b > a))),
      Concept("sum_over_10000", "number pair", (("under", "over"),), PAIR_T,
              nums(lambda a, b: int(a + b >= 10000))),
      Concept("close_numbers", "number pair", (("far", "close"),), PAIR_T,
              nums(lambda a, b: int(abs(a - b) < 2500))),
      Concept("same_first_digit", "number pair", (("differ", "match"),), PAIR_T,
              nums(lambda a, b: int(str(a)[0] == str(b)[0]))),
      Concept("same_last_digit", "number pair", (("differ", "match"),), PAIR_T,
              nums(lambda a, b: int(a % 10 == b % 10))),
      Concept("digit_sum_larger", "number pair", (("first", "second"),), PAIR_T,
              nums(lambda a, b: int(sum(map(int, str(b))) > sum(map(int, str(a)))))),
  ]


def word_concepts(words: Sequence[str]) -> list[Concept]:
  from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS  # pylint: disable=import-outside-toplevel
  out = []
  w = lambda label, n=2: (lambda rng: _words_by(words, label, n, rng))
  for n in (5, 6, 7, 8, 9):
    out.append(Concept(f"length_at_least_{n}", "word", (("short", "long"), ("brief", "lengthy")),
                       WORD_T, w(lambda x, n=n: int(len(x) >= n))))
  out.append(Concept("starts_a_to_m", "word", (("late letter", "early letter"),), WORD_T,
                     w(lambda x: int(x[0] <= "m"))))
  for c in "esytdnrl":
    out.append(Concept(f"ends_with_{c}", "word", (YES_NO[0], (f"not {c}", f"ends {c}")), WORD_T,
                       w(lambda x, c=c: int(x.endswith(c)))))
  for suffix in ("ing", "ed", "ion", "ly", "er", "al"):
    out.append(Concept(f"suffix_{suffix}", "word", ((f"no -{suffix}", f"-{suffix}"),), WORD_T,
                       w(lambda x, s=suffix: int(x.endswith(s)))))
  for c in "aeioursntlcpmh":
    out.append(Concept(f"contains_{c}", "word", ((f"no {c}", f"has {c}"), YES_NO[1]), WORD_T,
                       w(lambda x, c=c: int(c in x))))
  for dg in ("th", "ch", "sh", "qu"):
    out.append(Concept(f"digraph_{dg}", "word", ((f"without {dg}", f"with {dg}"),), WORD_T,
                       w(lambda x, dg=dg: int(dg in x))))
  out.append(Concept("double_letter", "word", (("single letters", "double letter"),), WORD_T,
                     w(lambda x: int(any(a == b for a, b in zip(x, x[1:]))))))
  out.append(Concept("three_vowels", "word", (("few vowels", "many vowels"),), WORD_T,
                     w(lambda x: int(sum(ch in "aeiou" for ch in x) >= 3))))
  out.append(Concept("stop_word", "word", (("content word", "function word"),), WORD_T,
                     w(lambda x: int(x in ENGLISH_STOP_WORDS))))
  return out


def word_pair_concepts(words: Sequence[str]) -> list[Concept]:
  def shuffle(a, rng):
    return "".join(rng.permutation(list(a)))
  by_initial = collections.defaultdict(list)
  for w in words:
    by_initial[w[0]].append(w)
  p = lambda label, make=None: (lambda rng: _pairs(rng, list(words), label, 2,
                                                   make_positive=make))
  return [
      Concept("same_initial", "word pair", (("differ", "match"),), WPAIR_T,
              p(lambda a, b: int(a[0] == b[0]), lambda a, rng: by_initial[a[0]][
                  rng.integers(len(by_initial[a[0]]))])),
      Concept("same_final", "word pair", (("differ", "match"),), WPAIR_T,
              p(lambda a, b: int(a[-1] == b[-1]))),
      Concept("same_length", "word pair", (("unequal", "equal"),), WPAIR_T,
              p(lambda a, b: int(len(a) == len(b)))),
      Concept("first_longer", "word pair", (("second", "first"),), WPAIR_T,
              p(lambda a, b: int(len(a) > len(b)))),
      Concept("alphabetical", "word pair", (("reversed", "in order"),), WPAIR_T,
              p(lambda a, b: int(a < b))),
      Concept("rhyme", "word pair", (("no rhyme", "rhyme"),), WPAIR_T,
              p(lambda a, b: int(a[-2:] == b[-2:]))),
      Concept("anagram", "word pair", (("different letters", "same letters"),), WPAIR_T,
              p(lambda a, b: int(sorted(a) == sorted(b)), shuffle)),
      Concept("reversal", "word pair", (("not reversed", "reversed"),), WPAIR_T,
              p(lambda a, b: int(a == b[::-1]), lambda a, rng: a[::-1])),
      Concept("prefix_of", "word pair", (("unrelated", "prefix"),), WPAIR_T,
              p(lambda a, b: int(b.startswith(a) or a.startswith(b)),
                lambda a, rng: a[:max(2, len(a) // 2)])),
  ]


def date_concepts() -> list[Concept]:
  return [
      Concept("weekend", "date", (("weekday", "weekend"), ("workday", "rest day")), DATE_T,
              lambda rng: _dates(rng, lambda d: int(d.weekday() >= 5), 2)),
      Concept("day_of_week", "date", (tuple(calendar.day_name),), DATE_T,
              lambda rng: _dates(rng, lambda d: d.weekday(), 7, per_class=30)),
      Concept("quarter", "date", (("Q1", "Q2", "Q3", "Q4"),
                                  ("first quarter", "second quarter", "third quarter",
                                   "fourth quarter")), DATE_T,
              lambda rng: _dates(rng, lambda d: (d.month - 1) // 3, 4, per_class=45)),
      Concept("season", "date", (("winter", "spring", "summer", "autumn"),), DATE_T,
              lambda rng: _dates(rng, lambda d: (d.month % 12) // 3, 4, per_class=45)),
      Concept("early_in_month", "date", (("late in month", "early in month"),), DATE_T,
              lambda rng: _dates(rng, lambda d: int(d.day <= 15), 2)),
      Concept("leap_year", "date", (("common year", "leap year"),), DATE_T,
              lambda rng: _dates(rng, lambda d: int(calendar.isleap(d.year)), 2)),
      Concept("long_month", "date", (("short month", "long month"),), DATE_T,
              lambda rng: _dates(rng, lambda d: int(calendar.monthrange(d.year, d.month)[1]
                                                    == 31), 2)),
      Concept("second_half_year", "date", (("first half", "second half"),), DATE_T,
              lambda rng: _dates(rng, lambda d: int(d.month >= 7), 2)),
      Concept("century", "date", (("twentieth century", "twenty-first century"),), DATE_T,
              lambda rng: _dates(rng, lambda d: int(d.year >= 2000), 2)),
  ]


def unicode_concepts() -> list[Concept]:
  def block(ch):
    cp = ord(ch)
    for i, (lo, hi) in enumerate(((0x2190, 0x21FF), (0x2200, 0x22FF), (0x2500, 0x257F),
                                  (0x25A0, 0x25FF))):
      if lo <= cp <= hi:
        return i
    return None
  return [
      Concept("mirrored", "unicode", (("symmetric", "mirrored"),), UNI_T,
              lambda rng: _unicode(rng, lambda ch: int(unicodedata.mirrored(ch)), 2)),
      Concept("right_to_left", "unicode", (("left to right", "right to left"),), UNI_T,
              lambda rng: _unicode(rng, lambda ch: {"L": 0, "R": 1, "AL": 1}.get(
                  unicodedata.bidirectional(ch)), 2)),
      Concept("decomposable", "unicode", (("atomic", "composed"),), UNI_T,
              lambda rng: _unicode(rng, lambda ch: int(bool(unicodedata.decomposition(ch))), 2)),
      Concept("combining_mark", "unicode", (("spacing", "combining"),), UNI_T,
              lambda rng: _unicode(rng, lambda ch: int(unicodedata.combining(ch) > 0), 2)),
      Concept("wide_character", "unicode", (("narrow", "wide"),), UNI_T,
              lambda rng: _unicode(rng, lambda ch: int(unicodedata.east_asian_width(ch)
                                                       in ("W", "F")), 2)),
      Concept("symbol_block", "unicode", (("arrow", "math operator", "box drawing",
                                           "geometric shape"),), UNI_T,
              lambda rng: _unicode(rng, block, 4, per_class=45)),
      Concept("digit_value_high", "unicode", (("low digit", "high digit"),), UNI_T,
              lambda rng: _unicode(rng, lambda ch: None if unicodedata.decimal(ch, None) is None
                                   else int(unicodedata.decimal(ch) >= 5), 2)),
  ]


def sequence_concepts() -> list[Concept]:
  def arith(rng, n):
    a, d = int(rng.integers(1, 40)), int(rng.integers(-9, 10))
    return [a + d * i for i in range(n)]
  def sorted_seq(rng, n):
    return sorted(int(v) for v in rng.integers(1, 100, n))
  def trend(s):
    up = all(b > a for a, b in zip(s, s[1:]))
    down = all(b < a for a, b in zip(s, s[1:]))
    return 0 if up else 1 if down else 2
  return [
      Concept("trend", "sequence", (("increasing", "decreasing", "mixed"),), SEQ_T,
              lambda rng: _sequences(rng, trend, 3, per_class=60,
                                     make=lambda r, n: sorted_seq(r, n)[::1 - 2 * int(r.integers(2))])),
      Concept("arithmetic_progression", "sequence", (("irregular", "regular"),), SEQ_T,
              lambda rng: _sequences(rng, lambda s: int(len({b - a for a, b in zip(s, s[1:])})
                                                        == 1), 2, make=arith)),
      Concept("has_repeat", "sequence", (("all different", "has repeat"),), SEQ_T,
              lambda rng: _sequences(rng, lambda s: int(len(set(s)) < len(s)), 2,
                                     make=lambda r, n: [int(v) for v in r.integers(1, 8, n)])),
      Concept("max_last", "sequence", (("peak earlier", "peak last"),), SEQ_T,
              lambda rng: _sequences(rng, lambda s: int(s[-1] == max(s)), 2,
                                     make=sorted_seq)),
      Concept("sum_over_250", "sequence", (("small total", "large total"),), SEQ_T,
              lambda rng: _sequences(rng, lambda s: int(sum(s) >= 250), 2)),
      Concept("long_sequence", "sequence", (("four or five", "six"),), SEQ_T,
              lambda rng: _sequences(rng, lambda s: int(len(s) == 6), 2)),
  ]


def table_concepts() -> list[Concept]:
  out = []
  med = lambda j: (lambda row, t, x, y: int(row[j] >= np.median(x[:, j])))
  wine_inputs = [(0, 5, 10), (1, 4, 8), (2, 3, 11), (6, 9, 12), (0, 7, 9)]
  for i, cols in enumerate(wine_inputs):
    out.append(Concept(f"wine_cultivar_{i}", "table", (("A", "B", "C"),
                                                       ("cultivar one", "cultivar two",
                                                        "cultivar three")), TAB_T,
                       _table("wine", cols, lambda row, t, x, y: int(t), 3, per_class=45)))
  for target in range(13):
    cols = [j for j in ((target + 1) % 13, (target + 4) % 13, (target + 7) % 13)]
    out.append(Concept(f"wine_feature_{target}", "table", (("lower", "higher"),), TAB_T,
                       _table("wine", cols, med(target), 2)))
  for q in (0.25, 0.5, 0.75):
    out.append(Concept(f"diabetes_progression_q{int(q * 100)}", "table",
                       (("mild", "severe"),), TAB_T,
                       _table("diabetes", (0, 2, 3, 9), lambda row, t, x, y, q=q:
                              int(t >= np.quantile(y, q)), 2)))
  for target in (4, 5, 6, 8):
    cols = (0, 2, 3) if target != 8 else (2, 3, 9)
    out.append(Concept(f"diabetes_feature_{target}", "table", (("lower", "higher"),), TAB_T,
                       _table("diabetes", cols, med(target), 2)))
  out.append(Concept("digit_zero_one", "table", (("zero", "one"), ("round", "stroke")), TAB_T,
                     _table("digits", range(8), lambda row, t, x, y: int(t) if t < 2 else None,
                            2)))
  out.append(Concept("digit_below_five", "table", (("small digit", "large digit"),), TAB_T,
                     _table("digits", range(8), lambda row, t, x, y: int(t >= 5), 2)))
  out.append(Concept("digit_three_or_eight", "table", (("three", "eight"),), TAB_T,
                     _table("digits", range(8),
                            lambda row, t, x, y: {3: 0, 8: 1}.get(int(t)), 2)))
  return out


def semantic_concepts() -> list[Concept]:
  """Pairs of categories (binary tasks) and triples of the validation categories."""
  def items(cats):
    def build(rng):
      pools = [[{"x": w} for w in CATEGORIES[c]] for c in cats]
      return _balanced(rng, pools, 90)
    return build
  out = []
  train = [c for c in CATEGORIES if c not in VAL_CATEGORIES]
  for a, b in itertools.combinations(train, 2):
    out.append(Concept(f"category_{a}_vs_{b}".replace(" ", "_"), "semantic", ((a, b),),
                       SEM_T, items((a, b))))
  for cats in itertools.combinations(VAL_CATEGORIES, 3):
    out.append(Concept("category_" + "_".join(cats).replace(" ", "_"), "semantic val",
                       (cats,), SEM_T, items(cats)))
  return out


def all_concepts(words: Sequence[str]) -> list[Concept]:
  return (number_concepts() + pair_concepts() + word_concepts(words)
          + word_pair_concepts(words) + date_concepts() + unicode_concepts()
          + sequence_concepts() + table_concepts() + semantic_concepts())


# --------------------------------------------------------------------------------------
# Meta-test reference and the leak guard.
# --------------------------------------------------------------------------------------

def _tokens(text: str) -> list[str]:
  return re.sub(r"\d+", "#", text.lower()).replace("#", " # ").split()


def _words(text: str) -> list[str]:
  return re.findall(r"[a-z]+", text.lower())


def frame(inputs: Sequence[str], n: int, share: float) -> set[str]:
  """Word n-grams (digits → #) found in at least `share` of the inputs."""
  count = collections.Counter()
  for x in inputs:
    t = [re.sub(r"[^\w#]", "", w) for w in _tokens(x)]
    t = [w for w in t if w]
    count.update({" ".join(t[i:i + n]) for i in range(len(t) - n + 1)})
  return {g for g, c in count.items() if c >= share * len(inputs)}


@dataclasses.dataclass
class Reference:
  """What the generated tasks must not contain: every meta-test task of every partition."""
  tasks: dict[str, list[dict]]          # task -> its rows (all splits)
  concepts: frozenset[str]              # The meta-test concepts (FORBIDDEN_CONCEPTS).

  @property
  def labels(self) -> set[str]:
    out = set()
    for rows in self.tasks.values():
      if len({tuple(r["options"]) for r in rows}) == 1:  # Classification.
        out |= {o.lower() for o in rows[0]["options"]}
    return out

  @property
  def option_sets(self) -> set[frozenset]:
    return {frozenset(o.lower() for o in r["options"]) for rows in self.tasks.values()
            for r in rows}

  @property
  def inputs(self) -> set[str]:
    return {" ".join(r["input"].lower().split()) for rows in self.tasks.values() for r in rows}

  @property
  def input_words(self) -> set[str]:
    """Meta-test inputs that are one word (animal and place names, ...)."""
    return {w for w in self.inputs if re.fullmatch(r"[a-z][a-z ]*[a-z]", w) and len(w) >= 3
            and " " not in w}

  @property
  def frames(self) -> dict[str, set[str]]:
    return {t: frame([r["input"] for r in rows], 3, 0.1) for t, rows in self.tasks.items()}


def suite_reference(seed: int = 0) -> Reference:
  """Every meta-test task of every partition of the offline suite, all its rows."""
  names = sorted({t for p in suite.partitions().values() for t in p.test})
  tasks = {}
  for name in names:
    splits = suite.build_task(suite.TASK_BY_NAME[name], seed=seed, max_train=10**6)
    tasks[name] = [r for s in ("train", "dev", "test") for r in splits[s]]
  return Reference(tasks, FORBIDDEN_CONCEPTS)


def leaks(tasks: Sequence[Task], ref: Reference) -> list[str]:
  """Every way a generated task leaks a meta-test task (empty: none)."""
  problems = []
  labels, option_sets, inputs = ref.labels, ref.option_sets, ref.inputs
  words, frames = ref.input_words, ref.frames
  for t in tasks:
    where = f"generated task {t.name}"
    if t.name in ref.tasks:
      problems.append(f"{where}: same name as a meta-test task")
    if t.concept.split("_")[0] in ref.concepts or t.concept in ref.concepts:
      problems.append(f"{where}: concept {t.concept} is a meta-test concept")
    shared = {o.lower() for o in t.options} & labels
    if shared:
      problems.append(f"{where}: labels {sorted(shared)} are meta-test labels")
    if frozenset(o.lower() for o in t.options) in option_sets:
      problems.append(f"{where}: its option set is a meta-test option set")
    xs = [r[0] for r in t.rows]
    if not frame(xs, 1, 0.5) - {"#"}:
      problems.append(f"{where}: no template (bare inputs, like a meta-test task's)")
    mine = frame(xs, 3, 0.1)
    for name, theirs in frames.items():
      if mine & theirs:
        problems.append(f"{where}: template n-grams {sorted(mine & theirs)[:3]} of {name}")
    for x in xs:
      norm = " ".join(x.lower().split())
      if norm in inputs:
        problems.append(f"{where}: input {x!r} is a meta-test input")
      hit = set(_words(x)) & words
      if hit:
        problems.append(f"{where}: input {x!r} holds meta-test inputs {sorted(hit)}")
  return problems


def duplicates(tasks: Sequence[Task]) -> list[str]:
  """Generated tasks that are not distinct: same (concept, template, wording) or the
  same rows."""
  seen, rows_seen, out = {}, {}, []
  for t in tasks:
    sig = (t.concept, t.template, tuple(t.options))
    rows = hashlib.sha1(json.dumps(sorted(t.rows)).encode()).hexdigest()
    if sig in seen:
      out.append(f"{t.name} repeats {seen[sig]}")
    if rows in rows_seen:
      out.append(f"{t.name} has the rows of {rows_seen[rows]}")
    seen.setdefault(sig, t.name)
    rows_seen.setdefault(rows, t.name)
  return out


# --------------------------------------------------------------------------------------
# Building tasks.
# --------------------------------------------------------------------------------------

def _render(template: str, fields: dict) -> str:
  return template.format(**{k: fields.get(k, "") for k in ("x", "a", "b", "iso", "month",
                                                          "day", "year", "hex")})


def make_task(concept: Concept, template: str, labels: tuple[str, ...], rng,
              banned_words: set[str]) -> Task | None:
  """One task of a concept, or None when too few rows survive the guard."""
  seen, rows = set(), []
  for fields, c in concept.items(rng):
    x = _render(template, fields)
    if x in seen or set(_words(x)) & banned_words:
      continue
    seen.add(x)
    rows.append((x, labels[c], list(labels)))
  rows = [rows[i] for i in rng.permutation(len(rows))]
  if len(rows) < MIN_ROWS or len({r[1] for r in rows}) < len(labels):
    return None
  tid = f"{concept.name}_t{concept.templates.index(template)}_v{concept.labels.index(labels)}"
  return Task(f"gen_{tid}", concept.name, concept.family, template, list(labels),
              rows[:MAX_ROWS])


def generate(seed: int = 0, num_tasks: int = 600, ref: Reference | None = None,
             verbose: bool = False) -> tuple[list[Task], list[Task]]:
  """(training tasks in round-robin family order, validation tasks)."""
  ref = ref or suite_reference(seed)
  banned = ref.input_words
  words = [w for w in reference_words() if w not in banned]
  concepts = all_concepts(words)
  rng = np.random.default_rng([seed, 7])
  # Validation: every concept of the validation categories, plus one concept of each
  # other family drawn with the seed (all of its variants leave the training pool).
  by_family = collections.defaultdict(list)
  for c in concepts:
    by_family[c.family].append(c)
  val_concepts = list(by_family.pop("semantic val"))
  for fam in sorted(by_family):
    if len(val_concepts) >= NUM_VAL:
      break
    pool = by_family[fam]
    val_concepts.append(pool.pop(int(rng.integers(len(pool)))))
  val, train_by_family = [], collections.defaultdict(list)
  for c in val_concepts:
    t = make_task(c, c.templates[0], c.labels[0], np.random.default_rng([seed, zlib.crc32(
        c.name.encode())]), banned)
    if t is not None and len(t.rows) >= 48:
      val.append(t)
  # Training: every (concept, template, wording) variant, drawn per concept in a seeded
  # order; then round-robin over families, variant rank first (all concepts' first
  # variants before any second variant).
  ranked = []
  for fam in sorted(by_family):
    for c in by_family[fam]:
      variants = [(tp, lab) for tp in c.templates for lab in c.labels]
      crng = np.random.default_rng([seed, zlib.crc32(c.name.encode())])
      for rank, i in enumerate(crng.permutation(len(variants))):
        ranked.append((rank, fam, c, *variants[i]))
  order = collections.defaultdict(list)
  for rank, fam, c, tp, lab in ranked:
    order[(rank, fam)].append((c, tp, lab))
  sequence = []
  for rank in sorted({r for r, _ in order}):
    lists = [order[(rank, f)] for f in sorted(by_family) if (rank, f) in order]
    for group in lists:
      rng.shuffle(group)
    for tup in itertools.zip_longest(*lists):
      sequence += [x for x in tup if x is not None]
  train = []
  for c, tp, lab in sequence:
    if len(train) >= num_tasks:
      break
    t = make_task(c, tp, lab, np.random.default_rng([seed, zlib.crc32(
        f"{c.name}|{tp}|{lab}".encode())]), banned)
    if t is not None:
      train.append(t)
  if verbose:
    fams = collections.Counter(t.family for t in train)
    print(f"generated {len(train)} training tasks ({len({t.concept for t in train})} "
          f"concepts; {dict(fams)}) and {len(val)} validation tasks")
  return train, val


# --------------------------------------------------------------------------------------
# Writing a MetaICL directory.
# --------------------------------------------------------------------------------------

def _example(task: Task, r: Row) -> dict:
  return {"task": task.name, "input": r[0], "output": r[1], "options": list(r[2])}


def write(out: str, *, seed: int = 0, num_tasks: int = 600, n_test: int = 64,
          max_train: int = 512, k: int = 16) -> dict:
  """The suite (as `suite.prepare` writes it) plus the generated tasks and partitions."""
  suite.write_suite(out, seed=seed, n_test=n_test, max_train=max_train, k=k)
  ref = suite_reference(seed)
  train, val = generate(seed, num_tasks, ref)
  problems = leaks(train + val, ref) + duplicates(train + val)
  if problems:
    raise RuntimeError(f"{len(problems)} leaks or duplicates, e.g. {problems[:3]}")
  f = lambda name, k_, s, split: icl_data.task_file(out, name, k_, s, split)
  for t in train:  # Meta-train rows only.
    icl_data.write_jsonl(f(t.name, icl_data.META_TRAIN_K, icl_data.EVAL_SEED, "train"),
                         [_example(t, r) for r in t.rows])
  for t in val:  # Evaluated like a meta-test task: test / dev / train and k-shot files.
    ex = [_example(t, r) for r in t.rows]
    test, dev, rest = ex[:VAL_N_TEST], ex[VAL_N_TEST:VAL_N_TEST + 8], ex[VAL_N_TEST + 8:]
    icl_data.write_jsonl(f(t.name, icl_data.META_TRAIN_K, icl_data.EVAL_SEED, "train"), rest)
    for split, rows in (("dev", dev), ("test", test)):
      icl_data.write_jsonl(f(t.name, k, icl_data.EVAL_SEED, split), rows)
    for s in icl_data.SEEDS:
      idx = np.random.default_rng(s).permutation(len(rest))[:k]
      icl_data.write_jsonl(f(t.name, k, s, "train"), [rest[i] for i in sorted(idx)])
  for t in train + val:
    with open(os.path.join(out, "config", "tasks", f"{t.name}.json"), "w") as fh:
      json.dump({"task_type": "classification", "group": "generated", "options": t.options,
                 "concept": t.concept, "family": t.family, "template": t.template}, fh)
  names = [t.name for t in train]
  val_names = [t.name for t in val]
  class_test = list(suite.partitions()["class_to_class"].test)
  parts = {"class_to_val": (list(suite.partitions()["class_to_class"].train), val_names)}
  for n in sorted({s for s in SIZES if s < len(names)} | {len(names)}):
    parts[f"gen{n}_to_class"] = (names[:n], class_test)
    parts[f"gen{n}_to_val"] = (names[:n], val_names)
  for name, (tr, te) in parts.items():
    with open(os.path.join(out, "config", f"{name}.json"), "w") as fh:
      json.dump({"train": tr, "test": te}, fh, indent=1)
  summary = {"training_tasks": len(train), "training_concepts": len({t.concept for t in train}),
             "validation_tasks": val_names, "families": dict(collections.Counter(
                 t.family for t in train)), "partitions": sorted(parts)}
  with open(os.path.join(out, "generated.json"), "w") as fh:
    json.dump(summary, fh, indent=1)
  manifest.write(out)
  return summary


def prepare(directory: str, *, seed: int = 0, num_tasks: int = 600, n_test: int = 64,
            max_train: int = 512, k: int = 16) -> str:
  """The directory for these settings under `directory` (written once)."""
  root = os.path.join(directory, f"suite_s{seed}_t{n_test}_m{max_train}"
                      + (f"_k{k}" if k != 16 else "") + f"_gen{num_tasks}")
  if not os.path.exists(os.path.join(root, manifest.NAME)):
    write(root, seed=seed, num_tasks=num_tasks, n_test=n_test, max_train=max_train, k=k)
  return root


def root_for(data, directory: str, k: int = 16) -> str:
  """The task directory of a config's `data` section: `data.root`, or the offline suite
  generated under `directory` — with `data.generated_tasks` generated tasks and the
  gen* partitions when that is > 0."""
  if data.root:
    return data.root
  if data.generated_tasks:
    return prepare(directory, seed=data.suite_seed, num_tasks=data.generated_tasks,
                   n_test=data.n_test, max_train=data.max_train, k=k)
  return suite.prepare(directory, seed=data.suite_seed, n_test=data.n_test,
                       max_train=data.max_train, k=k)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--out", required=True)
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--num_tasks", type=int, default=600)
  ap.add_argument("--n_test", type=int, default=64)
  ap.add_argument("--max_train", type=int, default=512)
  args = ap.parse_args(argv)
  summary = write(args.out, seed=args.seed, num_tasks=args.num_tasks, n_test=args.n_test,
                  max_train=args.max_train)
  print(json.dumps(summary, indent=1))


if __name__ == "__main__":
  main()
