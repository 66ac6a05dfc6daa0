"""The recurrent models: the BPTT derivation against autograd, training, checkpoints, scoring."""

from __future__ import annotations

import argparse
import ast
import json
import math
import re
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import seqlm.rnn as rnn_package
from flows.cli import main
from seqlm.errors import SeqlmError
from seqlm.evaluate import perplexity
from seqlm.rnn import (
    RNNLM,
    Callbacks,
    ModelConfig,
    RNNScorer,
    TrainConfig,
    load_model,
    plot_learning_curve,
    reference,
    resolve_device,
    sample,
    save_checkpoint,
    score_stream,
    train,
)
from seqlm.rnn.config import MODELS
from seqlm.rnn.head import SoftmaxHead
from seqlm.rnn.recurrence import run_cpu
from seqlm.rnn.training import cpu_has_bf16, use_bf16
from seqlm.vocab import BOS_ID, EOS_ID

V = 12
KIND = "lstm"
TINY = TrainConfig(
    emsize=16, nhid=16, nlayers=2, dropout=0.0, bptt=8, batch_size=4, epochs=2,
    optimizer="sgd", lr=1.0, clip=5 / 35, schedule="fixed",
)  # fmt: skip


def pattern_stream(lines: int, seed: int = 0) -> np.ndarray:
    """Lines of a counting pattern (3, 4, 5, ... up to a random length), each ended by </s>."""
    rng = np.random.default_rng(seed)
    parts = [np.append(np.arange(3, 3 + rng.integers(2, V - 3)), EOS_ID) for _ in range(lines)]
    return np.concatenate(parts).astype(np.int32)


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_numpy_bptt_equals_autograd() -> None:
    torch.manual_seed(0)
    T, B, E, H = 7, 3, 5, 6
    model = RNNLM("rnn_tanh", ModelConfig(E, H, 1, init_range=0.6, dropout=0.0), V).double()
    ids = torch.randint(0, V, (T, B))
    targets = torch.randint(0, V, (T, B))
    h0 = (torch.randn(1, B, H, dtype=torch.float64) * 0.5).requires_grad_()
    x = model.encoder(ids)
    x.retain_grad()
    out, _ = model.rnn(x, h0)
    loss = F.cross_entropy(model.decoder(out).reshape(-1, V), targets.reshape(-1))
    loss.backward()

    r = model.rnn
    w = reference.RNNWeights(
        W_x=r.weight_ih_l0.detach().numpy(),
        W_h=r.weight_hh_l0.detach().numpy(),
        b_h=(r.bias_ih_l0 + r.bias_hh_l0).detach().numpy(),
        W_y=model.decoder.weight.detach().numpy(),
        b_y=model.decoder.bias.detach().numpy(),
    )
    ref_loss, g = reference.bptt(w, x.detach().numpy(), h0.detach()[0].numpy(), targets.numpy())
    assert ref_loss == pytest.approx(loss.item(), rel=1e-12)
    expected = {
        "W_x": r.weight_ih_l0.grad,
        "W_h": r.weight_hh_l0.grad,
        "b_h": r.bias_hh_l0.grad,
        "W_y": model.decoder.weight.grad,
        "b_y": model.decoder.bias.grad,
        "x": x.grad,
        "h0": h0.grad[0],
    }
    for name, grad in expected.items():
        assert rel_err(g[name], grad.numpy()) <= 1e-6, name
    assert rel_err(g["b_h"], r.bias_ih_l0.grad.numpy()) <= 1e-6  # both biases are b_h


@pytest.mark.parametrize("kind", ["rnn_tanh", "gru"])
def test_written_out_cpu_layers_equal_autograd(kind: str) -> None:
    """The CPU tanh RNN and GRU (time loop and BPTT by hand) against torch's layers' autograd."""
    torch.manual_seed(0)
    rnn = RNNLM(kind, ModelConfig(5, 6, 2, init_range=0.6, dropout=0.0), V).double().rnn
    x = torch.randn(7, 3, 5, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 3, 6, dtype=torch.float64, requires_grad=True)
    inputs = [x, h0, *rnn.parameters()]

    def loss_and_grads(run) -> tuple[torch.Tensor, ...]:
        out, last = run(rnn, x, h0)
        loss = (out.sin() * torch.linspace(-1, 1, 6, dtype=torch.float64)).sum() + last.cos().sum()
        return (out, last, *torch.autograd.grad(loss, inputs))

    got = loss_and_grads(run_cpu)
    want = loss_and_grads(lambda rnn, x, h0: rnn(x, h0))
    for g, w in zip(got, want, strict=True):
        assert rel_err(g.detach().numpy(), w.detach().numpy()) <= 1e-12
    with torch.autocast("cpu", dtype=torch.bfloat16):  # products in bf16, the recurrence in fp32
        out, _ = run_cpu(rnn.float(), x.detach().float(), h0.detach().float())
    assert out.dtype == torch.float32
    assert 0 < rel_err(out.detach().numpy(), want[0].detach().numpy()) < 0.02


