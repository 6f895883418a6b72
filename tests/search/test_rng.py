"""search._rng: a random.Random's state as compact JSON, and the plain list form earlier states hold."""

from __future__ import annotations

import json
import random

from search._rng import dump_rng, load_rng


def test_round_trip_continues_the_same_stream_and_is_smaller():
    a = random.Random(42)
    a.random(), a.gauss(0.0, 1.0)  # gauss_next is set now: part of the state
    state = json.loads(json.dumps(dump_rng(a)))
    b = random.Random(0)
    load_rng(b, state)
    assert b.getstate() == a.getstate()
    assert [b.random() for _ in range(5)] == [a.random() for _ in range(5)]
    version, words, gauss = a.getstate()
    assert len(json.dumps(dump_rng(a))) < len(json.dumps([version, list(words), gauss])) / 2


def test_the_plain_list_form_still_loads():
    a = random.Random(7)
    version, words, gauss = a.getstate()
    b = random.Random(0)
    load_rng(b, json.loads(json.dumps([version, list(words), gauss])))
    assert b.random() == a.random()
