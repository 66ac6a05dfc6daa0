"""Symbol sequences: the char tokenizer, characters per split, FASTA/FASTQ corpora cut into
windows by position, k-mer orders up to 12, samples rendered as text. KenLM (the ``kenlm``
package) scores seqlm's character-level ARPA file as the independent peer."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import seqlm
from flows.cli import main
from seqlm import stages
from seqlm.config import load_config
from seqlm.corpus import SPACE, SPLITS, Source, discover, ingest, load_corpus, tokenize
from seqlm.errors import SeqlmError
from seqlm.ngram import NgramModel
from seqlm.ngram.lines import check_key_space
from seqlm.samples import detokenize
from seqlm.store import Store
from seqlm.vocab import BOS_ID
from tests.helpers import bundled_corpus, prepare

DNA = Path(__file__).resolve().parents[1] / "data" / "dna" / "NC_000932.fna"


def fasta(path: Path, records: dict[str, str], width: int = 60) -> Path:
    """A FASTA file of ``records`` (id → residues), ``width`` residues per line."""
    text = "".join(
        f">{name} some description\n"
        + "".join(seq[i : i + width] + "\n" for i in range(0, len(seq), width))
        for name, seq in records.items()
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(text.encode()) if path.suffix == ".gz" else text.encode())
    return path


def random_dna(n: int, seed: int) -> str:
    return "".join(np.random.default_rng(seed).choice(list("ACGT"), size=n))


def test_char_tokenizer_makes_every_character_a_symbol():
    lines = pl.Series(["Wie geht's?  Gut.", "", " ", "\t a\u00a0ß", "日本"])
    assert tokenize(lines, "char")["tokens"].to_list() == [
        list("Wie▁geht's?▁▁Gut."),
        [],  # an empty line: no token, still a sentence
        [SPACE],  # a whitespace-only line is a line of stand-ins
        [SPACE, SPACE, "a", SPACE, "ß"],
        ["日", "本"],
    ]


def test_detokenize_joins_words_by_spaces_and_symbols_as_they_are():
    assert detokenize(["to", "be", ","], "punct") == "to be ,"
    assert detokenize(list("to▁be,"), "char") == "to be,"
    assert detokenize(list("ACGT"), "char") == "ACGT"


def test_ingest_counts_each_splits_characters_as_read(tmp_path):
    # A BOM, CRLF line ends, multi-byte characters and empty lines: none of the line ends counts.
    text = ["", "naïve café", "  ", *[f"line {i} ü" for i in range(15)], "", "日本語"]
    (tmp_path / "a.txt").write_bytes(("\ufeff" + "\r\n".join(text) + "\r\n").encode())
    for tokenizer in ("char", "punct"):
        out = tmp_path / tokenizer
        out.mkdir()
        rows = ingest(Source(tmp_path / "a.txt"), out, tokenizer, fractions=(0.8, 0.1, 0.1))
        blocks = {"train": text[:16], "valid": text[16:18], "test": text[18:]}
        assert rows == {s: len(b) for s, b in blocks.items()} | {
            f"{s}_chars": sum(len(line) for line in b) for s, b in blocks.items()
        }
    # With char, the characters are the tokens.
    shard = pl.read_parquet(tmp_path / "char" / "train.parquet")
    assert shard["tokens"].list.len().sum() == rows["train_chars"]


def test_fasta_records_are_cut_into_windows_and_split_by_position(tmp_path):
    genome = random_dna(2_350, 1)
    masked = genome[:500] + genome[500:700].lower() + genome[700:]  # soft-masked repeat
    path = fasta(tmp_path / "g.fna.gz", {"chr1": masked, "plasmid": "ACGTN" * 9})
    splits = load_corpus(path, "char", window=100)
    lines = [
        "".join(tokens) for s in SPLITS for tokens in splits[s]["tokens"].to_list()
    ]  # in order: train, then valid, then test
    assert lines == [genome[i : i + 100] for i in range(0, 2_350, 100)] + ["ACGTN" * 9]
    # 25 lines: 23 train, 1 valid, 1 test; the held-out blocks are the genome's end.
    assert [splits[s].height for s in SPLITS] == [23, 1, 1]
    assert "".join(splits["valid"]["tokens"][0]) == genome[2_300:]
    rows = ingest(Source(path), tmp_path, "char", window=100)
    assert rows == {"train": 23, "valid": 1, "test": 1} | {
        "train_chars": 2_300,
        "valid_chars": 50,
        "test_chars": 45,
    }


def test_fastq_reads_and_protein_alphabet(tmp_path):
    reads = [random_dna(30, seed) for seed in range(40)]
    fastq = "".join(f"@r{i}\n{r}\n+\n{'I' * len(r)}\n" for i, r in enumerate(reads))
    (tmp_path / "reads.fq").write_text(fastq)
    lines = load_corpus(tmp_path / "reads.fq", "char", splits=["train"], fractions=None)
    assert ["".join(t) for t in lines["train"]["tokens"].to_list()] == reads
    fasta(tmp_path / "p.faa", {"P1": "MKV*" * 30, "P2": "ACDEFGHIKLMNPQRSTVWYBJOUXZ"})
    (source,) = discover(tmp_path / "p.faa")
    assert ingest(source, tmp_path, "char", fractions=(0.5, 0.25, 0.25), window=50)["train"] == 2


@pytest.mark.parametrize(
    ("name", "text", "tokenizer", "problem"),
    [
        ("x.fna", "ACGT\n>a\nAC\n", "char", r"x\.fna: not a valid FASTA file \(line 1: "),
        ("x.fna", ">a\n>b\nACG\n", "char", r"x\.fna: record a is empty"),
        (
            "x.fna",
            ">NC_1 chr\n" + "A" * 811 + "E\n",
            "char",
            r"x\.fna: record NC_1, position 812: 'E' is not a nucleotide",
        ),
        ("x.faa", ">p1\nMKV1\n", "char", r"x\.faa: record p1, position 4: '1' is not an amino"),
        ("x.fq", "@r1\nACGT\n+\nIII\n", "char", r"x\.fq: not a valid FASTQ file \(line \d+: "),
        ("x.fa", ">a\nACGT\n", "punct", r"x\.fa: a FASTA/FASTQ file has no words"),
    ],
)
def test_bad_sequence_files_are_refused_in_one_line(tmp_path, name, text, tokenizer, problem):
    (tmp_path / name).write_text(text)
    with pytest.raises(SeqlmError, match=problem) as refused:
        load_corpus(tmp_path / name, tokenizer, splits=["train"], fractions=None)
    assert "\n" not in str(refused.value)


def test_key_space_overflow_is_refused():
    check_key_space(1 << 32, 1 << 31, 3)  # exactly 2^63: every key still fits
    with pytest.raises(SeqlmError, match=r"3-grams: .* overflow the 64-bit n-gram keys"):
        check_key_space(1 << 32, (1 << 31) + 1, 3)


def test_order_12_kneser_ney_on_dna_through_the_stages(tmp_path):
    path = fasta(tmp_path / "dna" / "g.fna", {"g": DNA.read_text().split("\n", 1)[1][:21_000]})
    settings = ["tokenizer=char", "orders=[12]", "discount_fallback=true", "rnn.models=[]"]
    config = load_config(None, settings)
    store = Store(tmp_path / "store")
    data = prepare(store, path.parent, config)
    model = stages.ngram(store, data.tables, 12, config.ngram)
    loaded = NgramModel.load(model.path / stages.MODEL)
    assert loaded.order == 12 and min(loaded.sizes) > 0
    # Every context's next-symbol distribution sums to 1 (<s> is context only), the longest
    # ones included.
    history = np.array([BOS_ID, *loaded.vocab.ids(pl.Series(list("ATGGGCGAACG"))).to_list()])
    for k in (1, 6, 11, 12):
        p = 10 ** loaded.next_log10(history[-k:])
        p[BOS_ID] = 0
        assert p.sum() == pytest.approx(1, abs=1e-9)
    metrics = stages.load_metrics(stages.evaluate(store, model, data))["test"]
    (shard,) = data.shards
    assert (
        metrics["targets"] == shard.manifest["rows"]["test_chars"] + shard.manifest["rows"]["test"]
    )
    assert 1 < metrics["ppl"] < loaded.vocab.size - 1  # better than uniform over the targets


def test_bundled_genome_runs_the_ladder_up_to_order_12(tmp_path):
    table = seqlm.run(
        DNA,
        tokenizer="char",
        discount_fallback=True,
        orders=[4, 12],
        models=[],
        store=str(tmp_path / "store"),
    )
    ppl = dict(zip(table["model"], table["test_ppl"], strict=True))
    assert set(ppl) == {"unigram", "kn4", "kn12"}
    assert ppl["kn4"] < ppl["unigram"] < 4.5  # four nucleotides, and one line end per 1000
    # 154,478 nucleotides in lines of 1000: the test block's 8 lines hold the last 7,478.
    assert set(table["targets"]) == {7_478 + 8}


@pytest.fixture(scope="module")
def char_texts(tmp_path_factory) -> dict[str, Path]:
    """Real text with the edge cases: empty and whitespace-only lines, tabs, runs of spaces."""
    folder = tmp_path_factory.mktemp("chars")
    train = bundled_corpus(folder / "train.txt", 1_500)
    train.write_text(train.read_text() + "\n\n \t\n  double  spaced\tand tabbed\n")
    test = bundled_corpus(folder / "test.txt", 1_700, 1_500)
    test.write_text(test.read_text() + "\n  \nnaïve — ünknown\tchars\n")
    return {"train": train, "test": test}


def score(capsys, model: Path, text: Path) -> dict:
    capsys.readouterr()
    assert main(["ngram", "score", str(model), str(text), "--tokenizer", "char", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def estimate(char_texts, folder: Path, order: int) -> Path:
    arpa = folder / f"m{order}.arpa"
    argv = ["ngram", "estimate", str(char_texts["train"]), "-o", str(order), "--arpa", str(arpa)]
    argv += ["--tokenizer", "char", "--discount-fallback", "--save", str(folder / f"m{order}")]
    assert main(argv) == 0
    return arpa


def test_kenlm_scores_a_character_arpa_as_seqlm_does(char_texts, tmp_path, capsys):
    kenlm = pytest.importorskip("kenlm", reason="the kenlm package is not installed (make kenlm)")
    ours = score(capsys, estimate(char_texts, tmp_path, 5), char_texts["test"])
    peer = kenlm.Model(str(tmp_path / "m5.arpa"))
    lines = char_texts["test"].read_text().splitlines()
    sentences = [" ".join(SPACE if c.isspace() else c for c in line) for line in lines]
    scores = [list(peer.full_scores(s)) for s in sentences]
    assert ours["targets"] == sum(len(s) for s in scores) == sum(len(line) + 1 for line in lines)
    flat = [log10 for line in scores for log10, _, _ in line]
    assert ours["perplexity"] == pytest.approx(10 ** (-sum(flat) / len(flat)), rel=1e-6)
    oov = sum(is_oov for line in scores for _, _, is_oov in line)
    assert ours["oov"] == oov > 0


def test_order_12_arpa_reads_back_as_the_saved_model(char_texts, tmp_path, capsys):
    # Over 32 symbols, 6 bits an id: 11 or 12 ids no longer pack into 63 bits, so the reader
    # links those orders context by context.
    arpa = estimate(char_texts, tmp_path, 12)
    assert "ngram 12=" in arpa.read_text()[:500]
    from_arpa = score(capsys, arpa, char_texts["test"])
    assert from_arpa == pytest.approx(score(capsys, tmp_path / "m12", char_texts["test"]), rel=1e-7)