@pytest.mark.parametrize("kind", ["rnn_tanh", "lstm", "gru"])
def test_models_run_and_tie(kind: str) -> None:
    model = RNNLM(kind, ModelConfig(8, 8, 2, dropout=0.2, tied=True), V)
    out, _ = model(torch.zeros(5, 3, dtype=torch.long), model.init_hidden(3))
    assert out.shape == (5, 3, 8)
    assert model.decoder(out).shape == (5, 3, V)
    assert model.decoder.weight is model.encoder.weight
    with pytest.raises(SeqlmError, match="emsize == nhid"):
        ModelConfig(8, 16, tied=True)


def test_precision_auto_is_bf16_where_the_hardware_has_it() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert use_bf16("auto", cuda) and use_bf16("auto", cpu) == cpu_has_bf16()
    assert use_bf16("bf16", cpu) and not use_bf16("fp32", cuda)


def test_training_learns_and_reports(tmp_path: Path) -> None:
    seen: list[dict[str, float]] = []
    result = train(
        pattern_stream(300), pattern_stream(40, seed=1), V, KIND,
        replace(TINY, epochs=4, patience=0, optimizer="adamw", lr=0.01), tmp_path,
        vocab_digest="k", callbacks=Callbacks(on_epoch=seen.append),
    )  # fmt: skip
    assert [m["epoch"] for m in seen] == [1, 2, 3, 4]
    assert set(seen[0]) >= {"epoch", "train_ppl", "valid_ppl", "tokens_per_second", "lr"}
    # Only the line lengths are random: a model that learned the pattern is far below uniform (12).
    assert result.valid_ppl < 2.5
    assert result.valid_ppl == pytest.approx(min(m["valid_ppl"] for m in seen))
    assert replace(result, best_valid_loss=1e4).valid_ppl == math.exp(700)  # capped, no overflow
    assert (tmp_path / "last.pt").exists() and result.checkpoint == tmp_path / "best.pt"
    model, state = load_model(tmp_path / "best.pt")
    assert state["vocab_digest"] == "k" and state["epoch"] == 4
    for a, b in zip(model.state_dict().values(), result.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    png = plot_learning_curve(result.history, tmp_path / "curve.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resume_continues_exactly(tmp_path: Path) -> None:
    train_s, valid_s = pattern_stream(200), pattern_stream(30, seed=1)
    config = replace(TINY, dropout=0.3, epochs=3, patience=0)
    whole = train(train_s, valid_s, V, KIND, config, tmp_path / "a", vocab_digest="k")
    train(train_s, valid_s, V, KIND, replace(config, epochs=1), tmp_path / "b", vocab_digest="k")
    resumed = train(
        train_s, valid_s, V, KIND, config, tmp_path / "b", vocab_digest="k", resume=True
    )
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    exact = ("epoch", "train_ppl", "valid_ppl", "lr")  # all but the timings
    assert [[h[k] for k in exact] for h in resumed.history] == [
        [h[k] for k in exact] for h in whole.history
    ]
    with pytest.raises(SeqlmError, match="vocabulary"):
        train(train_s, valid_s, V, KIND, config, tmp_path / "b", vocab_digest="other", resume=True)
    with pytest.raises(SeqlmError, match="different lr"):
        train(
            train_s,
            valid_s,
            V,
            KIND,
            replace(config, lr=0.5),
            tmp_path / "b",
            vocab_digest="k",
            resume=True,
        )


def test_a_spent_time_budget_still_leaves_a_validated_model(tmp_path: Path) -> None:
    """A budget spent before the first window (a slow machine, a tiny budget): one window is
    trained and validated, so there is a best.pt to evaluate, and the stop says why."""
    stream = pattern_stream(200)
    result = train(
        stream, stream, V, KIND, replace(TINY, max_minutes=1e-9), tmp_path, vocab_digest="k"
    )
    assert result.stopped == "time" and result.epochs == 1 and result.steps == 1
    assert result.checkpoint == tmp_path / "best.pt" and result.checkpoint.is_file()


def test_bad_checkpoints(tmp_path: Path) -> None:
    train(pattern_stream(50), pattern_stream(10), V, KIND, replace(TINY, epochs=1), tmp_path)
    good = (tmp_path / "last.pt").read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good[: len(good) // 2])
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    text = tmp_path / "text.pt"
    text.write_text("not a checkpoint")
    for path, problem in [(truncated, "truncated"), (foreign, "not a seqlm"), (text, "truncated")]:
        with pytest.raises(SeqlmError, match=re.escape(str(path)) + ".*" + problem):
            load_model(path)


def test_bad_input(tmp_path: Path) -> None:
    stream = pattern_stream(10)
    with pytest.raises(SeqlmError, match=r"bptt 500 × batch size 4"):
        train(stream, stream, V, KIND, replace(TINY, bptt=500))
    with pytest.raises(SeqlmError, match="batch size 5000"):
        train(stream, stream, V, KIND, replace(TINY, batch_size=5000))
    with pytest.raises(SeqlmError, match="outside the vocabulary"):
        train(stream, stream, 5, KIND, TINY)
    if not torch.cuda.is_available():
        with pytest.raises(SeqlmError, match="no CUDA GPU"):
            resolve_device("cuda")


def test_divergence_stops_and_keeps_last_good_checkpoint(tmp_path: Path) -> None:
    stream = pattern_stream(100)
    train(stream, stream, V, KIND, replace(TINY, epochs=1), tmp_path, vocab_digest="k")
    last = tmp_path / "last.pt"
    good = last.read_bytes()
    # Not finite, or finite but far beyond the uniform guess's loss (ln 12): both diverged (at
    # lr 1e38 the loss overflows to nan on some CPUs and stays finite on others). The older run's
    # checkpoint is not this run's to point to.
    for lr, loss in [(1e38, r"(nan|inf|\d\.\d+e\+\d+)"), (1e5, r"\d\.\d+e\+0\d")]:
        with pytest.raises(SeqlmError) as caught:
            train(
                stream, stream, V, KIND, replace(TINY, lr=lr, clip=1e30), tmp_path, vocab_digest="k"
            )
        assert re.fullmatch(
            rf"training diverged at epoch 1, step \d+ \(lr {re.escape(f'{lr:g}')}\): "
            rf"loss {loss}; no checkpoint was written\. Lower .*",
            str(caught.value),
        ), str(caught.value)
    assert last.read_bytes() == good
    # Resumed at a diverging rate, it names the checkpoint it started from, and keeps it.
    state = torch.load(last, weights_only=True)
    state["lr"] = state["config"]["lr"] = 1e5
    state["config"]["clip"] = 1e30
    save_checkpoint(state, last)
    good = last.read_bytes()
    config = replace(TINY, lr=1e5, clip=1e30, epochs=2)
    with pytest.raises(SeqlmError) as caught:
        train(stream, stream, V, KIND, config, tmp_path, vocab_digest="k", resume=True)
    assert re.match(
        rf"training diverged at epoch 2, step \d+ \(lr 100000\): loss .*; "
        rf"last good checkpoint: {re.escape(str(last))}\.",
        str(caught.value),
    ), str(caught.value)
    assert last.read_bytes() == good


def test_score_stream_carried_reset_and_columns() -> None:
    torch.manual_seed(0)
    model = RNNLM("gru", ModelConfig(8, 8, 2, dropout=0.0), V).eval()
    stream = pattern_stream(9)

    def direct(segment: np.ndarray) -> np.ndarray:
        ids = torch.as_tensor(np.append(EOS_ID, segment[:-1]), dtype=torch.long)[:, None]
        h, _ = model(ids, model.init_hidden(1))
        logp = F.log_softmax(model.decoder(h[:, 0]), -1)
        return logp[torch.arange(len(segment)), torch.as_tensor(segment, dtype=torch.long)].detach()

    carried = score_stream(model, stream, window=5)
    assert carried.dtype == np.float64 and carried.shape == stream.shape
    np.testing.assert_allclose(carried, direct(stream).numpy(), rtol=1e-5)
    lines = np.split(stream, np.flatnonzero(stream == EOS_ID)[:-1] + 1)
    reset = score_stream(model, stream, line_reset=True, batch=4)
    np.testing.assert_allclose(reset, np.concatenate([direct(x) for x in lines]), rtol=1e-5)
    assert not np.allclose(reset, carried)
    # Two columns: the stream cut at a line end, each half scored from a fresh state.
    halves = score_stream(model, stream, columns=2)
    cut = int(np.flatnonzero(np.isclose(halves, reset) & ~np.isclose(halves, carried))[0])
    np.testing.assert_allclose(halves[:cut], carried[:cut], rtol=1e-5)
    np.testing.assert_allclose(halves[cut:], direct(stream[cut:]).numpy(), rtol=1e-5)
    assert stream[cut - 1] == EOS_ID
    p = perplexity(RNNScorer(model).score_stream(stream), stream)
    assert p.targets == len(stream) and math.isfinite(p.ppl)


def test_sample_is_seeded_and_greedy_with_top1() -> None:
    torch.manual_seed(0)
    model = RNNLM("lstm", ModelConfig(8, 8, 1, dropout=0.0), V)
    a = sample(model, 40, temperature=1.5, seed=7)
    assert np.array_equal(a, sample(model, 40, temperature=1.5, seed=7))
    assert not np.array_equal(a, sample(model, 40, temperature=1.5, seed=8))
    assert BOS_ID not in a
    greedy = sample(model, 10, top_k=1, seed=1)
    assert np.array_equal(greedy, sample(model, 10, top_k=1, seed=2))
    with torch.no_grad():
        x, hidden = torch.tensor([[EOS_ID]]), model.init_hidden(1)
        for token in greedy:
            h, hidden = model(x, hidden)
            logits = model.decoder(h[0, 0])
            logits[BOS_ID] = -math.inf
            assert int(logits.argmax()) == token
            x = torch.tensor([[token]])


WORDS = ["the", "cat", "sat", "on", "a", "mat", ".", "dog", "ran", "to", "park"]
SMALL = ["--model", "lstm", "--emsize", "16", "--nhid", "16", "--bptt", "10", "--batch-size", "4",
         "--epochs", "1"]  # fmt: skip


def toy_corpus(data: Path, words: list[str] = WORDS) -> Path:
    """A folder of toy.{train,valid,test}.txt: random lines of ``words``."""
    data.mkdir()
    rng = np.random.default_rng(0)
    for split, n in [("train", 300), ("valid", 30), ("test", 30)]:
        lines = [" ".join(rng.choice(words, rng.integers(3, 9))) for _ in range(n)]
        (data / f"toy.{split}.txt").write_text("\n".join(lines) + "\n")
    return data


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The one line a refused command printed (no traceback, nothing else)."""
    err = capsys.readouterr().err
    assert err.startswith("seqlm: error: ") and err.count("\n") == 1, err
    return err.removeprefix("seqlm: error: ").strip()


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_cli_train_score_sample(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = toy_corpus(tmp_path / "corpus")
    out = tmp_path / "out"
    assert main(["rnn", "train", str(data), *SMALL, "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    keys = {"valid_ppl", "test_ppl", "test_ppl_no_unk", "tokens_per_second", "epochs", "device"}
    assert keys <= set(summary) and summary["epochs"] == 1 and summary["device"] == "cpu"
    assert main(["rnn", "train", str(data), "--epochs", "2", "--out", str(out), "--resume"]) == 0
    capsys.readouterr()
    assert main(["rnn", "score", str(out / "best.pt"), str(data / "toy.test.txt"), "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert set(scored) == {"perplexity", "perplexity_no_unk", "oov", "targets"}
    assert scored["targets"] == sum(
        len(x.split()) + 1 for x in (data / "toy.test.txt").read_text().splitlines()
    )
    assert main(["rnn", "sample", str(out / "best.pt"), "--words", "12", "--seed", "1"]) == 0
    text = capsys.readouterr().out
    assert set(text.split()) <= set(WORDS) | {"<unk>"}
    assert main(["rnn", "score", str(data / "toy.test.txt"), str(data / "toy.test.txt")]) == 1
    assert "not a readable checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("tied", [False, True])
def test_fused_head_equals_autograd_chain(tied: bool) -> None:
    torch.manual_seed(0)
    model = RNNLM("gru", ModelConfig(6, 6, 1, tied=tied, dropout=0.0), V).double()
    h = torch.randn(2, 15, 6, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, V, (30,))
    head = SoftmaxHead()
    for n in (30, 20):  # a shorter last window reuses the buffers
        loss = head(h.reshape(-1, 6)[:n], model.decoder, targets[:n], torch.float64)
        ref = F.cross_entropy(model.decoder(h.reshape(-1, 6)[:n]), targets[:n])
        assert loss.item() == pytest.approx(ref.item(), rel=1e-12)
        got = torch.autograd.grad(loss, [h, *model.decoder.parameters()])
        want = torch.autograd.grad(ref, [h, *model.decoder.parameters()])
        for g, w in zip(got, want, strict=True):
            assert rel_err(g.numpy(), w.numpy()) <= 1e-10


def test_train_flags_are_the_config_fields() -> None:
    """``seqlm rnn train`` has one flag per training setting, described by the field."""
    from flows.cli import build_parser

    parser = build_parser()
    rnn = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    train_parser = rnn.choices["rnn"]._subparsers._group_actions[0].choices["train"]
    flags = {a.dest: a for a in train_parser._actions if a.option_strings}
    for setting in fields(TrainConfig):
        flag = flags[setting.name]
        assert flag.option_strings == ["--" + setting.name.replace("_", "-")]
        assert flag.help.startswith(setting.metadata["help"]) and flag.default is None
        assert flag.choices == setting.metadata.get("choices")
    assert flags["model"].choices == MODELS


def test_the_training_code_stays_small() -> None:
    """Every function of the recurrent package fits on a screen, and none is exempt from the
    formatter."""
    for path in Path(rnn_package.__file__).parent.glob("*.py"):
        text = path.read_text()
        assert "fmt: skip" not in text, path
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno - node.lineno < 60, f"{path}: {node.name}"


def test_cli_refuses_bad_input_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = toy_corpus(tmp_path / "corpus")
    out = tmp_path / "out"
    train_args = ["rnn", "train", str(data), *SMALL, "--out"]
    # Settings, named as the command line spells them; nothing is created.
    for flags, message in [
        (["--lr", "-1"], "--lr must be positive, not -1"),
        (["--lr", "nan"], "--lr must be a finite number, not nan"),
        (["--batch-size", "0"], "--batch-size must be at least 1, not 0"),
        (["--dropout", "1.5"], "--dropout must be in [0, 1), not 1.5"),
        (["--max-minutes", "-2"], "--max-minutes must not be negative (0: no time budget), not -2"),
        (["--tied", "--emsize", "8"], "--tied needs --emsize == --nhid, not 8 and 16"),
    ]:
        assert main([*train_args, str(out), *flags]) == 1
        assert error_line(capsys) == message
        assert not out.exists()
    # --out naming a file: untouched.
    file = tmp_path / "file"
    file.write_text("keep")
    assert main([*train_args, str(file)]) == 1
    assert error_line(capsys).startswith(f"{file}: not a folder")
    assert file.read_text() == "keep"
    # A corpus that fails leaves no output folder behind.
    assert main(["rnn", "train", str(tmp_path / "missing"), "--out", str(out)]) == 1
    assert str(tmp_path / "missing") in error_line(capsys) and not out.exists()

    assert main([*train_args, str(out)]) == 0
    capsys.readouterr()
    before = snapshot(out)
    # Resuming on data with another vocabulary names both; the folder stays as it was.
    other = toy_corpus(tmp_path / "other", ["un", "deux", "trois", "quatre"])
    assert main(["rnn", "train", str(other), "--out", str(out), "--resume"]) == 1
    line = error_line(capsys)
    assert (
        line.startswith(f"{out / 'last.pt'}: trained on another vocabulary") and str(other) in line
    )
    assert snapshot(out) == before
    assert main(["rnn", "train", str(data), "--out", str(tmp_path / "new"), "--resume"]) == 1
    assert error_line(capsys) == f"{tmp_path / 'new' / 'last.pt'}: no checkpoint to resume from"

    # sample / score: a training folder stands for its best.pt; anything else is one line.
    text = data / "toy.test.txt"
    assert main(["rnn", "score", str(out), str(text), "--json"]) == 0
    assert main(["rnn", "sample", str(out), "--words", "5"]) == 0
    capsys.readouterr()
    truncated = tmp_path / "cut.pt"
    truncated.write_bytes((out / "best.pt").read_bytes()[:1000])
    for path, problem in [
        (data, "a folder without best.pt"),
        (tmp_path / "missing.pt", "no such checkpoint file"),
        (text, "not a readable checkpoint"),
        (truncated, "not a readable checkpoint"),
    ]:
        assert main(["rnn", "score", str(path), str(text)]) == 1
        assert error_line(capsys).startswith(f"{path}: {problem}")
        assert main(["rnn", "sample", str(path)]) == 1
        assert error_line(capsys).startswith(f"{path}: {problem}")
