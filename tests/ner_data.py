"""A small English NER set of our own making (PER/LOC/ORG), written as CoNLL by the tests.

Sentences come from templates filled with names. The held-out sentences use names that never occur in
training, so a model can only find them from their context and their form, not by memory."""

from __future__ import annotations

import random

PEOPLE = [
    "Maria Lopez", "John Smith", "Wei Chen", "Aisha Khan", "Peter Novak", "Laura Rossi", "Kenji Sato", "Olga Ivanova",
    "David Miller", "Fatima Diallo", "Tom Becker", "Sara Nilsson", "Lucas Silva", "Emma Dubois", "Ravi Patel",
    "Anna Kowalski", "James Brown", "Nina Petrova", "Omar Haddad", "Julia Weber", "Carlos Mendez", "Helen Park",
    "Igor Sokolov", "Mei Lin", "Paul Martin", "Grace Okafor", "Hans Keller", "Sofia Costa", "Ali Yilmaz",
    "Clara Jensen", "Marco Bianchi", "Yuki Tanaka", "Ben Carter", "Lena Fischer", "Diego Ramos", "Eva Horvat",
]
PLACES = [
    "Paris", "Berlin", "Tokyo", "Nairobi", "Lima", "Oslo", "Madrid", "Cairo", "Toronto", "Sydney", "Mumbai",
    "Prague", "Vienna", "Dublin", "Seoul", "Lagos", "Lisbon", "Warsaw", "Chicago", "Boston", "Denver", "Athens",
    "Helsinki", "Manila", "Quito", "Bangkok", "Zurich", "Hamburg", "Kyoto", "Accra", "Bogota", "Havana",
]
ORGS = [
    "Acme Corp", "Globex", "United Nations", "Red Cross", "Initech", "Umbrella Labs", "World Bank", "Apex Motors",
    "Nordic Air", "Blue River Bank", "Stark Industries", "Vertex Energy", "Orion Health", "Sunrise Foods",
    "Delta Logistics", "Pioneer Media", "Atlas Mining", "Crescent Pharma", "Summit Insurance", "Harbor Shipping",
    "Greenfield University", "Metro Transit", "Silverline Tech", "Bright Books",
]
TEMPLATES = [
    "{PER} visited {LOC} last week .",
    "{PER} works for {ORG} in {LOC} .",
    "{ORG} opened a new office in {LOC} on Monday .",
    "Yesterday {PER} met {PER} at the {ORG} headquarters .",
    "The mayor of {LOC} praised {ORG} for its work .",
    "{PER} , a spokesperson for {ORG} , declined to comment .",
    "Shares of {ORG} rose after {PER} became chief executive .",
    "{PER} was born in {LOC} and moved to {LOC} in 1999 .",
    "According to {PER} , {ORG} will hire 200 people in {LOC} .",
    "Flights from {LOC} to {LOC} were cancelled on Friday .",
    "{ORG} and {ORG} signed an agreement in {LOC} .",
    "In {LOC} , {PER} told reporters that prices would fall .",
    "The report by {ORG} was written by {PER} .",
    "{PER} thanked the people of {LOC} .",
    "A court in {LOC} fined {ORG} on Tuesday .",
    "Police said {PER} left {LOC} before dawn .",
]


def sentences(n: int, seed: int, people, places, orgs) -> list[list[tuple[str, str]]]:
    rng = random.Random(seed)
    pools = {"PER": people, "LOC": places, "ORG": orgs}
    out = []
    for _ in range(n):
        rows = []
        for piece in rng.choice(TEMPLATES).split():
            if piece.startswith("{"):
                kind = piece[1:4]
                words = rng.choice(pools[kind]).split()
                rows += [(w, ("B-" if i == 0 else "I-") + kind) for i, w in enumerate(words)]
            else:
                rows.append((piece, "O"))
        out.append(rows)
    return out


def conll(rows: list[list[tuple[str, str]]]) -> str:
    """Two columns (token, tag), a -DOCSTART- line, blank lines between sentences."""
    return "-DOCSTART- O\n\n" + "\n\n".join("\n".join(f"{w} {t}" for w, t in s) for s in rows) + "\n"


def write_english_ner(folder, n_train: int = 300, n_test: int = 100) -> tuple[str, str]:
    """train.conll (names from the first two thirds of each list) and test.conll (the last third only)."""
    def cut(names):
        k = len(names) * 2 // 3
        return names[:k], names[k:]

    (p_tr, p_te), (l_tr, l_te), (o_tr, o_te) = cut(PEOPLE), cut(PLACES), cut(ORGS)
    train, test = folder / "train.conll", folder / "test.conll"
    train.write_text(conll(sentences(n_train, 1, p_tr, l_tr, o_tr)), encoding="utf-8")
    test.write_text(conll(sentences(n_test, 2, p_te, l_te, o_te)), encoding="utf-8")
    return str(train), str(test)
