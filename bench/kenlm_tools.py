"""KenLM's command-line tools for the n-gram benchmark: from ``--kenlm-bin DIR``, else from PATH,
else built once from the ``kenlm`` source distribution on the package registry (it holds the
whole C++ tree) into the benchmark's scratch folder, where later runs find the build."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import TextIO

from seqlm.errors import SeqlmError
from seqlm.files import atomic_dir

TOOLS = ("lmplz", "query", "build_binary", "count_ngrams")
PACKAGES = (
    "g++ cmake libboost-program-options-dev libboost-system-dev libboost-thread-dev "
    "libboost-test-dev zlib1g-dev libbz2-dev liblzma-dev"
)


def kenlm_tools(bin_dir: Path | None, scratch: Path) -> dict[str, Path]:
    """The path of each of ``TOOLS``."""
    if bin_dir is not None:
        missing = [tool for tool in TOOLS if not os.access(bin_dir / tool, os.X_OK)]
        if missing:
            raise SeqlmError(f"--kenlm-bin {bin_dir}: no executable {', '.join(missing)} there")
        return {tool: bin_dir / tool for tool in TOOLS}
    on_path = {tool: shutil.which(tool) for tool in TOOLS}
    if all(on_path.values()):
        return {tool: Path(str(path)) for tool, path in on_path.items()}
    built = scratch / "kenlm" / "build"
    if not all((built / "bin" / tool).exists() for tool in TOOLS):
        build(scratch / "kenlm", built)
    return {tool: built / "bin" / tool for tool in TOOLS}


def build(folder: Path, built: Path) -> None:
    """Download, unpack and compile KenLM's source; ``built`` appears only once make succeeds."""
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "build.log"
    print(f"building KenLM's tools in {built} (a few minutes; log {log})", file=sys.stderr)
    with log.open("w") as out:
        if not list(folder.glob("kenlm-*.tar.gz")):
            pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", "kenlm"]
            step(
                [*pip, "kenlm", "-d", str(folder)],
                out,
                f"pip could not download kenlm's source (see {log})",
            )
        archive = max(folder.glob("kenlm-*.tar.gz"))
        source = folder / archive.name.removesuffix(".tar.gz")
        if not source.exists():
            with tarfile.open(archive) as tar:
                tar.extractall(folder, filter="data")
        with atomic_dir(built) as tmp:
            cmake = ["cmake", "-S", str(source), "-B", str(tmp), "-DCMAKE_BUILD_TYPE=Release"]
            step(cmake, out, f"cmake could not configure KenLM (see {log}): install {PACKAGES}")
            make = ["make", "-C", str(tmp), f"-j{os.cpu_count() or 1}", *TOOLS]
            step(make, out, f"make could not build KenLM's tools (see {log})")


def step(argv: list[str], log: TextIO, failure: str) -> None:
    try:
        done = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, check=False)
    except FileNotFoundError:
        raise SeqlmError(f"{argv[0]} not found: {failure}") from None
    if done.returncode != 0:
        raise SeqlmError(failure)
