import numpy as np
import polars as pl
import pytest

from seqlm.errors import SeqlmError
from seqlm.ngram import count_ngrams, counts, merge_tables, read_tables, write_tables
from tests.ngram_reference import brute_counts, corpus


def as_counter(table: pl.DataFrame) -> dict[tuple[int, ...], int]:
    words = table.drop("count").rows()
    return dict(zip(words, table["count"].to_list(), strict=True))


def test_counts_equal_brute_force_over_padded_lines():
    vocab, stream = corpus()
    tables = count_ngrams(stream, 4, vocab.size)
    expected = brute_counts(stream, 4)
    for n, (table, counter) in enumerate(zip(tables, expected, strict=True), start=1):
        assert table.columns == [*[f"w{i}" for i in range(1, n + 1)], "count"]
        assert as_counter(table) == dict(counter)
        assert table.equals(table.sort(table.columns[:-1]))
    assert tables[0].filter(pl.col("w1") == 1)["count"].item() == int((stream == 2).sum())


def test_keys_too_wide_to_pack_with_their_ends_are_sorted_indirectly(monkeypatch):
    """Where a key and its position do not fit one u64 (corpora of billions of tokens), each
    order is sorted by argsort: the same tables, checked against the brute-force count."""
    vocab, stream = corpus()
    packed = count_ngrams(stream, 4, vocab.size)
    made = counts._Buffers.__init__

    def wide(self, padded):
        made(self, padded)
        self.pos_bits = 62  # leaves no room for any key beside the position

    monkeypatch.setattr(counts._Buffers, "__init__", wide)
    tables = count_ngrams(stream, 4, vocab.size)
    for table, want, counter in zip(tables, packed, brute_counts(stream, 4), strict=True):
        assert table.equals(want)
        assert as_counter(table) == dict(counter)


def test_ids_use_the_narrowest_unsigned_type():
    vocab, stream = corpus()
    assert count_ngrams(stream, 2, vocab.size)[1].schema["w1"] == pl.UInt8
    assert count_ngrams(stream, 2, 300)[1].schema["w2"] == pl.UInt16
    assert count_ngrams(stream, 1, 70_000)[0].schema["w1"] == pl.UInt32


def test_merged_shard_tables_equal_a_full_recount(tmp_path):
    vocab, stream = corpus(n_lines=500)
    cut = int(np.flatnonzero(stream == 2)[200]) + 1  # shard boundary at a line end
    for i, shard in enumerate((stream[:cut], stream[cut:])):
        write_tables(count_ngrams(shard, 3, vocab.size), tmp_path / f"shard{i}", vocab)
    merged = merge_tables([read_tables(tmp_path / f"shard{i}") for i in range(2)])
    for got, want in zip(merged, count_ngrams(stream, 3, vocab.size), strict=True):
        assert got.equals(want)


@pytest.mark.parametrize("order", [0, 13])
def test_order_out_of_range_is_refused(order):
    vocab, stream = corpus(n_lines=10)
    with pytest.raises(SeqlmError, match="between 1 and 12"):
        count_ngrams(stream, order, vocab.size)


def test_empty_stream_and_missing_tables_are_refused(tmp_path):
    with pytest.raises(SeqlmError, match="empty"):
        count_ngrams(np.zeros(0, dtype=np.int32), 3, 10)
    with pytest.raises(SeqlmError, match="no count tables"):
        read_tables(tmp_path)


def test_empty_lines_count_as_bos_eos():
    vocab, stream = corpus(n_lines=200, empty=0.2)
    empties = int(((stream == 2) & (np.roll(stream, 1) == 2)).sum()) + int(stream[0] == 2)
    assert empties > 20
    tables = count_ngrams(stream, 3, vocab.size)
    for table, counter in zip(tables, brute_counts(stream, 3), strict=True):
        assert as_counter(table) == dict(counter)
    assert as_counter(tables[1])[(1, 2)] == empties  # each empty line is the bigram <s> </s>
