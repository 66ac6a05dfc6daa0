from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from seqlm.errors import SeqlmError
from seqlm.vocab import (
    EOS_ID,
    UNK_ID,
    GrowingDictionary,
    Vocabulary,
    build_dictionary,
    build_vocabulary,
    merge_dictionaries,
    merge_vocabularies,
)


def lines(*texts: str) -> pl.DataFrame:
    return pl.DataFrame({"tokens": [t.split() for t in texts]})


TRAIN = lines("a b a c", "a b <unk> d", "b a")


def test_ids_counts_and_specials():
    vocab = build_vocabulary(TRAIN)
    assert vocab.table.to_dicts() == [
        {"token": "<unk>", "id": 0, "count": 1},
        {"token": "<s>", "id": 1, "count": 0},
        {"token": "</s>", "id": 2, "count": 3},
        {"token": "a", "id": 3, "count": 4},
        {"token": "b", "id": 4, "count": 3},
        {"token": "c", "id": 5, "count": 1},
        {"token": "d", "id": 6, "count": 1},
    ]


def test_cut_offs_fold_into_unk():
    by_count = build_vocabulary(TRAIN, min_count=2)
    assert by_count.tokens.to_list() == ["<unk>", "<s>", "</s>", "a", "b"]
    assert by_count.counts[UNK_ID] == 3  # the literal <unk>, c and d
    assert build_vocabulary(TRAIN, max_size=4).tokens.to_list() == ["<unk>", "<s>", "</s>", "a"]
    # Every training target is counted once: tokens plus one </s> per line.
    assert by_count.counts.sum() == 10 + 3
    with pytest.raises(SeqlmError, match="min_count"):
        build_vocabulary(TRAIN, min_count=-1)
    with pytest.raises(SeqlmError, match="train split is empty"):
        build_vocabulary(lines())


def test_auto_min_count_keeps_a_cut_vocabulary_and_cuts_raw_text():
    # TRAIN spells <unk>: its vocabulary was cut already, so every type stays.
    assert build_vocabulary(TRAIN, min_count=0).table.equals(build_vocabulary(TRAIN).table)
    raw = lines("a b a c", "a b d", "b a")
    auto = build_vocabulary(raw, min_count=0)
    assert auto.table.equals(build_vocabulary(raw, min_count=2).table)
    assert auto.counts[UNK_ID] == 2  # c and d give <unk> its training count


def test_stream_is_tokens_then_eos_per_line():
    vocab = build_vocabulary(TRAIN, min_count=2)
    stream = vocab.stream(lines("a zebra", "<unk> b <s>"))
    assert stream.dtype == np.int32
    assert vocab.decode(stream) == ["a", "<unk>", "</s>", "<unk>", "b", "<unk>", "</s>"]
    assert (stream == EOS_ID).sum() == 2


def test_round_trip(tmp_path):
    vocab = build_vocabulary(TRAIN)
    vocab.save(tmp_path / "v.parquet")
    assert Vocabulary.load(tmp_path / "v.parquet").table.equals(vocab.table)


def test_merged_shard_vocabularies_equal_the_whole():
    shards = [lines("a b a c", "a b <unk> d"), lines("b a", "e e c"), lines("<s> f")]
    whole = pl.concat(shards)
    parts = [build_vocabulary(shard) for shard in shards]
    for min_count, max_size in [(1, 0), (2, 0), (1, 5), (0, 0)]:
        merged = merge_vocabularies(parts, min_count, max_size)
        assert merged.table.equals(build_vocabulary(whole, min_count, max_size).table)


def test_id_map_between_vocabularies():
    small = build_vocabulary(TRAIN, min_count=2)
    full = build_vocabulary(TRAIN)
    mapping = small.id_map(full)
    assert small.decode(mapping) == ["<unk>", "<s>", "</s>", "a", "b", "<unk>", "<unk>"]
    stream = full.stream(TRAIN)
    assert np.array_equal(mapping[stream], small.stream(TRAIN))


def test_empty_lines_are_sentences_with_one_eos():
    train = lines("", "a b", "", "", "b")
    vocab = build_vocabulary(train)
    assert vocab.counts[EOS_ID] == 5  # every line ends with </s>, the empty ones too
    stream = vocab.stream(lines("", "a", "", "", "zebra", ""))
    assert vocab.decode(stream) == ["</s>", "a", "</s>", "</s>", "</s>", "<unk>", "</s>", "</s>"]
    assert build_vocabulary(train).table.equals(merge_vocabularies([vocab]).table)
    with pytest.raises(SeqlmError, match=r"no words \(3 lines, all empty\)"):
        build_vocabulary(lines("", "", ""))
    with pytest.raises(SeqlmError, match=r"no words \(2 lines, all empty\)"):
        blank = vocab.table.head(3).with_columns(count=pl.Series([0, 0, 2], dtype=pl.UInt64))
        merge_vocabularies([Vocabulary(blank)])


def test_a_dictionary_grown_chunk_by_chunk_is_the_merge_of_the_chunks_dictionaries():
    """Types by first appearance across chunks, spelled specials as <unk>, empty lines and
    chunks, types past one byte's ids and non-ASCII ones: what building a dictionary per chunk and
    merging them gives (the independent reference), and the same streams."""
    rng = np.random.default_rng(3)
    words = np.array([f"w{i}" for i in range(400)] + ["é", "日本", "<s>", "</s>", "<unk>"])
    chunks = [
        pl.DataFrame(
            {"tokens": [list(rng.choice(words, rng.integers(0, 9))) for _ in range(n)]},
            schema={"tokens": pl.List(pl.String)},
        )
        for n in (50, 0, 1, 300, 120)
    ]
    chunks.append(lines("", "é <s> new", "</s>"))
    grown = GrowingDictionary()
    merged = None
    for chunk in chunks:
        part = build_dictionary(chunk)
        merged = part if merged is None else merge_dictionaries([merged, part])
        assert np.array_equal(grown.stream(chunk), merged.stream(chunk))
        assert grown.size == merged.size
    assert grown.vocabulary().table.equals(merged.table)
    assert grown.vocabulary().counts[UNK_ID] > 0
