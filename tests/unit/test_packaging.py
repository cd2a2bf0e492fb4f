"""Function source archives (issue 7 §2): deterministic, content-hashed, complete, nothing extra.

Every test builds from a temporary copy of a small tree (services/, shared/droptune,
pyproject.toml), so nothing is written into the repository.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]


def _load_packager() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "package_functions", REPO / "infra" / "package_functions.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


packager = _load_packager()

PYPROJECT = """\
[project]
name = "droptune"
version = "0.1.0"
dependencies = [
    "functions-framework>=3.8,<4",
    "google-cloud-storage>=2.18,<4",
]
"""
LOCK = "functions-framework==3.10.2\ngoogle-cloud-storage==3.17.1\ngoogle-api-core==2.44.0\n"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "infra").mkdir(parents=True)
    (root / "pyproject.toml").write_text(PYPROJECT)
    (root / "infra" / "requirements.lock").write_text(LOCK)
    library = root / "shared" / "droptune"
    (library / "datasets").mkdir(parents=True)
    (library / "__init__.py").write_text('"""droptune."""\n')
    (library / "settings.py").write_text("NAME = 'settings'\n")
    (library / "datasets" / "__init__.py").write_text("")
    (library / "datasets" / "rules.json").write_text('{"min": 10}\n')
    # Things that must never reach an archive.
    (library / "__pycache__").mkdir()
    (library / "__pycache__" / "settings.cpython-311.pyc").write_bytes(b"\x00compiled")
    (library / "tests").mkdir()
    (library / "tests" / "test_settings.py").write_text("def test(): pass\n")
    (library / "test_inline.py").write_text("def test(): pass\n")
    (library / ".DS_Store").write_bytes(b"junk")
    for service in packager.SERVICES:
        folder = root / "services" / service
        folder.mkdir(parents=True)
        (folder / "main.py").write_text(f"def handle():\n    return {service!r}\n")
    return root


def _build(root: Path, out_name: str = "out") -> dict[str, Path]:
    pins = packager.resolve_pins(root, root / "infra" / "requirements.lock", from_environment=False)
    archives = packager.build_archives(root, root / out_name, packager.requirements_text(pins))
    return {archive.service: archive.path for archive in archives}


def test_archive_holds_main_library_and_pinned_requirements(tree: Path) -> None:
    built = _build(tree)
    with zipfile.ZipFile(built["validator"]) as archive:
        names = archive.namelist()
        requirements = archive.read("requirements.txt").decode()
        main = archive.read("main.py").decode()
    assert names == sorted(names), "entries must be sorted for a reproducible archive"
    assert set(names) == {
        "main.py",
        "requirements.txt",
        "droptune/__init__.py",
        "droptune/settings.py",
        "droptune/datasets/__init__.py",
        "droptune/datasets/rules.json",
    }, f"unexpected archive contents: {names}"
    assert "'validator'" in main, "each archive must carry its own service's main.py"
    pins = [line for line in requirements.splitlines() if line and not line.startswith("#")]
    assert pins == sorted(pins)
    assert "functions-framework==3.10.2" in pins
    assert "google-cloud-storage==3.17.1" in pins
    assert all("==" in line for line in pins), f"every requirement must be pinned: {pins}"


def test_same_tree_gives_same_name_and_bytes(tree: Path) -> None:
    first = _build(tree, "first")
    # Touching files (new mtimes) must not matter: only contents do.
    for path in (tree / "shared" / "droptune").rglob("*.py"):
        path.touch()
    second = _build(tree, "second")
    for service in packager.SERVICES:
        assert first[service].name == second[service].name
        assert first[service].read_bytes() == second[service].read_bytes(), (
            f"{service} archive is not reproducible"
        )


def test_library_change_renames_every_archive(tree: Path) -> None:
    before = _build(tree, "before")
    (tree / "shared" / "droptune" / "settings.py").write_text("NAME = 'changed'\n")
    after = _build(tree, "after")
    for service in packager.SERVICES:
        assert before[service].name != after[service].name, f"{service} would not be redeployed"


def test_service_change_renames_only_that_archive(tree: Path) -> None:
    before = _build(tree, "before")
    (tree / "services" / "poller" / "main.py").write_text("def handle():\n    return 'new'\n")
    after = _build(tree, "after")
    changed = {service for service in packager.SERVICES if before[service].name != after[service].name}
    assert changed == {"poller"}


def test_pin_change_renames_the_archives(tree: Path) -> None:
    before = _build(tree, "before")
    (tree / "infra" / "requirements.lock").write_text(LOCK.replace("3.17.1", "3.17.2"))
    after = _build(tree, "after")
    assert before["launcher"].name != after["launcher"].name


def test_excluded_files_do_not_change_the_hash(tree: Path) -> None:
    before = _build(tree, "before")
    (tree / "shared" / "droptune" / "__pycache__" / "other.cpython-311.pyc").write_bytes(b"x")
    (tree / "shared" / "droptune" / "tests" / "test_more.py").write_text("x = 1\n")
    after = _build(tree, "after")
    assert before["deployer"].name == after["deployer"].name


def test_name_is_service_and_twelve_hex_digits(tree: Path) -> None:
    for service, path in _build(tree).items():
        prefix, _, digest = path.stem.rpartition("-")
        assert prefix == service
        assert len(digest) == 12 and all(c in "0123456789abcdef" for c in digest), path.name


def test_manifest_names_each_archive(tree: Path) -> None:
    built = _build(tree)
    manifest = json.loads((tree / "out" / "manifest.json").read_text())
    assert {service: entry["archive"] for service, entry in manifest["services"].items()} == {
        service: path.name for service, path in built.items()
    }
    for entry in manifest["services"].values():
        assert entry["archive"].endswith(f"-{entry['sha256'][:12]}.zip")


def test_missing_pin_is_refused(tree: Path) -> None:
    (tree / "infra" / "requirements.lock").write_text("functions-framework==3.10.2\n")
    with pytest.raises(packager.PackagingError, match="google-cloud-storage"):
        _build(tree)


def test_pin_outside_pyproject_range_is_refused(tree: Path) -> None:
    (tree / "infra" / "requirements.lock").write_text(LOCK.replace("3.10.2", "4.0.0"))
    with pytest.raises(packager.PackagingError, match=r"functions-framework==4\.0\.0"):
        _build(tree)


def test_service_without_main_is_refused(tree: Path) -> None:
    (tree / "services" / "deployer" / "main.py").unlink()
    with pytest.raises(packager.PackagingError, match=r"main\.py"):
        _build(tree)


def test_handwritten_requirements_file_is_refused(tree: Path) -> None:
    (tree / "services" / "validator" / "requirements.txt").write_text("flask\n")
    with pytest.raises(packager.PackagingError, match="generated from pyproject"):
        _build(tree)


@pytest.mark.parametrize(
    ("version", "requirement", "expected"),
    [
        ("3.10.2", "functions-framework>=3.8,<4", True),
        ("4.0", "functions-framework>=3.8,<4", False),
        ("3.7.9", "functions-framework>=3.8,<4", False),
        ("2.7.0", "google-cloud-aiplatform>=1.70,<3", True),
        ("1.2.3", "x==1.2.*", True),
        ("1.3.0", "x==1.2.*", False),
        ("1.4.2", "x~=1.4", True),
        ("2.0", "x~=1.4", False),
    ],
)
def test_version_bounds(version: str, requirement: str, expected: bool) -> None:
    assert packager.satisfies(version, requirement) is expected


def test_committed_lock_satisfies_pyproject() -> None:
    # The lock Cloud Build packages from must agree with the ranges pyproject.toml declares.
    requirements = packager.runtime_requirements(REPO / "pyproject.toml")
    pins = packager.read_lock(REPO / "infra" / "requirements.lock")
    packager.check_pins(pins, requirements, "infra/requirements.lock")


def test_cli_builds_into_the_given_folder(tree: Path) -> None:
    out = tree / "cli-out"
    assert packager.main(["--repo", str(tree), "--out", str(out)]) == 0
    assert sorted(p.name.rpartition("-")[0] for p in out.glob("*.zip")) == sorted(packager.SERVICES)
    assert (out / "manifest.json").is_file()
