"""dstutor_book.dependencies: a chapter's hash covers the code it can run and the results it reads, and only those."""
import shutil
import textwrap

import pytest

from dstutor import chapters
from dstutor_book import dependencies, execution


def fake_package(tmp_path, monkeypatch):
    """tmp_path/dstutor with a.py → .b (relative) → c (absolute, inside a function); d.py unused."""
    root = tmp_path / "dstutor"
    (root / "sub").mkdir(parents=True)
    files = {"__init__.py": "", "sub/__init__.py": "", "sub/a.py": "from .b import thing\n",
             "sub/b.py": "def thing():\n    from dstutor import c\n    return c\n", "c.py": "X = 1\n",
             "d.py": "Y = 2\n", "cli.py": "Z = 3\n"}
    for name, text in files.items():
        (root / name).write_text(text)
    monkeypatch.setattr(dependencies, "PACKAGE_DIR", root)
    return root


def names(paths, root):
    return sorted(p.relative_to(root).as_posix() for p in paths)


def test_imports_are_followed_through_relative_and_function_level_imports(tmp_path, monkeypatch):
    root = fake_package(tmp_path, monkeypatch)
    found = dependencies.package_files("from dstutor.sub.a import thing\nimport numpy\n")
    assert names(found, root) == ["__init__.py", "c.py", "sub/__init__.py", "sub/a.py", "sub/b.py"]


def test_module_names_in_strings_count_as_dependencies(tmp_path, monkeypatch):
    root = fake_package(tmp_path, monkeypatch)
    found = dependencies.package_files('args = ["-m", "dstutor.cli", "pretrain"]\n')
    assert names(found, root) == ["__init__.py", "cli.py"]


def test_from_package_import_submodule(tmp_path, monkeypatch):
    root = fake_package(tmp_path, monkeypatch)
    assert names(dependencies.package_files("from dstutor import d\n"), root) == ["__init__.py", "d.py"]


CHAPTER = textwrap.dedent('''\
    ---
    kernelspec: {display_name: Python 3, language: python, name: python3}
    ---
    # 99 · A test chapter

    ```{code-cell} ipython3
    %matplotlib inline
    from dstutor.train.seeds import seed_everything
    ```
    ''')


def test_chapter_hash_follows_its_imports_only(tmp_path, monkeypatch):
    path = tmp_path / "99_test.md"
    path.write_text(CHAPTER)
    deps = names(execution.chapter_dependencies(path), chapters.REPO_ROOT / "dstutor")
    assert "train/seeds.py" in deps and "train/__init__.py" in deps
    assert not any(name.startswith("finetune/") for name in deps)
    path.write_text(CHAPTER.replace("seed_everything", "seed_everything\ndef broken(:"))
    assert len(execution.chapter_dependencies(path)) == len(list((chapters.REPO_ROOT / "dstutor").rglob("*.py")))


def test_comments_and_docstrings_are_not_code(tmp_path, monkeypatch):
    root = fake_package(tmp_path, monkeypatch)
    source = (root / "c.py").read_text()
    edited = '"""Module docstring naming dstutor.d."""\n# see dstutor.cli\nX = 1  # one\n'
    assert dependencies.code_fingerprint(source) == dependencies.code_fingerprint(edited)
    assert dependencies.code_fingerprint(source) != dependencies.code_fingerprint("X = 2\n")
    assert names(dependencies.package_files("from dstutor import c\n" + "# dstutor.cli\n"), root) == [
        "__init__.py", "c.py"]
    assert dependencies.package_files('"""Run `dstutor.cli`."""\n') == []


def test_results_read_are_the_literal_load_results_names():
    code = 'from dstutor.bench import load_results\nx = load_results("model_speed")\nbench.load_results("grpo")\n'
    assert dependencies.results_read(code) == {"model_speed", "grpo"}


@pytest.fixture(scope="module")
def course_copy(tmp_path_factory):
    """A copy of the course's chapters, package, results and pins, with every chapter's full-mode hash."""
    root = tmp_path_factory.mktemp("course")
    for name in ("dstutor", "notebooks", "bench/results"):
        shutil.copytree(chapters.REPO_ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(chapters.REPO_ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


def stale_after(root, edit):
    paths = chapters.chapter_paths(root / "notebooks")
    before = {p.stem: execution.content_hash(p, smoke=False, root=root) for p in paths}
    undo = edit(root)
    try:
        return {p.stem for p in paths if execution.content_hash(p, smoke=False, root=root) != before[p.stem]}
    finally:
        undo()


def edit_file(relative, change):
    def edit(root):
        path = root / relative
        original = path.read_text()
        path.write_text(change(original))
        return lambda: path.write_text(original)
    return edit


def test_a_comment_edit_in_the_trainer_leaves_every_chapter_current(course_copy):
    def comment(text):
        text = text.replace('"""', '"""Edited docstring. ', 1)
        return text.replace("\n\n", "\n\n# a new comment naming dstutor.serve.cli\n", 3)
    assert stale_after(course_copy, edit_file("dstutor/train/trainer.py", comment)) == set()


def test_new_benchmark_results_make_exactly_the_chapters_that_show_them_stale(course_copy):
    change = edit_file("bench/results/model_speed.json", lambda text: text.replace('"when"', '"when_"', 1))
    assert stale_after(course_copy, change) == {"04_deepseekmoe_and_mtp"}


def test_a_code_change_in_attention_makes_the_chapters_that_import_it_stale(course_copy):
    importing = {p.stem for p in chapters.chapter_paths(course_copy / "notebooks")
                 if course_copy / "dstutor/models/attention.py" in execution.chapter_dependencies(p, course_copy / "dstutor")}
    assert {"03_attention_and_mla", "05_pretraining"} <= importing
    assert "00_setup_and_tour" not in importing
    change = edit_file("dstutor/models/attention.py", lambda text: text + "\nEXTRA_CONSTANT = 1\n")
    assert stale_after(course_copy, change) == importing


def test_a_new_pin_makes_every_chapter_stale(course_copy):
    change = edit_file("pyproject.toml", lambda text: text.replace('"tqdm==4.70.1"', '"tqdm==4.70.2"'))
    assert stale_after(course_copy, change) == {p.stem for p in chapters.chapter_paths(course_copy / "notebooks")}
