"""Fill the papers folder with the sample corpus: real PDFs that ship inside packages.

Sources (see README for licences): two arXiv papers inside the inspect-evals wheel, the GROBID
client's test paper from its sdist, and the vignettes of seven Debian r-cran-* packages
(mostly Journal of Statistical Software articles). Nothing here is committed; a second run
finds everything in place and returns at once.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

INSPECT_EVALS_PDFS = {
    "agentdojo/data/suites/workspace_plus/terminal/emma-computer/home-dir/Downloads/1706.03762v7.pdf":
        "attention_is_all_you_need_1706.03762.pdf",
    "gdm_self_proliferation/data/sp12/strategy_llm.pdf": "strategyllm.pdf",
}
GROBID_SDIST = "grobid-client-python==0.2.1"
GROBID_PDF = "resources/test_pdf/0046d83a-edd6-4631-b57c-755cdcce8b7f.pdf"
R_PACKAGES = [
    "r-cran-lme4", "r-cran-sandwich", "r-cran-zoo", "r-cran-strucchange",
    "r-cran-quantreg", "r-cran-glmnet", "r-cran-survival",
]
R_DONE_MARKER = ".r-vignettes-fetched"


def copy_inspect_evals(dest: Path) -> None:
    spec = importlib.util.find_spec("inspect_evals")  # locate without importing its deps
    if spec is None or not spec.submodule_search_locations:
        sys.exit("inspect-evals is not installed: run `make setup` first.")
    root = Path(list(spec.submodule_search_locations)[0])
    for rel, name in INSPECT_EVALS_PDFS.items():
        if not (dest / name).exists():
            shutil.copyfile(root / rel, dest / name)


def fetch_grobid(dest: Path) -> None:
    target = dest / "grobid_test_paper.pdf"
    if target.exists():
        return
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
             "-d", tmp, GROBID_SDIST],
            check=True,
        )
        sdist = next(Path(tmp).glob("*.tar.gz"))
        with tarfile.open(sdist) as tar:
            member = next(m for m in tar.getmembers() if m.name.endswith(GROBID_PDF))
            with tar.extractfile(member) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)


def fetch_r_vignettes(dest: Path) -> None:
    if (dest / R_DONE_MARKER).exists():
        return
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        print("[corpus] apt-get/dpkg-deb not found: skipping the R vignette PDFs", file=sys.stderr)
        return
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["apt-get", "update", "-qq"], check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["apt-get", "download", "-qq", *R_PACKAGES], cwd=tmp, check=True)
        for deb in sorted(Path(tmp).glob("*.deb")):
            unpacked = Path(tmp) / deb.stem
            subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True)
            package = deb.name.split("_")[0].removeprefix("r-cran-")
            for pdf in sorted(unpacked.glob("usr/lib/R/**/doc/*.pdf")):
                target = dest / f"{package}__{pdf.name}"
                if not target.exists():
                    shutil.copyfile(pdf, target)
    (dest / R_DONE_MARKER).write_text("ok\n")


def main(dest: str) -> None:
    folder = Path(dest)
    folder.mkdir(parents=True, exist_ok=True)
    copy_inspect_evals(folder)
    fetch_grobid(folder)
    fetch_r_vignettes(folder)
    print(f"[corpus] {len(list(folder.glob('*.pdf')))} PDFs in {folder}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "data/papers")
