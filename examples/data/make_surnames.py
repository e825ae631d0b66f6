"""Regenerate surnames.tsv from Faker's per-locale surname lists.

    pip install faker            # only needed to regenerate; names.py reads the TSV
    python examples/data/make_surnames.py > examples/data/surnames.tsv

Faker (MIT, see LICENSE-faker.txt) ships `faker/providers/person/<locale>/__init__.py`
with a `last_names` table per locale. We take ten Latin-script languages, drop
names that occur in more than one language (so every name has one right
answer), and keep at most PER_LANGUAGE names per language, chosen with a fixed
seed so the file is reproducible for a given Faker version. The committed file
was made with faker 40.63.0.
"""
from __future__ import annotations

import importlib
import random
import sys
from collections import defaultdict

# language -> Faker locales whose `last_names` it pools
LANGUAGES = {
    "Croatian": ["hr_HR"],
    "Dutch": ["nl_NL"],
    "English": ["en_GB"],
    "Finnish": ["fi_FI"],
    "French": ["fr_FR", "fr_BE"],
    "German": ["de_DE", "de_AT"],
    "Irish": ["ga_IE"],
    "Italian": ["it_IT"],
    "Slovak": ["sk_SK"],
    "Spanish": ["es_ES"],
}
PER_LANGUAGE = 400


def last_names(locale: str) -> list[str]:
    provider = importlib.import_module(f"faker.providers.person.{locale}").Provider
    names = provider.last_names
    return list(names.keys()) if hasattr(names, "keys") else list(names)


def main() -> None:
    import faker

    pools: dict[str, set[str]] = {}
    for language, locales in LANGUAGES.items():
        pools[language] = {n.strip() for loc in locales for n in last_names(loc) if n.strip()}
    owners: dict[str, set[str]] = defaultdict(set)
    for language, names in pools.items():
        for n in names:
            owners[n].add(language)
    rng = random.Random(0)
    out = sys.stdout
    out.write(f"# surname\tlanguage  (from faker {faker.VERSION}, MIT; see make_surnames.py)\n")
    for language in sorted(pools):
        unique = sorted(n for n in pools[language] if len(owners[n]) == 1)
        chosen = sorted(rng.sample(unique, min(PER_LANGUAGE, len(unique))))
        for n in chosen:
            out.write(f"{n}\t{language}\n")


if __name__ == "__main__":
    main()
