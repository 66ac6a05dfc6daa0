from __future__ import annotations

import os
import threading

import pytest

from seqlm.store import MANIFEST, Plan, Store, file_digest


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
