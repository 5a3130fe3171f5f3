"""Every Python snippet in README.md runs, in order, in one namespace (as a reader would paste them), against the
shipped demo model and small fixture files in a temporary folder.

Convention: a ```python block runs unless the line just before it is ``<!-- readme-test: skip (REASON) -->``; use
that only for snippets that need a GPU or weights that are not shipped (the reason is printed with the skip)."""
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SKIP = re.compile(r"<!--\s*readme-test:\s*skip\s*\((.+?)\)\s*-->\s*$")


def readme_snippets() -> list[tuple[int, str, str | None]]:
    """(line number, code, skip reason or None) for every ```python block of the README."""
    lines = (REPO / "README.md").read_text().splitlines()
    out, i = [], 0
    while i < len(lines):
        if lines[i].strip() == "```python":
            start = i + 1
            j = start
            while lines[j].strip() != "```":
                j += 1
            skip = SKIP.search(lines[i - 1]) if i else None
            out.append((start + 1, "\n".join(lines[start:j]), skip.group(1) if skip else None))
            i = j
        i += 1
    return out


def _fixtures(folder: Path) -> None:
    """person.png / pose.png: a held-out demo pair; person.json and poses/: keypoints in the demo model's frame;
    person.jpg / dancer.jpg: a real photograph of a person (scikit-image's astronaut)."""
    from skimage import data

    from rpfm.demo import _STANDING, _WALKING, load_release
    from rpfm.pose.formats import write_keypoints_json, write_openpose_json
    from rpfm.pose.keypoints import Keypoints

    _, pairs = load_release()
    _, src, pose, _ = pairs[0]
    src.save(folder / "person.png")
    pose.save(folder / "pose.png")
    n = src.size[0]                                                            # the demo model's frame
    write_keypoints_json(folder / "person.json", Keypoints(_STANDING * n, (n, n)))
    (folder / "poses").mkdir()
    for k, t in enumerate(np.linspace(0, 1, 4)):
        write_openpose_json(folder / "poses" / f"{k:03d}_keypoints.json",
                            Keypoints(((1 - t) * _STANDING + t * _WALKING) * n, (n, n)))
    photo = Image.fromarray(data.astronaut())
    photo.save(folder / "person.jpg")
    photo.save(folder / "dancer.jpg")


def test_readme_has_snippets_and_the_quick_start_is_diffusers_style():
    snippets = readme_snippets()
    assert len(snippets) >= 4
    quick = snippets[0][1]
    assert 'RPFMPipeline.from_pretrained("demo")' in quick and "num_inference_steps=" in quick


def test_every_readme_snippet_runs(tmp_path, monkeypatch, capsys):
    _fixtures(tmp_path)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "readme"}
    skipped = []
    for line, code, skip in readme_snippets():
        if skip:
            skipped.append(f"README.md:{line}: {skip}")
            continue
        try:
            exec(compile(code, f"README.md:{line}", "exec"), namespace)
        except Exception as e:  # the failing snippet's line, then the error
            pytest.fail(f"README.md snippet at line {line} failed: {type(e).__name__}: {e}")
    assert (tmp_path / "out.png").is_file() and (tmp_path / "out.mp4").is_file()
    if skipped:
        print("skipped README snippets:", *skipped, sep="\n  ")
