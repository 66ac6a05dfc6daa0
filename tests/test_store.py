from __future__ import annotations

import json
import multiprocessing
import os
import random
import re
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
import xxhash

from seqlm import stages
from seqlm.config import load_config
from seqlm.errors import SeqlmError
from seqlm.store import MANIFEST, Plan, Store, file_digest
from tests.helpers import prepare, write_lines
from tests.test_stages import lines, run


def plan(config=None, inputs=None) -> Plan:
    return Plan("stage", 1, config or {"k": 1}, inputs or {"file": "abc"})


def write(rows: int):
    def produce(out):
        (out / "data.txt").write_text("x" * rows)
        return {"rows": rows}

    return produce


def test_built_once_then_skipped(tmp_path, caplog):
    store = Store(tmp_path)
    caplog.set_level("INFO", logger="seqlm.store")
    first = store.build(plan(), write(3))
    assert first.manifest["rows"] == {"rows": 3}
    assert first.manifest["key"] == first.key == plan().key
    calls = []
    again = store.build(plan(), lambda out: calls.append(out) or {})
    assert again == first and not calls
    assert "exists, skipped" in caplog.text
    assert store.build(plan(config={"k": 2}), write(1)).key != first.key


def test_keys_follow_content_not_mtime(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("same")
    b.write_text("same")
    os.utime(b, (0, 0))
    assert file_digest(a) == file_digest(b)
    b.write_text("other")
    assert file_digest(a) != file_digest(b)


def test_a_failed_stage_leaves_nothing(tmp_path):
    store = Store(tmp_path)

    def crash(out):
        (out / "half.txt").write_text("half")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        store.build(plan(), crash)
    assert store.get("stage", plan().key) is None
    assert list((tmp_path / "stage").iterdir()) == []
    assert store.build(plan(), write(2)).manifest["rows"] == {"rows": 2}


def test_concurrent_builds_agree(tmp_path):
    store = Store(tmp_path)
    barrier = threading.Barrier(4)
    results = []

    def produce(out):
        barrier.wait()
        return write(5)(out)

    threads = [
        threading.Thread(target=lambda: results.append(store.build(plan(), produce)))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({r.path for r in results}) == 1
    folder = tmp_path / "stage"
    assert [p.name for p in folder.iterdir()] == [plan().key]
    assert (folder / plan().key / MANIFEST).is_file()


def test_a_resumable_stage_keeps_its_work_after_a_failure(tmp_path):
    store = Store(tmp_path)
    seen = []

    def crash(out):
        seen.append(sorted(p.name for p in out.iterdir()))
        (out / "checkpoint").write_text("epoch 1")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        store.build(plan(), crash, resumable=True)

    def resume(out):
        seen.append(sorted(p.name for p in out.iterdir()))
        return {"epochs": 2}

    done = store.build(plan(), resume, resumable=True)
    assert seen == [[], ["checkpoint"]]
    assert (done.path / "checkpoint").read_text() == "epoch 1"
    assert not list((tmp_path / "stage").glob(".work-*"))


def test_concurrent_resumable_builds_do_the_work_once(tmp_path):
    store = Store(tmp_path)
    calls = []

    def produce(out):
        calls.append(out)
        (out / "checkpoint").write_text("trained")
        return {"epochs": 1}

    threads = [
        threading.Thread(target=store.build, args=(plan(), produce), kwargs={"resumable": True})
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert (store.path("stage", plan().key) / "checkpoint").read_text() == "trained"


# Ways to damage a finished folder, by the reason the store gives.
def _flip_a_byte(folder):
    data = folder / "data.txt"
    mtime = data.stat().st_mtime_ns
    data.write_text("xxyxx")
    os.utime(data, ns=(mtime - 10**9, mtime - 10**9))  # an edit, a moment later or earlier


def _drop_checksums(folder):
    manifest = json.loads((folder / MANIFEST).read_text())
    del manifest["files"]
    (folder / MANIFEST).write_text(json.dumps(manifest))


DAMAGE = {
    "manifest.json missing": lambda folder: (folder / MANIFEST).unlink(),
    "manifest unreadable": lambda folder: (folder / MANIFEST).write_text('{"stage": '),
    "manifest without checksums": _drop_checksums,
    "data.txt missing": lambda folder: (folder / "data.txt").unlink(),
    "data.txt has 2 bytes, not 5": lambda folder: os.truncate(folder / "data.txt", 2),
    "data.txt checksum differs": _flip_a_byte,
    "extra.txt not in the manifest": lambda folder: (folder / "extra.txt").write_text("?"),
}


def test_the_manifest_lists_every_file_with_its_size_and_checksum(tmp_path):
    def produce(out):
        (out / "data.txt").write_text("x" * 5)
        (out / "model").mkdir()
        (out / "model" / "part.bin").write_bytes(b"\0\1")
        return {}

    built = Store(tmp_path).build(plan(), produce)
    assert built.manifest["files"] == {
        "data.txt": {"size": 5, "xxh3_128": file_digest(built.path / "data.txt")},
        "model/part.bin": {"size": 2, "xxh3_128": file_digest(built.path / "model" / "part.bin")},
    }
    assert file_digest(built.path / "data.txt") == xxhash.xxh3_128_hexdigest(b"xxxxx")


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_artifact_is_rebuilt(tmp_path, caplog, damage):
    store = Store(tmp_path)
    first = store.build(plan(), write(5))
    DAMAGE[damage](first.path)
    calls = []
    again = store.build(plan(), lambda out: calls.append(out) or write(5)(out))
    assert len(calls) == 1 and again == first
    assert (again.path / "data.txt").read_text() == "xxxxx"
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [f"stage {first.key}: damaged ({damage}), rebuilt"]
    assert [p.name for p in (tmp_path / "stage").iterdir()] == [first.key]  # no .damaged-* left
    assert store.get("stage", first.key) == again


def _found_in_a_new_process(root: str, config: dict) -> bool:
    return Store(Path(root)).get("stage", plan(config).key) is not None


def _in_a_new_process(fn, *args):
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def test_bytes_changed_in_place_are_found_by_the_next_process(tmp_path):
    store = Store(tmp_path)
    built = store.build(plan(), write(5))
    data = built.path / "data.txt"
    stat = data.stat()
    data.write_text("xxyxx")
    os.utime(data, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # rot: the same size and mtime
    assert not _in_a_new_process(_found_in_a_new_process, str(tmp_path), {"k": 1})
    assert store.get("stage", built.key) is None


def _snapshot(root: Path) -> dict[Path, tuple[int, int, int]]:
    return {
        p: (s.st_mtime_ns, s.st_ctime_ns, s.st_size)
        for p in (root, *root.rglob("*"))
        for s in (p.stat(),)
    }


def _find_all(root: str) -> list[str]:
    def refuse(out):
        raise AssertionError("found artifacts are not built")

    store = Store(Path(root))
    return [store.build(plan({"k": i}), refuse, resumable=i == 1).key for i in (0, 1)]


def test_finding_artifacts_writes_nothing(tmp_path):
    """What a read-only mount needs: no lock file, no cleanup, no write (checksums verified)."""
    store = Store(tmp_path / "store")
    keys = [store.build(plan({"k": i}), write(3), resumable=i == 1).key for i in (0, 1)]
    (tmp_path / "store" / "stage" / f".tmp-{'0' * 20}-0badc0de").mkdir()  # stale, left alone
    before = _snapshot(tmp_path)
    time.sleep(0.01)  # past the file system's clock tick
    assert _in_a_new_process(_find_all, str(tmp_path / "store")) == keys
    assert _find_all(str(tmp_path / "store")) == keys
    assert _snapshot(tmp_path) == before


def _die_while_building(root: str, config: dict, resumable: bool) -> None:
    def produce(out):
        (out / "half.txt").write_text("half")
        os._exit(1)

    Store(Path(root)).build(plan(config), produce, resumable=resumable)


def _build_when_told(root: str, config: dict, go) -> None:
    def produce(out):
        go.wait(30)
        return write(1)(out)

    Store(Path(root)).build(plan(config), produce)


def test_entries_of_dead_processes_are_cleared_but_resumable_work_is_kept(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    store, folder = Store(tmp_path), tmp_path / "stage"
    left = []
    for config, resumable in (({"k": "work"}, True), ({"k": "tmp"}, False)):
        dead = ctx.Process(target=_die_while_building, args=(str(tmp_path), config, resumable))
        dead.start()
        dead.join()
        left.append(sorted(p.name.split("-")[0] for p in folder.iterdir()))
    # The second build cleared the lock file that no one held any more.
    assert left == [[".lock", ".work"], [".tmp", ".work"]]
    work = plan({"k": "work"}).key
    go = ctx.Event()
    live = ctx.Process(target=_build_when_told, args=(str(tmp_path), {"k": "live"}, go))
    live.start()
    deadline = time.monotonic() + 30
    while not list(folder.glob(f".tmp-{plan({'k': 'live'}).key}-*")):
        assert time.monotonic() < deadline and live.is_alive()
        time.sleep(0.05)
    # From before owners were recorded: cleared when a day old.
    old, recent = (folder / f".tmp-{n * 20}-0badc0de" for n in "ab")
    old.mkdir()
    recent.mkdir()
    os.utime(old, (0, 0))
    done = store.build(plan({"k": "done"}), write(1))
    (folder / f".work-{done.key}").mkdir()  # work whose artifact exists

    store.build(plan({"k": "any"}), write(2))
    hidden = sorted(p.name.split("-")[:2] for p in folder.iterdir() if p.name.startswith("."))
    assert hidden == [[".tmp", plan({"k": "live"}).key], [".tmp", "b" * 20], [".work", work]]
    go.set()
    live.join()
    assert live.exitcode == 0

    # The dead run's work is what a re-run of its key goes on from.
    seen = []
    store.build(plan({"k": "work"}), lambda out: seen.append(os.listdir(out)) or {}, resumable=True)
    assert seen == [["half.txt"]]
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == [recent.name]


def _build_overlapping(root: str, seed: int) -> list[str]:
    """Six keys in a random order, the odd ones resumable; the errors met."""
    keys = list(range(6))
    random.Random(seed).shuffle(keys)
    errors = []
    for i in keys:
        try:
            Store(Path(root)).build(plan({"k": i}), write(i), resumable=i % 2 == 1)
        except Exception as e:
            errors.append(f"{i}: {e!r}")
    return errors


def test_concurrent_builds_clearing_stale_entries_all_succeed(tmp_path):
    keys = sorted(plan({"k": i}).key for i in range(6))
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        for round in range(24):
            folder = tmp_path / str(round) / "stage"
            folder.mkdir(parents=True)
            for j in range(12):  # stale entries, for every process to clear at the same time
                stale = folder / f".tmp-{j:020x}-0badc0de"
                stale.mkdir()
                os.utime(stale, (0, 0))
                (folder / f".lock-{j:020x}").touch()
            seeds = [(str(folder.parent), 4 * round + w) for w in range(4)]
            assert pool.starmap(_build_overlapping, seeds) == [[]] * 4
            assert sorted(p.name for p in folder.iterdir()) == keys
    for i in range(6):
        assert Store(tmp_path / "23").get("stage", plan({"k": i}).key).manifest["rows"] == {
            "rows": i
        }


def test_a_store_root_that_is_a_file_is_one_clear_error(tmp_path):
    root = tmp_path / "store"
    root.write_text("")
    with pytest.raises(SeqlmError, match=f"^{re.escape(str(root))}: not a directory$"):
        Store(root).build(plan(), write(1))


@pytest.mark.parametrize("resumable", [False, True])
def test_no_space_left_is_one_clear_error_and_leaves_nothing(tmp_path, resumable):
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")

    def produce(out):
        with open("/dev/full", "w") as full:
            full.write("x")

    store = Store(tmp_path)
    with pytest.raises(SeqlmError, match=r": no space left on device$"):
        store.build(plan(), produce, resumable=resumable)
    assert list((tmp_path / "stage").iterdir()) == []


def test_a_rerun_repairs_damaged_stages_and_gives_the_same_figures(tmp_path, caplog):
    corpus_file = write_lines(tmp_path / "c.txt", lines(200))
    store = Store(tmp_path / "store")
    first, _ = run(store, corpus_file, ["discount_fallback=true"])
    shard = next(store.root.glob("ingest/*/**/*.parquet"))
    os.truncate(shard, shard.stat().st_size // 2)
    model = max((p for p in store.root.glob("ngram/*/**/*") if p.is_file()), key=os.path.getsize)
    _flip_last_byte(model)
    evaluation = next(store.root.glob(f"evaluate/*/{MANIFEST}"))
    evaluation.unlink()
    caplog.set_level("INFO", logger="seqlm.store")
    again, _ = run(store, corpus_file, ["discount_fallback=true"])
    assert _figures(again) == _figures(first)
    repaired = {r.getMessage().split()[0] for r in caplog.records if "damaged" in r.getMessage()}
    assert repaired == {"ingest", "ngram", "evaluate"}
    assert not list(store.root.glob("*/.*"))


def _figures(metrics: dict) -> dict:
    """Perplexities and counts per model and split (not the timings)."""
    keys = ("ppl", "ppl_no_unk", "oov", "targets")
    return {
        (name, split): [m[split][k] for k in keys]
        for name, m in metrics.items()
        for split in stages.EVAL_SPLITS
    }


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    mtime = path.stat().st_mtime_ns - 10**9
    path.write_bytes(bytes(data))
    os.utime(path, ns=(mtime, mtime))


def test_a_corrupt_checkpoint_is_trained_over_from_scratch(tmp_path, caplog):
    corpus_file = write_lines(tmp_path / "c.txt", lines(80))
    settings = ["emsize=8", "nhid=8", "bptt=5", "batch_size=4", "rnn.epochs=2", "max_minutes=0"]
    config = load_config(None, [*settings, "rnn.device=cpu", "precision=fp32", "min_count=1"])

    def train(store, on_epoch=None):
        from seqlm.rnn.training import Callbacks

        data = prepare(store, corpus_file, config)
        return stages.rnn(store, data, "rnn_tanh", config.rnn, Callbacks(on_epoch=on_epoch))

    def history(artifact):
        epochs = json.loads((artifact.path / stages.HISTORY_FILE).read_text())
        return [e[k] for e in epochs for k in ("train_ppl", "valid_ppl")]

    expected = history(train(Store(tmp_path / "clean")))
    store = Store(tmp_path / "store")

    def crash(metrics):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(store, crash)
    (last,) = store.root.glob(f"rnn/.work-*/{stages.CHECKPOINTS}/last.pt")
    os.truncate(last, last.stat().st_size // 2)
    caplog.set_level("WARNING")
    assert history(train(store)) == pytest.approx(expected, rel=1e-6)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warning.startswith(f"{last}: not a readable checkpoint")
    assert warning.endswith("removed, training from scratch")
    assert not list(store.root.glob("rnn/.*"))
