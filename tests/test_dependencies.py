"""dstutor.dependencies: a chapter's hash covers the package files it imports, and only those."""
import textwrap

from dstutor import chapters, dependencies, execution


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
